//! Model-based test: random sequences of every Paho operation (plus `remove_deferred`, `flush`
//! and remounts) run against the store and against a plain in-memory model, on several flash
//! geometries. The model is a `BTreeMap` of values per namespace with an insertion stamp per key
//! (so the exact order of `keys()` is checked) and the set of deferred removals not yet durable.

// Dropping a store without `close` is how these tests model a reboot: the point is that its
// RAM state (pending deferred removals, summaries) is lost, even though it has no `Drop` impl.
#![allow(clippy::drop_non_drop)]

use std::collections::BTreeMap;

use mqtt_persist::flash::{SimFlash, SimFlashError, block_on};
use mqtt_persist::{Config, Error, Key, KeyCursor, Store};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

type E = Error<SimFlashError>;

/// The identities clients open the store with: two clients at one server, and the first client
/// at another server (a different namespace too).
const IDS: [(&str, &str); 3] = [
    ("dev-a", "tcp://broker:1883"),
    ("dev-b", "tcp://broker:1883"),
    ("dev-a", "ssl://other:8883"),
];

/// The store's deferred-removal capacity (documented: "in a batch with up to 31 others").
const PENDING_CAP: usize = 32;

#[derive(Clone, Debug)]
struct Val {
    len: usize,
    style: u8,
    seed: u8,
    cuts: Vec<Index>,
}

impl Val {
    fn bytes(&self) -> Vec<u8> {
        let s = self.seed;
        (0..self.len)
            .map(|i| match self.style {
                0 => 0xFF,
                1 => 0x00,
                2 => (i as u8).wrapping_mul(31).wrapping_add(s),
                _ => {
                    // xorshift-ish, seeded per value
                    let mut x = (i as u32).wrapping_mul(0x9E37_79B9) ^ (s as u32).wrapping_mul(0x85EB_CA6B);
                    x ^= x >> 15;
                    x = x.wrapping_mul(0x2C1B_3C6D);
                    (x >> 24) as u8
                }
            })
            .collect()
    }

    /// The value split into 1..=3 parts (some possibly empty).
    fn parts(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = self.cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts {
            out.push(bytes[at..c].to_vec());
            at = c;
        }
        out.push(bytes[at..].to_vec());
        out
    }
}

#[derive(Clone, Debug)]
enum Op {
    Open(usize),
    Close,
    Put(Key, Val),
    Get(Key, bool),
    Remove(Key),
    RemoveDeferred(Key),
    Flush,
    Keys(usize),
    Clear,
    Contains(Key),
    Remount,
    /// Removes every key `keys()` lists, one durable `remove` each (a store that was full must
    /// empty this way: a remove never needs more room than its reserved tombstone).
    Drain,
}

fn key_strategy() -> impl Strategy<Value = Key> {
    prop_oneof![
        3 => (1u16..=5).prop_map(Key::sent),
        1 => (1u16..=2).prop_map(Key::pubrel),
        1 => prop::sample::select(vec![7u16, 65535]).prop_map(Key::received),
        3 => prop::sample::select(vec![0u32, 1, 2, 65535, 65536, 70000, 70001, 70002]).prop_map(Key::command),
        2 => prop::sample::select(vec![0u32, 1, 5, 0x2_0000, 0x2_0001, u32::MAX]).prop_map(Key::queued),
    ]
}

/// Values of 0..=600 bytes, mostly within the configured `max` (a few above it, to check
/// `TooLarge`), with varied content and 1..=3 parts.
fn val_strategy(max: usize) -> impl Strategy<Value = Val> {
    let len = prop_oneof![
        1 => Just(0usize),
        3 => 0usize..=48,
        3 => 0usize..=max,
        5 => max / 2..=max,
        1 => max + 1..=600.max(max + 1),
    ];
    (len, 0u8..4, any::<u8>(), prop::collection::vec(any::<Index>(), 0..=2)).prop_map(|(len, style, seed, cuts)| Val {
        len,
        style,
        seed,
        cuts,
    })
}

fn op_strategy(max: usize, put_weight: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::sample::select(vec![0usize, 0, 0, 0, 1, 2]).prop_map(Op::Open),
        1 => Just(Op::Close),
        put_weight => (key_strategy(), val_strategy(max)).prop_map(|(k, v)| Op::Put(k, v)),
        8 => (key_strategy(), prop::bool::weighted(0.2)).prop_map(|(k, s)| Op::Get(k, s)),
        6 => key_strategy().prop_map(Op::Remove),
        8 => key_strategy().prop_map(Op::RemoveDeferred),
        2 => Just(Op::Flush),
        3 => prop::sample::select(vec![1usize, 2, 3, 7, 32, 40]).prop_map(Op::Keys),
        1 => Just(Op::Clear),
        4 => key_strategy().prop_map(Op::Contains),
        2 => Just(Op::Remount),
        1 => Just(Op::Drain),
    ]
}

/// 100..=300 operations; `put_weight` (against 42 for all other operations together) sets how
/// fast the log fills, so that every geometry goes through compaction several times.
fn ops_strategy(max: usize, put_weight: u32) -> impl Strategy<Value = Vec<Op>> {
    // Start open most of the time so the sequence does real work.
    (
        prop::collection::vec(op_strategy(max, put_weight), 100..=300),
        any::<bool>(),
    )
        .prop_map(|(mut ops, open_first)| {
            if open_first {
                ops.insert(0, Op::Open(0));
            }
            ops
        })
}

/// A value with the stamp of its latest put (the model's insertion order).
type Stamped = (Vec<u8>, u64);

#[derive(Default, Debug)]
struct Model {
    open: Option<usize>,
    live: [BTreeMap<Key, Stamped>; 3],
    /// Deferred removals of the open namespace that may not be durable yet, with the value the
    /// key had (None: the key had no value on flash when it was deferred).
    pending: BTreeMap<Key, Option<Stamped>>,
    clock: u64,
}

impl Model {
    fn keys_in_order(&self, ns: usize) -> Vec<Key> {
        let mut v: Vec<(u64, Key)> = self.live[ns].iter().map(|(k, (_, s))| (*s, *k)).collect();
        v.sort_unstable();
        v.into_iter().map(|(_, k)| k).collect()
    }

    fn valueless_pending(&self) -> usize {
        self.pending.values().filter(|v| v.is_none()).count()
    }
}

struct Geo {
    max: usize,
}

fn mount<const P: usize, const N: usize, const R: usize, const W: usize>(
    flash: &mut SimFlash<P, N, R, W>,
    max: usize,
) -> Result<Store<&mut SimFlash<P, N, R, W>, N>, TestCaseError> {
    match block_on(Store::mount(flash, Config::new(max))) {
        Ok(s) => Ok(s),
        Err((_, e)) => Err(TestCaseError::fail(format!("mount failed: {e:?}"))),
    }
}

fn all_keys<F: embedded_storage_async::nor_flash::NorFlash, const N: usize>(
    s: &mut Store<F, N>,
    chunk: usize,
) -> Result<Vec<Key>, Error<F::Error>> {
    let mut cur = KeyCursor::default();
    let mut v = Vec::new();
    let mut buf = vec![Key::sent(0); chunk];
    for _ in 0..10_000 {
        let n = block_on(s.keys(&mut cur, &mut buf))?;
        assert!(n <= chunk.min(32), "keys returned {n} for a buffer of {chunk}");
        if n == 0 {
            return Ok(v);
        }
        v.extend_from_slice(&buf[..n]);
    }
    panic!("keys() never ended: {v:?}");
}

/// Checks every key of the open namespace (values, absent keys, order of `keys()`).
fn check_all<const P: usize, const N: usize, const R: usize, const W: usize>(
    s: &mut Store<&mut SimFlash<P, N, R, W>, N>,
    m: &Model,
    ns: usize,
    universe: &[Key],
    ctx: &str,
) -> Result<(), TestCaseError> {
    let keys = all_keys(s, 7).map_err(|e| TestCaseError::fail(format!("{ctx}: keys: {e:?}")))?;
    prop_assert_eq!(&keys, &m.keys_in_order(ns), "{}: keys() order", ctx);
    let mut buf = vec![0u8; 4096];
    for &k in universe {
        let got = block_on(s.get(k, &mut buf)).map(|v| v.to_vec());
        match m.live[ns].get(&k) {
            Some((v, _)) => prop_assert_eq!(got, Ok(v.clone()), "{}: get {}", ctx, k),
            None => prop_assert_eq!(got, Err(E::NotFound), "{}: get {} (absent)", ctx, k),
        }
        let c = block_on(s.contains(k));
        prop_assert_eq!(c, Ok(m.live[ns].contains_key(&k)), "{}: contains {}", ctx, k);
    }
    Ok(())
}

fn universe() -> Vec<Key> {
    let mut v: Vec<Key> = (1..=5).map(Key::sent).collect();
    v.extend([Key::pubrel(1), Key::pubrel(2), Key::received(7), Key::received(65535)]);
    v.extend([0u32, 1, 2, 65535, 65536, 70000, 70001, 70002].map(Key::command));
    v.extend([0u32, 1, 5, 0x2_0000, 0x2_0001, u32::MAX].map(Key::queued));
    v
}

fn run<const P: usize, const N: usize, const R: usize, const W: usize>(
    ecc: bool,
    geo: Geo,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let universe = universe();
    let mut flash = SimFlash::<P, N, R, W>::boxed();
    flash.set_ecc(ecc);
    let mut m = Model::default();
    let mut s = mount(&mut *flash, geo.max)?;
    let mut buf = vec![0u8; 4096];

    for (step, op) in ops.iter().enumerate() {
        let ctx = format!("step {step} {op:?}");
        let Some(ns) = m.open else {
            // Closed: everything but open and remount is NotOpen and changes nothing.
            let before = s.flash().stats();
            let k = Key::sent(1);
            let r = match op {
                Op::Open(i) => {
                    let (c, u) = IDS[*i];
                    prop_assert_eq!(block_on(s.open(c, u)), Ok(()), "{}", ctx);
                    m.open = Some(*i);
                    prop_assert!(s.is_open());
                    continue;
                }
                Op::Remount => {
                    s = mount(&mut *flash, geo.max)?;
                    let rep = s.mount_report();
                    prop_assert_eq!((rep.damaged_pages, rep.damaged_records, rep.torn_tail), (0, 0, false));
                    continue;
                }
                Op::Close => block_on(s.close()),
                Op::Put(k, v) => block_on(s.put(*k, &[&v.bytes()])),
                Op::Get(k, _) => block_on(s.get(*k, &mut buf)).map(|_| ()),
                Op::Remove(k) => block_on(s.remove(*k)),
                Op::RemoveDeferred(k) => block_on(s.remove_deferred(*k)),
                Op::Flush => block_on(s.flush()),
                Op::Keys(_) => block_on(s.keys(&mut KeyCursor::default(), &mut [k; 4])).map(|_| ()),
                Op::Clear => block_on(s.clear()),
                Op::Contains(k) => block_on(s.contains(*k)).map(|_| ()),
                Op::Drain => block_on(s.remove(k)),
            };
            prop_assert_eq!(r, Err(E::NotOpen), "{}", ctx);
            prop_assert_eq!(s.flash().stats().writes, before.writes, "{}: NotOpen wrote", ctx);
            prop_assert_eq!(s.flash().stats().erases, before.erases, "{}: NotOpen erased", ctx);
            continue;
        };

        match op {
            Op::Open(i) => {
                let (c, u) = IDS[*i];
                let r = block_on(s.open(c, u));
                if *i == ns {
                    prop_assert_eq!(r, Ok(()), "{}", ctx);
                } else {
                    prop_assert_eq!(r, Err(E::AlreadyOpen), "{}", ctx);
                }
            }
            Op::Close => {
                prop_assert_eq!(block_on(s.close()), Ok(()), "{}", ctx);
                prop_assert_eq!(s.pending_removals(), 0);
                prop_assert!(!s.is_open());
                m.pending.clear();
                m.open = None;
            }
            Op::Put(k, v) => {
                let bytes = v.bytes();
                let parts = v.parts(&bytes);
                let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
                let before = s.flash().stats();
                let r = block_on(s.put(*k, &refs));
                if bytes.len() > geo.max {
                    prop_assert_eq!(r, Err(E::TooLarge { max: geo.max }), "{}", ctx);
                    prop_assert_eq!(s.flash().stats(), before, "{}: TooLarge touched flash", ctx);
                } else {
                    match r {
                        Ok(()) => {
                            m.clock += 1;
                            m.live[ns].insert(*k, (bytes, m.clock));
                            m.pending.remove(k);
                            // A put that did not fit at first wrote the pending removals out.
                            if s.pending_removals() == 0 {
                                m.pending.clear();
                            }
                        }
                        Err(E::Full) => {
                            // Refused only over capacity, and only after the pending deferred
                            // removals were written (they are durable now).
                            prop_assert_eq!(s.pending_removals(), 0, "{}: Full with removals pending", ctx);
                            m.pending.clear();
                            let u = s.usage();
                            prop_assert!(
                                u.live_bytes + u.damaged_bytes + s.charge_for(bytes.len()) > u.capacity_bytes,
                                "{}: Full with {:?} for {} bytes",
                                ctx,
                                u,
                                bytes.len()
                            );
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("{ctx}: put: {e:?}"))),
                    }
                }
                // Either way the key now holds exactly what the model says.
                let got = block_on(s.get(*k, &mut buf)).map(|v| v.to_vec());
                match m.live[ns].get(k) {
                    Some((v, _)) => prop_assert_eq!(got, Ok(v.clone()), "{}: get after put", ctx),
                    None => prop_assert_eq!(got, Err(E::NotFound), "{}: get after put", ctx),
                }
            }
            Op::Get(k, small) => match m.live[ns].get(k) {
                Some((v, _)) if *small && !v.is_empty() => {
                    let mut b = vec![0xA5u8; v.len() - 1];
                    let r = block_on(s.get(*k, &mut b)).map(|x| x.to_vec());
                    prop_assert_eq!(r, Err(E::BufferTooSmall { needed: v.len() }), "{}", ctx);
                    prop_assert!(b.iter().all(|&x| x == 0xA5), "{}: BufferTooSmall wrote the buffer", ctx);
                }
                Some((v, _)) => {
                    let mut b = vec![0u8; v.len() + if *small { 0 } else { 13 }];
                    let r = block_on(s.get(*k, &mut b)).map(|x| x.to_vec());
                    prop_assert_eq!(r, Ok(v.clone()), "{}", ctx);
                }
                None => {
                    let mut b = vec![0u8; if *small { 0 } else { 700 }];
                    let r = block_on(s.get(*k, &mut b)).map(|x| x.to_vec());
                    prop_assert_eq!(r, Err(E::NotFound), "{}", ctx);
                }
            },
            Op::Remove(k) => {
                let r = block_on(s.remove(*k));
                if m.live[ns].remove(k).is_some() {
                    prop_assert_eq!(r, Ok(()), "{}", ctx);
                } else {
                    prop_assert_eq!(r, Err(E::NotFound), "{}", ctx);
                }
            }
            Op::RemoveDeferred(k) => {
                let before = s.pending_removals();
                // Store pending = the valueless model entries + those not made durable by a
                // compaction (the model cannot see which): exact when the counts agree.
                let exact = before == m.pending.len();
                let r = block_on(s.remove_deferred(*k));
                if m.pending.contains_key(k) && exact {
                    prop_assert_eq!(r, Err(E::NotFound), "{}", ctx);
                }
                match r {
                    Ok(()) => {
                        if before == PENDING_CAP {
                            // The full set was written first.
                            m.pending.clear();
                            prop_assert_eq!(s.pending_removals(), 1, "{}", ctx);
                        } else {
                            prop_assert_eq!(s.pending_removals(), before + 1, "{}", ctx);
                        }
                        // A key already pending in the model that the store accepted again was
                        // made durable by compaction: it has no value on flash now.
                        let old = if m.pending.contains_key(k) {
                            None
                        } else {
                            m.live[ns].remove(k)
                        };
                        m.pending.insert(*k, old);
                    }
                    Err(E::NotFound) => {
                        prop_assert!(m.pending.contains_key(k), "{}: NotFound for a key not pending", ctx);
                        prop_assert_eq!(s.pending_removals(), before, "{}", ctx);
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("{ctx}: remove_deferred: {e:?}"))),
                }
                prop_assert!(!m.live[ns].contains_key(k));
                prop_assert_eq!(block_on(s.contains(*k)), Ok(false), "{}", ctx);
            }
            Op::Flush => {
                prop_assert_eq!(block_on(s.flush()), Ok(()), "{}", ctx);
                prop_assert_eq!(s.pending_removals(), 0);
                m.pending.clear();
            }
            Op::Keys(chunk) => {
                let keys = all_keys(&mut s, *chunk).map_err(|e| TestCaseError::fail(format!("{ctx}: {e:?}")))?;
                prop_assert_eq!(keys, m.keys_in_order(ns), "{}", ctx);
            }
            Op::Clear => {
                prop_assert_eq!(block_on(s.clear()), Ok(()), "{}", ctx);
                prop_assert_eq!(s.pending_removals(), 0);
                m.live[ns].clear();
                m.pending.clear();
            }
            Op::Drain => {
                let keys = all_keys(&mut s, 16).map_err(|e| TestCaseError::fail(format!("{ctx}: {e:?}")))?;
                prop_assert_eq!(&keys, &m.keys_in_order(ns), "{}", ctx);
                for k in keys {
                    let r = block_on(s.remove(k));
                    prop_assert_eq!(r, Ok(()), "{}: remove {} ({:?})", ctx, k, s.usage());
                    m.live[ns].remove(&k);
                }
                prop_assert_eq!(all_keys(&mut s, 16), Ok(vec![]), "{}", ctx);
            }
            Op::Contains(k) => {
                prop_assert_eq!(block_on(s.contains(*k)), Ok(m.live[ns].contains_key(k)), "{}", ctx);
            }
            Op::Remount => {
                // Drop without close: deferred removals not yet durable come back with their old
                // values (and their old place in the insertion order); the others stay removed.
                let store_pending = s.pending_removals();
                let expect_back = store_pending - m.valueless_pending();
                let before = s.usage();
                s = mount(&mut *flash, geo.max)?;
                // The charge is exact after a mount, not an upper bound.
                prop_assert_eq!(s.usage(), before, "{}: usage across the remount", ctx);
                let rep = s.mount_report();
                prop_assert_eq!((rep.damaged_pages, rep.damaged_records, rep.torn_tail), (0, 0, false));
                prop_assert!(!s.is_open());
                let (c, u) = IDS[ns];
                prop_assert_eq!(block_on(s.open(c, u)), Ok(()));
                let mut back = 0;
                for (k, old) in std::mem::take(&mut m.pending) {
                    let got = block_on(s.get(k, &mut buf)).map(|v| v.to_vec());
                    match (got, old) {
                        (Err(E::NotFound), _) => {}
                        (Ok(v), Some((old, stamp))) => {
                            prop_assert_eq!(&v, &old, "{}: {} came back with another value", ctx, k);
                            m.live[ns].insert(k, (old, stamp));
                            back += 1;
                        }
                        (got, old) => {
                            return Err(TestCaseError::fail(format!(
                                "{ctx}: {k} after remount: {got:?}, was {old:?}"
                            )));
                        }
                    }
                }
                prop_assert_eq!(back, expect_back, "{}: deferred removals that came back", ctx);
                check_all(&mut s, &m, ns, &universe, &ctx)?;
                // The namespace stays open: the next operations run on the remounted store.
            }
        }

        if let Some(ns) = m.open {
            let sp = s.pending_removals();
            prop_assert!(
                sp >= m.valueless_pending() && sp <= m.pending.len(),
                "{}: store has {} pending, model {:?}",
                ctx,
                sp,
                m.pending
            );
            if step % 16 == 15 {
                check_all(&mut s, &m, ns, &universe, &ctx)?;
            }
        }
        prop_assert_eq!(s.is_open(), m.open.is_some());
    }

    // Final: every namespace, then again after a clean remount.
    if m.open.is_some() {
        prop_assert_eq!(block_on(s.close()), Ok(()));
        m.pending.clear();
        m.open = None;
    }
    for round in 0..2 {
        for (i, (c, u)) in IDS.iter().enumerate() {
            prop_assert_eq!(block_on(s.open(c, u)), Ok(()));
            check_all(&mut s, &m, i, &universe, &format!("final round {round} ns {i}"))?;
            prop_assert_eq!(block_on(s.close()), Ok(()));
        }
        s = mount(&mut *flash, geo.max)?;
        let rep = s.mount_report();
        prop_assert_eq!((rep.damaged_pages, rep.damaged_records, rep.torn_tail), (0, 0, false));
    }
    prop_assert_eq!(flash.stats().rewrites, 0, "a word was programmed twice without erase");
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn model_1k_pages_ecc_word4(ops in ops_strategy(256, 40)) {
        run::<1024, 8, 4, 4>(true, Geo { max: 256 }, &ops)?;
    }

    #[test]
    fn model_4k_pages_ecc_word16(ops in ops_strategy(600, 150)) {
        run::<4096, 6, 4, 16>(true, Geo { max: 600 }, &ops)?;
    }

    #[test]
    fn model_2k_pages_byte_writes(ops in ops_strategy(500, 60)) {
        run::<2048, 8, 1, 1>(false, Geo { max: 500 }, &ops)?;
    }

    /// A tiny store that is full most of the time.
    #[test]
    fn model_tiny_store_often_full(ops in ops_strategy(128, 40)) {
        run::<512, 5, 2, 8>(false, Geo { max: 128 }, &ops)?;
    }
}
