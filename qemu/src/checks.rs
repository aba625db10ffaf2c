//! The functional checks. Every store operation goes through the blocking facade
//! ([`Blocking`]) and, where a figure is wanted, through [`Meter::run`]; every result is
//! compared exactly (bytes, counts, order, error variants). A mismatch panics.

use cortex_m_semihosting::hprintln;
use mqtt_persist::flash::{SimFlashError, block_on};
use mqtt_persist::mqtt::outbox::{Outbox, OutboxConfig, Receipt, Transmit};
use mqtt_persist::mqtt::packet::{Publish, QoS};
use mqtt_persist::{Blocking, Config, Error, Key, KeyCursor, Store};

use crate::{Db, MAX_VALUE, Meter, Ob, Op, PAGES, Sim, St, W, reset};

/// Keys the workloads use (`c-0` .. `c-5`).
const KEYS: usize = 6;
/// The churn's key that is never rewritten.
const COLD: u32 = 100;

/// The value of `key` written in `round`: its length and bytes depend on both, so a stale or
/// misplaced value never compares equal.
fn value(key: u32, round: u32, buf: &mut [u8; MAX_VALUE]) -> usize {
    let len = 1 + ((key * 37 + round * 11) as usize % MAX_VALUE);
    for (j, b) in buf[..len].iter_mut().enumerate() {
        *b = (key as usize * 31 + round as usize * 7 + j) as u8 ^ 0x5A;
    }
    len
}

#[inline(never)]
fn mount<'f>(m: &mut Meter, flash: &'f mut Sim) -> Db<'f> {
    let store = m
        .run(Op::Mount, || block_on(Store::mount(flash, Config::new(MAX_VALUE))))
        .map_err(|(_, e)| e)
        .expect("mount");
    let r = store.mount_report();
    assert_eq!((r.damaged_pages, r.damaged_records), (0, 0), "{r:?}");
    let mut db = Blocking(store);
    db.open("qemu", "tcp://broker").expect("open");
    db
}

/// Mount without measuring (the power-cut sweep mounts hundreds of times).
#[inline(never)]
fn remount(flash: &mut Sim) -> Db<'_> {
    let store = block_on(Store::mount(flash, Config::new(MAX_VALUE)))
        .map_err(|(_, e)| e)
        .expect("mount");
    let mut db = Blocking(store);
    db.open("qemu", "tcp://broker").expect("open");
    db
}

#[inline(never)]
fn put(m: &mut Meter, db: &mut Db, key: u32, round: u32) {
    let mut v = [0u8; MAX_VALUE];
    let len = value(key, round, &mut v);
    // Two parts: the store writes their concatenation.
    let (a, b) = v[..len].split_at(len / 3);
    m.run(Op::Put, || db.put(Key::command(key), &[a, b])).expect("put");
}

/// Asserts `key` holds the value of `round`.
#[inline(never)]
fn expect_value(m: &mut Meter, db: &mut Db, key: u32, round: u32) {
    let mut want = [0u8; MAX_VALUE];
    let len = value(key, round, &mut want);
    let mut buf = [0u8; MAX_VALUE];
    let got = m.run(Op::Get, || db.get(Key::command(key), &mut buf).map(|v| v.len()));
    assert_eq!(got, Ok(len), "length of c-{key}");
    assert_eq!(buf[..len], want[..len], "bytes of c-{key}");
}

/// Every key of the namespace, in the store's order, through batches of 4 (so the cursor is
/// used across calls). Returns how many.
#[inline(never)]
fn list(m: &mut Meter, db: &mut Db, out: &mut [Key; 16]) -> usize {
    let mut cursor = KeyCursor::default();
    let mut n = 0;
    loop {
        let mut batch = [Key::sent(0); 4];
        let got = m.run(Op::Keys, || db.keys(&mut cursor, &mut batch)).expect("keys");
        if got == 0 {
            return n;
        }
        assert!(got <= batch.len() && n + got <= out.len(), "keys returned {got}");
        out[n..n + got].copy_from_slice(&batch[..got]);
        n += got;
    }
}

#[inline(never)]
fn expect_keys(m: &mut Meter, db: &mut Db, want: &[u32]) {
    let mut out = [Key::sent(0); 16];
    let n = list(m, db, &mut out);
    assert_eq!(n, want.len(), "key count");
    for (k, &id) in out[..n].iter().zip(want) {
        assert_eq!(*k, Key::command(id), "key order");
    }
}

/// Mount, put/get/remove/remove_deferred/flush/keys/clear/contains and their errors, remount.
#[inline(never)]
pub fn basic(m: &mut Meter, flash: &mut Sim) {
    let flash = reset(flash);
    {
        // Before `open` the store refuses to write.
        let mut db = Blocking(
            block_on(St::mount(&mut *flash, Config::new(MAX_VALUE)))
                .map_err(|(_, e)| e)
                .unwrap(),
        );
        assert_eq!(db.put(Key::command(0), &[b"x"]), Err(Error::NotOpen));
    }
    let mut db = mount(m, flash);
    let usage = db.0.usage();
    // The only live value is the identity's registry entry (`open` writes it where the store
    // can afford it: 1/32 of the capacity, DESIGN.md section 21).
    let ns = db.0.namespace().expect("open");
    let mut name = [0u8; mqtt_persist::identity::MAX_ENTRY_LEN];
    let registered = block_on(db.0.identity_name(ns, &mut name))
        .expect("identity_name")
        .is_some();
    let entry = if registered {
        db.0.charge_for(12 + "qemu".len() + "tcp://broker".len())
    } else {
        0
    };
    assert_eq!((usage.live_bytes, usage.damaged_bytes), (entry, 0));
    hprintln!(
        "store: capacity {} B, value limit of this geometry {} B",
        usage.capacity_bytes,
        St::max_value_limit()
    );
    for k in 0..5 {
        put(m, &mut db, k, 0);
    }
    for k in 0..5 {
        expect_value(m, &mut db, k, 0);
        assert_eq!(m.run(Op::Contains, || db.contains(Key::command(k))), Ok(true));
    }
    assert_eq!(m.run(Op::Contains, || db.contains(Key::command(9))), Ok(false));
    let mut buf = [0u8; MAX_VALUE];
    assert_eq!(db.get(Key::command(9), &mut buf), Err(Error::NotFound));
    let mut v = [0u8; MAX_VALUE];
    let len = value(3, 0, &mut v);
    assert_eq!(
        db.get(Key::command(3), &mut buf[..len - 1]),
        Err(Error::BufferTooSmall { needed: len })
    );
    let big = [0u8; MAX_VALUE + 1];
    assert_eq!(
        db.put(Key::command(7), &[&big]),
        Err(Error::TooLarge { max: MAX_VALUE })
    );
    expect_keys(m, &mut db, &[0, 1, 2, 3, 4]);

    // A put moves its key to the end of the insertion order.
    put(m, &mut db, 1, 1);
    expect_value(m, &mut db, 1, 1);
    expect_keys(m, &mut db, &[0, 2, 3, 4, 1]);

    // Durable removal, then a second one finds nothing.
    assert_eq!(m.run(Op::Remove, || db.remove(Key::command(2))), Ok(()));
    assert_eq!(db.remove(Key::command(2)), Err(Error::NotFound));
    assert_eq!(db.get(Key::command(2), &mut buf), Err(Error::NotFound));

    // Deferred removal: gone for reads at once, written at flush.
    assert_eq!(
        m.run(Op::RemoveDeferred, || db.remove_deferred(Key::command(4))),
        Ok(())
    );
    assert_eq!(db.remove_deferred(Key::command(4)), Err(Error::NotFound));
    assert_eq!(db.0.pending_removals(), 1);
    assert_eq!(db.contains(Key::command(4)), Ok(false));
    expect_keys(m, &mut db, &[0, 3, 1]);
    assert_eq!(m.run(Op::Flush, || db.flush()), Ok(()));
    assert_eq!(db.0.pending_removals(), 0);

    // Everything survives a remount, in order.
    let flash = db.0.into_flash();
    let mut db = mount(m, flash);
    expect_keys(m, &mut db, &[0, 3, 1]);
    expect_value(m, &mut db, 0, 0);
    expect_value(m, &mut db, 3, 0);
    expect_value(m, &mut db, 1, 1);

    // Clear takes every key at once, durably.
    assert_eq!(m.run(Op::Clear, || db.clear()), Ok(()));
    expect_keys(m, &mut db, &[]);
    let flash = db.0.into_flash();
    let mut db = mount(m, flash);
    expect_keys(m, &mut db, &[]);
    // No namespace holds a key (what stays live is the identity's registry entry).
    let mut ids = [mqtt_persist::Identity::default(); 2];
    assert_eq!(block_on(db.0.identities(&mut ids)).expect("identities"), (0, false));

    // 40 deferred removals: the set holds 32, so the 33rd writes the batch first (the deep
    // path of `remove_deferred`).
    for i in 0..40 {
        assert_eq!(db.put(Key::command(200 + i), &[&[i as u8]]), Ok(()));
    }
    for i in 0..40 {
        let k = Key::command(200 + i);
        assert_eq!(m.run(Op::RemoveDeferred, || db.remove_deferred(k)), Ok(()));
        assert_eq!(
            db.0.pending_removals(),
            if i < 32 { i as usize + 1 } else { i as usize - 31 }
        );
    }
    assert_eq!(m.run(Op::Flush, || db.flush()), Ok(()));
    let flash = db.0.into_flash();
    let mut db = mount(m, flash);
    expect_keys(m, &mut db, &[]);
    hprintln!("basic: put/get/remove/remove_deferred/flush/keys/clear/contains ok");
}

/// Rewrites every key many times, with removals between, so the log wraps and compaction
/// runs many times (the deep paths of `put` and `remove`); then checks every value and the
/// order after a remount.
#[inline(never)]
pub fn churn(m: &mut Meter, flash: &mut Sim) {
    let flash = reset(flash);
    let mut db = mount(m, flash);
    // A cold key, written once: compaction must move it each time its page is reclaimed.
    put(m, &mut db, COLD, 0);
    const ROUNDS: u32 = crate::CHURN_ROUNDS;
    for round in 0..ROUNDS {
        for k in 0..KEYS as u32 {
            put(m, &mut db, k, round);
        }
        if round % 5 == 2 {
            assert_eq!(m.run(Op::Remove, || db.remove(Key::command(round % 6))), Ok(()));
        }
        if round % 5 == 4 {
            let k = Key::command((round + 1) % 6);
            assert_eq!(m.run(Op::RemoveDeferred, || db.remove_deferred(k)), Ok(()));
            assert_eq!(m.run(Op::Flush, || db.flush()), Ok(()));
        }
    }
    // A last round rewrites every key (the loop's last round removed one), in order.
    for k in 0..KEYS as u32 {
        put(m, &mut db, k, ROUNDS);
    }
    for k in 0..KEYS as u32 {
        expect_value(m, &mut db, k, ROUNDS);
    }
    let erases = db.0.flash().stats().erases;
    let moved = db.0.moved_records();
    assert!(erases >= 2 * PAGES as u64, "the log wrapped: {erases} erases");
    assert!(moved > 0, "compaction moved the cold key");
    let flash = db.0.into_flash();
    let mut db = mount(m, flash);
    expect_keys(m, &mut db, &[COLD, 0, 1, 2, 3, 4, 5]);
    for k in 0..KEYS as u32 {
        expect_value(m, &mut db, k, ROUNDS);
    }
    expect_value(m, &mut db, COLD, 0);
    hprintln!(
        "churn: {} puts, {} page erases, {} records moved by compaction, all values ok",
        (ROUNDS + 1) * KEYS as u32 + 1,
        erases,
        moved
    );
}

/// The power-cut sweep's model: per key, the round of its value and its insertion rank.
type State = [Option<(u32, u32)>; KEYS];

#[derive(Clone, Copy)]
enum Step {
    Put(u32, u32),
    Remove(u32),
    /// `remove_deferred` then `flush`: acknowledged when the flush returns.
    RemoveDeferred(u32),
    Clear,
}

/// A short scenario on top of the sweep's base (keys 0..5): overwrites, removals of both kinds,
/// a clear and puts after it. The base is filled until this compacts and moves a record.
const SCENARIO: [Step; 16] = [
    Step::Put(0, 1),
    Step::Put(4, 1),
    Step::Remove(1),
    Step::Put(2, 1),
    Step::RemoveDeferred(3),
    Step::Put(0, 2),
    Step::Put(5, 1),
    Step::Put(2, 2),
    Step::Put(4, 2),
    Step::Remove(0),
    Step::Put(1, 3),
    Step::Clear,
    Step::Put(3, 4),
    Step::Put(5, 4),
    Step::Put(3, 5),
    Step::Put(0, 5),
];

fn apply(state: &mut State, rank: &mut u32, step: Step) {
    match step {
        Step::Put(k, round) => {
            state[k as usize] = Some((round, *rank));
            *rank += 1;
        }
        Step::Remove(k) | Step::RemoveDeferred(k) => state[k as usize] = None,
        Step::Clear => *state = [None; KEYS],
    }
}

#[inline(never)]
fn run_step(db: &mut Db, step: Step) -> Result<(), Error<SimFlashError>> {
    match step {
        Step::Put(k, round) => {
            let mut v = [0u8; MAX_VALUE];
            let len = value(k, round, &mut v);
            db.put(Key::command(k), &[&v[..len]])
        }
        Step::Remove(k) => db.remove(Key::command(k)),
        Step::RemoveDeferred(k) => {
            db.remove_deferred(Key::command(k))?;
            db.flush()
        }
        Step::Clear => db.clear(),
    }
}

/// Whether the store holds exactly `state`: each value's bytes, no other key, and the keys in
/// insertion order.
#[inline(never)]
fn holds(db: &mut Db, state: &State) -> bool {
    for (k, s) in state.iter().enumerate() {
        let mut buf = [0u8; MAX_VALUE];
        let got = db.get(Key::command(k as u32), &mut buf).map(|v| v.len());
        match (s, got) {
            (None, Err(Error::NotFound)) => {}
            (Some((round, _)), Ok(len)) => {
                let mut want = [0u8; MAX_VALUE];
                let n = value(k as u32, *round, &mut want);
                if len != n || buf[..n] != want[..n] {
                    return false;
                }
            }
            (_, Err(e)) if !matches!(e, Error::NotFound) => panic!("get c-{k} after a cut: {e:?}"),
            _ => return false,
        }
    }
    // The present keys sorted by insertion rank.
    let mut order = [(0u32, 0u32); KEYS];
    let mut n = 0;
    for (k, s) in state.iter().enumerate() {
        if let Some((_, rank)) = s {
            order[n] = (*rank, k as u32);
            n += 1;
        }
    }
    order[..n].sort_unstable();
    // A `keys` call may return fewer than asked before the end: list until it returns 0.
    let mut cursor = KeyCursor::default();
    let mut out = [Key::sent(0); 16];
    let mut got = 0;
    loop {
        let n = db.keys(&mut cursor, &mut out[got..]).expect("keys after a cut");
        if n == 0 {
            break;
        }
        got += n;
        assert!(got <= KEYS, "more keys listed than ever written");
    }
    got == n
        && out[..n]
            .iter()
            .zip(&order[..n])
            .all(|(a, &(_, b))| *a == Key::command(b))
}

/// Cuts power during each flash operation of [`SCENARIO`] in turn (at most 160 of them), then
/// remounts: every acknowledged step must be there, the interrupted one entirely or not at
/// all, and nothing else; the store must then take a new put. `ecc`: on ECC flash whose torn
/// words become unreadable, else on multiwrite flash.
#[inline(never)]
pub fn power_cut_sweep(flash: &mut Sim, ecc: bool) {
    // Key 5 once (cold: compaction has to move it), then keys 0..4 rewritten `fill + 1` times
    // (rounds 100.., values the scenario never writes).
    let base = |flash: &mut Sim, fill: u32| {
        let flash = reset(flash);
        // ECC mode: each word programmed once per erase, and a torn operation leaves words
        // that fail every read until their page is erased (STM32L4/H7-like).
        flash.set_ecc(ecc);
        flash.set_torn_unreadable(ecc);
        let mut db = remount(flash);
        let mut v = [0u8; MAX_VALUE];
        let len = value(5, 100, &mut v);
        db.put(Key::command(5), &[&v[..len]]).expect("base put");
        for round in 100..=100 + fill {
            for k in 0..5 {
                let mut v = [0u8; MAX_VALUE];
                let len = value(k, round, &mut v);
                db.put(Key::command(k), &[&v[..len]]).expect("base put");
            }
        }
    };
    // The smallest fill after which the scenario's compaction moves live records, so the sweep
    // cuts those copies too.
    let (mut fill, mut total, mut erases, mut moved) = (0, 0, 0, 0);
    while moved == 0 {
        fill += 1;
        assert!(fill < 400, "the scenario never compacts");
        base(flash, fill);
        let (ops, erased) = (flash.ops(), flash.stats().erases);
        let mut db = remount(flash);
        for &step in &SCENARIO {
            run_step(&mut db, step).expect("scenario without cuts");
        }
        moved = db.0.moved_records();
        let flash = db.0.into_flash();
        total = flash.ops() - ops;
        erases = flash.stats().erases - erased;
    }
    let initial: State = [
        Some((100 + fill, 1)),
        Some((100 + fill, 2)),
        Some((100 + fill, 3)),
        Some((100 + fill, 4)),
        Some((100 + fill, 5)),
        Some((100, 0)),
    ];
    let cuts = total.min(160);
    let (mut old, mut new) = (0, 0);
    for k in 0..cuts {
        base(flash, fill);
        flash.set_seed(k);
        flash.cut_power_at_op(Some(k));
        let mut state = initial;
        let mut rank = 6;
        let mut db = remount(flash);
        let mut torn = None;
        for &step in &SCENARIO {
            match run_step(&mut db, step) {
                Ok(()) => apply(&mut state, &mut rank, step),
                Err(Error::Flash(SimFlashError::PowerCut)) => {
                    torn = Some(step);
                    break;
                }
                Err(e) => panic!("cut {k}: {e:?}"),
            }
        }
        let step = torn.unwrap_or_else(|| panic!("cut {k} of {total} did not fire"));
        let flash = db.0.into_flash();
        flash.restore_power();
        let mut after = state;
        apply(&mut after, &mut rank, step);
        let mut db = remount(flash);
        if holds(&mut db, &state) {
            old += 1;
        } else if holds(&mut db, &after) {
            new += 1;
        } else {
            dump(&mut db, &state, &after, fill);
            panic!("cut {k}: the store holds neither the state before nor after the torn step");
        }
        let mut v = [0u8; MAX_VALUE];
        let len = value(1, 9, &mut v);
        db.put(Key::command(1), &[&v[..len]]).expect("put after a cut");
        let mut buf = [0u8; MAX_VALUE];
        assert_eq!(db.get(Key::command(1), &mut buf).map(|b| b.len()), Ok(len));
        assert_eq!(buf[..len], v[..len]);
    }
    hprintln!(
        "power-cut sweep ({}): {} cuts over {} flash operations ({} page erases, {} records moved by compaction), all \
         recovered ({} old state, {} new state)",
        if ecc {
            "ECC, torn words unreadable"
        } else {
            "multiwrite"
        },
        cuts,
        total,
        erases,
        moved,
        old,
        new
    );
}

fn message(i: u32, buf: &mut [u8; 8]) -> Publish<'_> {
    buf[..4].copy_from_slice(b"msg-");
    buf[4..].copy_from_slice(&i.to_be_bytes());
    let mut p = Publish::new("qemu/t", &buf[..]);
    p.qos = QoS::AtLeastOnce;
    p
}

/// (sequence, packet id, dup, payload index) of the next publish.
#[inline(never)]
fn next(m: &mut Meter, ob: &mut Ob) -> Option<(u32, u16, bool, u32)> {
    let mut buf = [0u8; crate::BUF];
    match m.run(Op::NextTransmit, || {
        block_on(ob.next_transmit(0, &mut buf, |_| {})).expect("next_transmit")
    }) {
        Some(Transmit::Publish(p)) => {
            assert_eq!(p.topic, "qemu/t");
            assert_eq!(&p.payload[..4], b"msg-");
            let i = u32::from_be_bytes(p.payload[4..8].try_into().unwrap());
            Some((p.sequence, p.packet_id, p.dup, i))
        }
        Some(Transmit::PubRel { .. }) => panic!("unexpected PUBREL"),
        None => None,
    }
}

#[inline(never)]
fn restore<'f>(m: &mut Meter, flash: &'f mut Sim) -> Ob<'f> {
    let store = remount(flash).0;
    m.run(Op::Restore, || block_on(Outbox::restore(store, OutboxConfig::new(32))))
        .expect("restore")
}

/// Publish 10 QoS 1 messages, send the window, acknowledge 2, reboot (drop the outbox),
/// restore: 8 left, oldest first, the window marked DUP; acknowledge all, restore: empty.
#[inline(never)]
pub fn outbox_cycle(m: &mut Meter, flash: &mut Sim) {
    let flash = reset(flash);
    let mut ob = restore(m, flash);
    assert!(ob.is_idle());
    for i in 0..10 {
        let mut b = [0u8; 8];
        let msg = message(i, &mut b);
        let r = m.run(Op::Publish, || block_on(ob.publish(&msg, 0))).expect("publish");
        assert_eq!(
            r,
            Receipt::Stored {
                sequence: i,
                dropped: None,
                dropped_count: 0
            }
        );
    }
    assert_eq!(ob.capacity().buffered, 10);
    let mut pids = [0u16; W];
    for (i, pid) in pids.iter_mut().enumerate() {
        let (seq, p, dup, n) = next(m, &mut ob).expect("a publish");
        assert_eq!((seq, dup, n), (i as u32, false, i as u32));
        *pid = p;
    }
    assert_eq!(next(m, &mut ob), None, "the window is full");
    for (i, &pid) in pids[..2].iter().enumerate() {
        assert_eq!(
            m.run(Op::Puback, || block_on(ob.on_puback(pid))).expect("puback"),
            Some(i as u32)
        );
    }
    assert_eq!(ob.capacity().buffered, 8);
    // A reboot: the outbox and the store go, the flash stays.
    let flash = block_on(ob.into_store()).expect("into_store").into_flash();

    let mut ob = restore(m, flash);
    assert_eq!(ob.capacity().buffered, 8);
    assert_eq!(ob.next_sequence(), 10);
    // At most W in flight plus the store's 32 deferred removals may have been sent: all 8.
    assert_eq!(ob.restored_maybe_sent(), 8);
    let mut seen = 0;
    while let Some((seq, pid, dup, n)) = next(m, &mut ob) {
        assert_eq!((seq, n), (2 + seen, 2 + seen), "replay order");
        assert_eq!(dup, seen < W as u32, "DUP on the window only (seq {seq})");
        assert_eq!(
            m.run(Op::Puback, || block_on(ob.on_puback(pid))).expect("puback"),
            Some(seq)
        );
        seen += 1;
    }
    assert_eq!(seen, 8);
    assert!(ob.is_idle());
    let flash = block_on(ob.into_store()).expect("into_store").into_flash();
    let ob = restore(m, flash);
    assert_eq!(ob.capacity().buffered, 0);
    // Sequences continue above the highest on flash; with none left they start again at 0.
    assert_eq!(ob.next_sequence(), 0);
    hprintln!("outbox: 10 published, 2 acknowledged, restore replayed 8 in order with DUP on the window");
}

/// The size of each future before it is polled (what an executor's task must hold).
#[inline(never)]
pub fn future_sizes(flash: &mut Sim) -> [(&'static str, usize); 13] {
    let flash = reset(flash);
    let mount = size_of_val(St::mount(&mut *flash, Config::new(MAX_VALUE)));
    let mut s = remount(flash).0;
    let k = Key::command(0);
    let mut buf = [0u8; 8];
    let mut cursor = KeyCursor::default();
    let mut keys = [Key::sent(0); 4];
    let sizes = [
        ("mount", mount),
        ("put", size_of_val(s.put(k, &[b"x"]))),
        ("get", size_of_val(s.get(k, &mut buf))),
        ("remove", size_of_val(s.remove(k))),
        ("remove_deferred", size_of_val(s.remove_deferred(k))),
        ("flush", size_of_val(s.flush())),
        ("keys", size_of_val(s.keys(&mut cursor, &mut keys))),
        ("clear", size_of_val(s.clear())),
        ("contains", size_of_val(s.contains(k))),
        ("", 0),
        ("", 0),
        ("", 0),
        ("", 0),
    ];
    let mut sizes = sizes;
    let mut ob: Ob = block_on(Outbox::restore(s, OutboxConfig::new(32))).expect("restore");
    let mut b = [0u8; 8];
    let msg = message(0, &mut b);
    sizes[9] = ("outbox_publish", size_of_val(ob.publish(&msg, 0)));
    let mut tx = [0u8; crate::BUF];
    sizes[10] = (
        "outbox_next_transmit",
        size_of_val(ob.next_transmit(0, &mut tx, |_| {})),
    );
    sizes[11] = ("outbox_puback", size_of_val(ob.on_puback(1)));
    let s = ob.into_store_unflushed();
    sizes[12] = ("outbox_restore", size_of_val(Ob::restore(s, OutboxConfig::new(32))));
    sizes
}

/// The size of a value, taken by value so that each unpolled future is dropped at once.
pub fn size_of_val<T>(value: T) -> usize {
    core::mem::size_of_val(&value)
}

/// After a failed cut: what the store holds and the two states it should match, for the log.
fn dump(db: &mut Db, before: &State, after: &State, fill: u32) {
    hprintln!("before {:?}", before);
    hprintln!("after  {:?}", after);
    for k in 0..KEYS as u32 {
        let mut buf = [0u8; MAX_VALUE];
        match db.get(Key::command(k), &mut buf).map(|v| v.len()) {
            Ok(len) => {
                let mut found = None;
                for round in (0..10).chain(100..=100 + fill) {
                    let mut want = [0u8; MAX_VALUE];
                    let n = value(k, round, &mut want);
                    if n == len && buf[..n] == want[..n] {
                        found = Some(round);
                    }
                }
                hprintln!("c-{}: {} B, round {:?}", k, len, found);
            }
            Err(e) => hprintln!("c-{}: {:?}", k, e),
        }
    }
    let mut cursor = KeyCursor::default();
    let mut out = [Key::sent(0); 16];
    let mut n = 0;
    while let Ok(got @ 1..) = db.keys(&mut cursor, &mut out[n..]) {
        n += got;
    }
    hprintln!("keys {:?}", &out[..n]);
}
