//! `keys()` fills the whole slice it is given (issue 10): the log is read in batches of
//! `KEYS_BATCH`, but a caller's slice of any length gets as many keys as are left, in insertion
//! order, through the store, the `Persistence` trait and the `Blocking` facade.

use mqtt_persist::flash::{BlockingFlash, SimFlash, block_on};
use mqtt_persist::{Blocking, Config, KEYS_BATCH, Key, KeyCursor, Persistence, Store};

type Sim = SimFlash<1024, 16, 4, 4>;
const URI: &str = "tcp://broker.example:1883";

fn mounted(f: &mut Sim) -> Store<&mut Sim, 16> {
    let mut s = match block_on(Store::mount(f, Config::new(64))) {
        Ok(s) => s,
        Err((_, e)) => panic!("mount: {e:?}"),
    };
    block_on(s.open("dev", URI)).expect("open");
    s
}

/// Calls `keys` with a slice of `len` until it returns 0; returns every call's count and the
/// keys in order.
async fn listing<P: Persistence>(p: &mut P, len: usize) -> (Vec<usize>, Vec<Key>) {
    let mut cur = KeyCursor::default();
    let mut out = vec![Key::sent(0); len];
    let (mut counts, mut keys) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        let n = p.keys(&mut cur, &mut out).await.expect("keys");
        counts.push(n);
        if n == 0 {
            return (counts, keys);
        }
        keys.extend_from_slice(&out[..n]);
    }
    panic!("keys() does not end");
}

#[test]
fn a_long_slice_gets_every_key_in_one_call() {
    const _: () = assert!(KEYS_BATCH < 100);
    let mut f = Sim::boxed();
    let mut s = mounted(&mut f);
    for i in 0..100 {
        block_on(s.put(Key::sent(i), &[&[i as u8; 8]])).expect("put");
    }
    let want: Vec<Key> = (0..100).map(Key::sent).collect();
    assert_eq!(block_on(listing(&mut s, 128)), (vec![100, 0], want.clone()));
    assert_eq!(block_on(listing(&mut s, 64)), (vec![64, 36, 0], want.clone()));
    assert_eq!(block_on(listing(&mut s, 100)), (vec![100, 0], want.clone()));
    assert_eq!(
        block_on(listing(&mut s, KEYS_BATCH + 1)).0[..2],
        [KEYS_BATCH + 1, KEYS_BATCH + 1]
    );
    let (counts, keys) = block_on(listing(&mut s, 1));
    assert_eq!((counts.len(), keys), (101, want));
}

#[test]
fn overwritten_and_removed_keys_do_not_shorten_a_batch() {
    // Stale candidates (keys put again later, or removed) make a log batch hold fewer live keys
    // than it scanned: the slice must still be filled from the following batches.
    let mut f = Sim::boxed();
    let mut s = mounted(&mut f);
    for i in 0..60 {
        block_on(s.put(Key::sent(i), &[&[1; 8]])).expect("put");
    }
    for i in (0..60).step_by(2) {
        block_on(s.put(Key::sent(i), &[&[2; 8]])).expect("put again");
    }
    for i in (1..60).step_by(6) {
        block_on(s.remove(Key::sent(i))).expect("remove");
    }
    let odd = (1..60).step_by(2).filter(|i| (i - 1) % 6 != 0);
    let want: Vec<Key> = odd.chain((0..60).step_by(2)).map(Key::sent).collect();
    assert_eq!(want.len(), 50);
    assert_eq!(block_on(listing(&mut s, 50)), (vec![50, 0], want.clone()));
    assert_eq!(block_on(listing(&mut s, 40)), (vec![40, 10, 0], want));
}

#[test]
fn the_blocking_facade_fills_the_slice_too() {
    let mut f = Sim::boxed();
    let s: Store<BlockingFlash<&mut Sim>, 16> = match block_on(Store::mount(BlockingFlash(&mut *f), Config::new(64))) {
        Ok(s) => s,
        Err((_, e)) => panic!("mount: {e:?}"),
    };
    let mut b = Blocking(s);
    b.open("dev", URI).expect("open");
    for i in 0..40 {
        b.put(Key::received(i), &[b"v"]).expect("put");
    }
    let mut cur = KeyCursor::default();
    let mut out = [Key::sent(0); 33];
    assert_eq!(b.keys(&mut cur, &mut out), Ok(33));
    assert_eq!(out.to_vec(), (0..33).map(Key::received).collect::<Vec<_>>());
    assert_eq!(b.keys(&mut cur, &mut out), Ok(7));
    assert_eq!(out[..7].to_vec(), (33..40).map(Key::received).collect::<Vec<_>>());
    assert_eq!(b.keys(&mut cur, &mut out), Ok(0));
}

#[test]
fn an_empty_slice_returns_zero_and_keeps_the_cursor() {
    let mut f = Sim::boxed();
    let mut s = mounted(&mut f);
    for i in 0..5 {
        block_on(s.put(Key::sent(i), &[b"x"])).expect("put");
    }
    let mut cur = KeyCursor::default();
    let mut one = [Key::sent(99); 1];
    assert_eq!(block_on(s.keys(&mut cur, &mut one)), Ok(1));
    assert_eq!(one[0], Key::sent(0));
    assert_eq!(block_on(s.keys(&mut cur, &mut [])), Ok(0));
    let mut rest = [Key::sent(99); 8];
    assert_eq!(block_on(s.keys(&mut cur, &mut rest)), Ok(4));
    assert_eq!(rest[..4].to_vec(), (1..5).map(Key::sent).collect::<Vec<_>>());
}
