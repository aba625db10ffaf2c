//! API edge cases the fuzz harness met that the API tests do not pin down: values made of empty
//! parts, a value of exactly the limit in parts, `keys()` with an empty output slice and a key
//! put while listing, every call on a key whose removal is pending, and `Config::new(0)`.

// `drop(store)` ends a session (a reboot) where the flash is used next; the store only borrows it.
#![allow(clippy::drop_non_drop)]

use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Error, Key, KeyCursor, Store};

type Sim = SimFlash<1024, 6, 4, 4>;

fn mount(flash: &mut Sim) -> Store<&mut Sim, 6> {
    let mut s: Store<&mut Sim, 6> = block_on(Store::mount(flash, Config::new(300)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("dev", "tcp://broker:1883")).unwrap();
    s
}

#[test]
fn empty_values_and_empty_buffers() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    let mut s = mount(&mut flash);
    // No parts, empty parts: an empty value, distinct from an absent key.
    block_on(s.put(Key::sent(1), &[])).unwrap();
    block_on(s.put(Key::sent(2), &[b"", b"", b""])).unwrap();
    let mut none = [0u8; 0];
    assert_eq!(block_on(s.get(Key::sent(1), &mut none)), Ok(&[][..]));
    assert_eq!(block_on(s.get(Key::sent(2), &mut none)), Ok(&[][..]));
    assert_eq!(block_on(s.len_of(Key::sent(1))), Ok(0));
    assert_eq!(block_on(s.contains(Key::sent(1))), Ok(true));
    assert_eq!(block_on(s.get(Key::sent(3), &mut none)), Err(Error::NotFound));
    assert_eq!(block_on(s.len_of(Key::sent(3))), Err(Error::NotFound));
    // A value of exactly the limit, in parts.
    let big = [0xFFu8; 300];
    block_on(s.put(Key::command(9), &[&big[..1], &big[1..299], &big[299..]])).unwrap();
    assert_eq!(block_on(s.len_of(Key::command(9))), Ok(300));
    assert_eq!(
        block_on(s.get(Key::command(9), &mut [0u8; 299])),
        Err(Error::BufferTooSmall { needed: 300 })
    );
    drop(s);
    let mut s = mount(&mut flash);
    assert_eq!(block_on(s.get(Key::sent(2), &mut none)), Ok(&[][..]));
    let mut buf = [0u8; 300];
    assert_eq!(block_on(s.get(Key::command(9), &mut buf)).unwrap(), &big[..]);
}

#[test]
fn keys_with_an_empty_slice_returns_nothing_and_keeps_the_cursor() {
    let mut flash = Sim::boxed();
    let mut s = mount(&mut flash);
    for i in 0..5 {
        block_on(s.put(Key::queued(i), &[b"x"])).unwrap();
    }
    let mut cur = KeyCursor::default();
    assert_eq!(block_on(s.keys(&mut cur, &mut [])), Ok(0));
    assert_eq!(cur, KeyCursor::default());
    let mut out = [Key::sent(0); 2];
    assert_eq!(block_on(s.keys(&mut cur, &mut out)), Ok(2));
    assert_eq!(out, [Key::queued(0), Key::queued(1)]);
    let mid = cur;
    assert_eq!(block_on(s.keys(&mut cur, &mut [])), Ok(0));
    assert_eq!(cur, mid);
    // A key put during the listing comes last (insertion order), after the ones still due.
    block_on(s.put(Key::queued(0), &[b"again"])).unwrap();
    let mut rest = [Key::sent(0); 8];
    let n = block_on(s.keys(&mut cur, &mut rest)).unwrap();
    assert_eq!(
        &rest[..n],
        &[Key::queued(2), Key::queued(3), Key::queued(4), Key::queued(0)]
    );
    assert_eq!(block_on(s.keys(&mut cur, &mut rest)), Ok(0));
}

#[test]
fn a_pending_key_is_gone_for_every_call_until_it_is_put_again() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    let mut s = mount(&mut flash);
    block_on(s.put(Key::command(32), &[b"first"])).unwrap();
    block_on(s.remove_deferred(Key::command(32))).unwrap();
    // Pending: NotFound for remove, remove_deferred and len_of alike; absent for contains.
    assert_eq!(block_on(s.remove_deferred(Key::command(32))), Err(Error::NotFound));
    assert_eq!(block_on(s.remove(Key::command(32))), Err(Error::NotFound));
    assert_eq!(block_on(s.len_of(Key::command(32))), Err(Error::NotFound));
    assert_eq!(block_on(s.contains(Key::command(32))), Ok(false));
    // Put again: no longer pending, and the new value survives a reboot without close.
    block_on(s.put(Key::command(32), &[b"back"])).unwrap();
    assert_eq!(s.pending_removals(), 0);
    drop(s);
    let mut s = mount(&mut flash);
    let mut buf = [0u8; 8];
    assert_eq!(block_on(s.get(Key::command(32), &mut buf)), Ok(&b"back"[..]));
}

#[test]
#[should_panic(expected = "max_value_len must be at least 1")]
fn a_zero_value_limit_is_refused() {
    let zero = std::hint::black_box(0);
    let _ = Config::new(zero);
}
