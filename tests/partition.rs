//! The store on part of a flash (issue 10): embassy-embedded-hal's `Partition` (async, shared
//! through an embassy-sync mutex) and `BlockingPartition`, and its `BlockingAsync` adapter.
//! Two stores side by side on one flash stay isolated through remounts, a full neighbour and
//! power cuts; a partition of the wrong size is refused with a message that names the fix.

// Dropping a store models a reboot (its RAM state is lost), though it has no `Drop` impl.
#![allow(clippy::drop_non_drop)]

use core::cell::RefCell;

use embassy_embedded_hal::adapter::BlockingAsync;
use embassy_embedded_hal::flash::partition::{BlockingPartition, Error as PartError, Partition};
use embassy_sync::blocking_mutex::Mutex as BlockingMutex;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::mutex::Mutex;
use mqtt_persist::flash::{BlockingFlash, SimFlash, SimFlashError, block_on};
use mqtt_persist::{Config, Error, GeometryError, Key, KeyCursor, Store};

type Sim = SimFlash<1024, 16, 4, 4>;
type Shared<'a> = Mutex<NoopRawMutex, &'a mut Sim>;
type Part<'a, 'b> = Partition<'a, NoopRawMutex, &'b mut Sim>;
type S<'a, 'b> = Store<Part<'a, 'b>, 8>;
const HALF: u32 = 8 * 1024;
const URI: &str = "tcp://broker.example:1883";

fn sim() -> Box<Sim> {
    let mut f = Sim::boxed();
    f.set_ecc(true);
    f
}

fn mount<'a, 'b>(m: &'a Shared<'b>, offset: u32, client: &str) -> S<'a, 'b> {
    let mut s = match block_on(Store::mount(Partition::new(m, offset, HALF), Config::new(128))) {
        Ok(s) => s,
        Err((_, e)) => panic!("mount at {offset}: {e:?}"),
    };
    block_on(s.open(client, URI)).expect("open");
    s
}

fn value(store: u8, i: u16) -> Vec<u8> {
    (0..24)
        .map(|j| store.wrapping_mul(31) ^ (i as u8).wrapping_add(j))
        .collect()
}

fn contents<F: embedded_storage_async::nor_flash::NorFlash, const N: usize>(
    s: &mut Store<F, N>,
) -> Vec<(Key, Vec<u8>)> {
    let mut cur = KeyCursor::default();
    let mut keys = [Key::sent(0); 64];
    let mut out = Vec::new();
    for _ in 0..100 {
        let n = block_on(s.keys(&mut cur, &mut keys)).expect("keys");
        if n == 0 {
            return out;
        }
        for &k in &keys[..n] {
            let mut buf = [0u8; 128];
            let v = block_on(s.get(k, &mut buf)).expect("get").to_vec();
            out.push((k, v));
        }
    }
    panic!("keys() does not end");
}

fn expected(store: u8, ids: impl Iterator<Item = u16>) -> Vec<(Key, Vec<u8>)> {
    ids.map(|i| (Key::sent(i), value(store, i))).collect()
}

#[test]
fn two_stores_on_halves_of_one_flash_are_isolated_across_remounts() {
    let mut f = sim();
    let m: Shared<'_> = Mutex::new(&mut *f);
    let (mut a, mut b) = (mount(&m, 0, "a"), mount(&m, HALF, "b"));
    for i in 0..30 {
        block_on(a.put(Key::sent(i), &[&value(1, i)])).expect("put a");
        block_on(b.put(Key::sent(i), &[&value(2, i)])).expect("put b");
    }
    for i in (0..30).step_by(3) {
        block_on(a.remove(Key::sent(i))).expect("remove a");
    }
    drop((a, b));
    // Each half holds a store of its own: remounted, each sees exactly its keys and bytes, and
    // neither half mounted as the other's client sees anything.
    let (mut a, mut b) = (mount(&m, 0, "a"), mount(&m, HALF, "b"));
    assert_eq!(contents(&mut a), expected(1, (0..30).filter(|i| i % 3 != 0)));
    assert_eq!(contents(&mut b), expected(2, 0..30));
    drop((a, b));
    assert_eq!(contents(&mut mount(&m, 0, "b")), vec![]);
    assert_eq!(contents(&mut mount(&m, HALF, "a")), vec![]);
}

#[test]
fn filling_one_partition_leaves_the_other_s_bytes_untouched() {
    let mut f = sim();
    let m: Shared<'_> = Mutex::new(&mut *f);
    let mut b = mount(&m, HALF, "b");
    for i in 0..20 {
        block_on(b.put(Key::sent(i), &[&value(2, i)])).expect("put b");
    }
    let before = block_on(m.lock()).as_bytes()[HALF as usize..].to_vec();
    let mut a = mount(&m, 0, "a");
    let mut stored = 0u16;
    let full = loop {
        assert!(stored < 2000, "partition A never filled");
        match block_on(a.put(Key::sent(stored), &[&value(1, stored)])) {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(full, Error::Full);
    assert!(stored > 100, "only {stored} puts fit in 8 KiB");
    assert_eq!(block_on(m.lock()).as_bytes()[HALF as usize..], before[..]);
    assert_eq!(contents(&mut a), expected(1, 0..stored));
    assert_eq!(contents(&mut b), expected(2, 0..20));
}

/// The scenario cut in partition A: removes (tombstones), then puts that wrap into compaction.
/// `removed` and `done` collect what returned `Ok`.
fn scenario(
    a: &mut S<'_, '_>,
    removed: &mut Vec<u16>,
    done: &mut Vec<u16>,
) -> Result<(), Error<PartError<SimFlashError>>> {
    for i in 0..10 {
        block_on(a.remove(Key::sent(i)))?;
        removed.push(i);
    }
    for i in 40..120 {
        block_on(a.put(Key::sent(i), &[&value(1, i)]))?;
        done.push(i);
    }
    Ok(())
}

#[test]
fn power_cuts_in_one_partition_never_touch_the_other() {
    let mut f = sim();
    {
        let m: Shared<'_> = Mutex::new(&mut *f);
        let mut b = mount(&m, HALF, "b");
        for i in 0..12 {
            block_on(b.put(Key::sent(i), &[&value(2, i)])).expect("put b");
        }
        let mut a = mount(&m, 0, "a");
        for i in 0..40 {
            block_on(a.put(Key::sent(i), &[&value(1, i)])).expect("put a");
        }
    }
    let base = f.as_bytes().to_vec();
    let b_bytes = base[HALF as usize..].to_vec();
    let ops = {
        let mut g = sim();
        g.load_image(&base);
        let m: Shared<'_> = Mutex::new(&mut *g);
        let mut a = mount(&m, 0, "a");
        let start = block_on(m.lock()).ops();
        scenario(&mut a, &mut Vec::new(), &mut Vec::new()).expect("clean run");
        drop(a);
        block_on(m.lock()).ops() - start
    };
    assert!(ops > 60, "scenario has only {ops} mutating ops");
    let mut cuts = 0;
    for k in (0..ops).step_by(3) {
        let mut g = sim();
        g.load_image(&base);
        let m: Shared<'_> = Mutex::new(&mut *g);
        let mut a = mount(&m, 0, "a");
        block_on(m.lock()).cut_power_at_op(Some(k));
        let (mut removed, mut done) = (Vec::new(), Vec::new());
        let r = scenario(&mut a, &mut removed, &mut done);
        assert_eq!(
            r,
            Err(Error::Flash(PartError::Flash(SimFlashError::PowerCut))),
            "cut at op {k}"
        );
        cuts += 1;
        drop(a);
        {
            let mut g = block_on(m.lock());
            g.restore_power();
            g.cut_power_at_op(None);
            assert_eq!(g.as_bytes()[HALF as usize..], b_bytes[..], "cut at op {k} touched B");
        }
        let mut b = mount(&m, HALF, "b");
        assert_eq!(contents(&mut b), expected(2, 0..12), "B after a cut at op {k}");
        let mut a = mount(&m, 0, "a");
        let got = contents(&mut a);
        // Every acknowledged put of A is there with its bytes, no acknowledged remove comes
        // back, and every key holds the bytes of its own put.
        for &i in &removed {
            assert!(
                !got.iter().any(|(key, _)| *key == Key::sent(i)),
                "cut at op {k}: removed {i} is back"
            );
        }
        for &i in &done {
            assert!(
                got.contains(&(Key::sent(i), value(1, i))),
                "cut at op {k}: put {i} lost"
            );
        }
        for &(key, ref v) in &got {
            let i = key.id() as u16;
            assert_eq!(v, &value(1, i), "cut at op {k}: wrong bytes under {key:?}");
        }
    }
    assert_eq!(cuts, ops.div_ceil(3));
}

#[test]
fn a_blocking_partition_and_blocking_async_serve_the_store() {
    let mut f = sim();
    {
        let m = BlockingMutex::<NoopRawMutex, _>::new(RefCell::new(&mut *f));
        let part = BlockingPartition::new(&m, HALF, HALF);
        let mut s: Store<BlockingFlash<_>, 8> = match block_on(Store::mount(BlockingFlash(part), Config::new(64))) {
            Ok(s) => s,
            Err((_, e)) => panic!("mount: {e:?}"),
        };
        block_on(s.open("dev", URI)).expect("open");
        for i in 0..10 {
            block_on(s.put(Key::sent(i), &[&value(3, i)])).expect("put");
        }
        assert_eq!(contents(&mut s), expected(3, 0..10));
    }
    // The first half was never written.
    assert!(f.as_bytes()[..HALF as usize].iter().all(|&b| b == 0xFF));

    // embassy-embedded-hal's BlockingAsync over a whole blocking flash, remounted.
    let mut g = sim();
    for round in 0..2u16 {
        let mut s: Store<BlockingAsync<&mut Sim>, 16> =
            match block_on(Store::mount(BlockingAsync::new(&mut *g), Config::new(64))) {
                Ok(s) => s,
                Err((_, e)) => panic!("mount over BlockingAsync: {e:?}"),
            };
        block_on(s.open("dev", URI)).expect("open");
        block_on(s.put(Key::sent(round), &[&value(4, round)])).expect("put over BlockingAsync");
        assert_eq!(contents(&mut s), expected(4, 0..=round));
    }
}

#[test]
fn a_partition_of_the_wrong_size_names_the_fix() {
    let mut f = sim();
    let m: Shared<'_> = Mutex::new(&mut *f);
    let part = Partition::new(&m, 0, 6 * 1024);
    match block_on(Store::<_, 8>::mount(part, Config::new(64))) {
        Ok(_) => panic!("a 6 KiB partition mounted as 8 pages"),
        Err((_, Error::BadGeometry(g))) => {
            assert_eq!(
                g,
                GeometryError::Capacity {
                    flash_bytes: 6 * 1024,
                    expected: 8 * 1024,
                    page_size: 1024
                }
            );
            let msg = g.to_string();
            assert!(msg.contains("use Store<_, 6> for this flash"), "{msg}");
            assert!(msg.contains("partition of exactly 8192 B"), "{msg}");
        }
        Err((_, e)) => panic!("expected BadGeometry, got {e:?}"),
    }
}
