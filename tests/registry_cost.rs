//! The identity registry costs nothing per message: its entry (`Key::command(hash)` in a
//! namespace of its own) stays out of the pages' id ranges, so the outbox's command-key lookups
//! do not scan the page that holds it, wherever compaction carried it (DESIGN.md section 21).
//! Found by `flash_compare`: with the entry in the id ranges, the steady state read 439 B per
//! message instead of 17 and ran seven times slower on the host.

use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Identity, Key, Store};

type Sim = SimFlash<4096, 16, 4, 4>;
const URI: &str = "tcp://broker.example:1883";

/// Read bytes per message of a churn (put the newest, acknowledge the oldest of 50 in flight
/// with `remove_deferred`) long enough for compaction to move the cold entry several times,
/// with the identity registered by `open` or opened by hash (no registry entry).
fn reads_per_message(register: bool) -> (f64, u32) {
    let mut f = Sim::boxed();
    f.set_ecc(true);
    let mut s: Store<&mut Sim, 16> = block_on(Store::mount(&mut *f, Config::new(128)))
        .map_err(|e| e.1)
        .unwrap();
    if register {
        block_on(s.open("sensor-17", URI)).unwrap();
    } else {
        block_on(s.open_namespace(Store::<&mut Sim, 16>::namespace_of("sensor-17", URI))).unwrap();
    }
    let msg = [0x5Au8; 64];
    let (warm, steps) = (3_000u32, 4_000u32);
    let mut before = 0;
    for i in 0..warm + steps {
        if i == warm {
            before = s.flash().stats().read_bytes;
        }
        block_on(s.put(Key::command(i), &[&msg])).unwrap();
        if i >= 50 {
            block_on(s.remove_deferred(Key::command(i - 50))).unwrap();
        }
    }
    let per = (s.flash().stats().read_bytes - before) as f64 / steps as f64;
    (per, s.moved_records())
}

#[test]
fn the_registry_entry_adds_no_reads_per_message() {
    let (with, moved) = reads_per_message(true);
    let (without, _) = reads_per_message(false);
    assert!(moved > 0, "compaction never moved the registry entry");
    assert!(without < 100.0, "the churn itself reads {without:.0} B per message");
    assert!(
        with <= without * 1.1 + 8.0,
        "with the registry entry {with:.0} B per message, without {without:.0} B"
    );
}

#[test]
fn the_entry_is_still_found_after_compaction_moved_it() {
    let mut f = Sim::boxed();
    let mut s: Store<&mut Sim, 16> = block_on(Store::mount(&mut *f, Config::new(128)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("sensor-17", URI)).unwrap();
    let moved_before = s.moved_records();
    for i in 0..3_000u32 {
        block_on(s.put(Key::command(i), &[&[1u8; 64]])).unwrap();
        if i >= 20 {
            block_on(s.remove(Key::command(i - 20))).unwrap();
        }
    }
    assert!(s.moved_records() > moved_before);
    let f = s.into_flash(); // power off; remount from the flash alone
    let mut s: Store<&mut Sim, 16> = block_on(Store::mount(&mut *f, Config::new(128)))
        .map_err(|e| e.1)
        .unwrap();
    let mut out = [Identity::default(); 4];
    let (n, more) = block_on(s.identities(&mut out)).unwrap();
    assert_eq!((n, more), (1, false));
    assert_eq!(out[0].keys, 20);
    assert_eq!(out[0].ns, Store::<&mut Sim, 16>::namespace_of("sensor-17", URI));
    let mut buf = [0u8; 256];
    let name = block_on(s.identity_name(out[0].ns, &mut buf))
        .unwrap()
        .expect("entry found");
    assert_eq!(
        (name.client_id, name.server_uri, name.truncated),
        ("sensor-17", URI, false)
    );
}
