//! Minimal reproductions of bugs in the store found by the fuzzers, kept as ignored tests until
//! the store is fixed (then drop the `ignore` and the harness's matching `KNOWN_BUG_*` guard).

use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Key, Store};

type Sim = SimFlash<1024, 6, 4, 4>;

/// Found by `fuzz/seeds`-derived power_loss input (see `fuzz_regressions::bug_pending_other_ns`).
///
/// `Log::locate_many` treats a key with a pending deferred removal as removed in *every*
/// namespace (`is_pending(key)` ignores `want[i].0`). Compaction (`walk_live`) therefore sees
/// another client's record of the same key as dead, does not move it, and erases it: client B's
/// `remove_deferred(s-5)` destroys client A's `s-5`, durably, without any power cut.
#[test]
#[ignore = "BUG: remove_deferred in one namespace makes compaction drop the same key of another namespace"]
fn deferred_removal_in_one_namespace_does_not_lose_the_key_in_another() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    let mut s: Store<&mut Sim, 6> = block_on(Store::mount(&mut *flash, Config::new(256)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("a", "tcp://broker:1883")).unwrap();
    block_on(s.put(Key::sent(5), &[b"a-five"])).unwrap();
    block_on(s.close()).unwrap();

    block_on(s.open("b", "tcp://broker:1883")).unwrap();
    // B never had s-5: the deferred removal is a no-op for B's state...
    block_on(s.remove_deferred(Key::sent(5))).unwrap();
    // ...but B's traffic compacts the page holding A's s-5 while the removal is pending.
    let mut i = 0u32;
    while s.flash().stats().erases == 0 {
        block_on(s.put(Key::command(i % 4), &[&[7u8; 100]])).unwrap();
        i += 1;
    }
    block_on(s.close()).unwrap();

    block_on(s.open("a", "tcp://broker:1883")).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        block_on(s.get(Key::sent(5), &mut buf)).map(|v| v.to_vec()),
        Ok(b"a-five".to_vec()),
        "client a lost s-5 to client b's deferred removal"
    );
}
