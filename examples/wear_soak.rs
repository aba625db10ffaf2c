//! Wear soak: over a million steady-state operations on the embedded default (64 erase pages of
//! 4 KiB, ECC flash, 64-byte values), then the erase count of every page. Fails (exit 1) if the
//! most-erased page has more than 2 erases over the least-erased one.
//!
//! Phase 1: put the newest message, remove the oldest, 50 in flight (removals alternate between
//! durable and deferred, as QoS 2 and QoS 1 acknowledgements would).
//! Phase 2: acknowledgements out of order: each step puts a new message and removes a random
//! one of the 50 in flight.
//! Then a remount checks that exactly the 50 in-flight messages are there.
//!
//! `cargo run --release --example wear_soak` (about a minute; `SOAK_OPS=200000` for a short run).

// `drop(store)` ends a session (a reboot) where the flash is used next; the store only borrows it.
#![allow(clippy::drop_non_drop)]

use std::time::Instant;

use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Key, KeyCursor, Store};

const PAGES: usize = 64;
type Flash = SimFlash<4096, PAGES, 4, 4>;
const IN_FLIGHT: u32 = 50;

fn value(seq: u32) -> [u8; 64] {
    let mut v = [0u8; 64];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (seq as usize * 31 + i * 7) as u8;
    }
    v
}

fn main() {
    let total_ops: u64 = std::env::var("SOAK_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let start = Instant::now();
    let mut flash = Flash::boxed();
    flash.set_ecc(true);
    let config = Config::new(512);
    let mut in_flight: Vec<u32> = Vec::new();
    let mut ops = 0u64;
    let mut seq = 0u32;
    {
        let mut s: Store<&mut Flash, PAGES> = block_on(Store::mount(&mut *flash, config)).expect("mount");
        block_on(s.open("soak", "tcp://broker:1883")).unwrap();
        // Phase 1: in order, 80% of the operations.
        while ops < total_ops * 4 / 5 {
            block_on(s.put(Key::command(seq), &[&value(seq)])).unwrap_or_else(|e| panic!("put {seq}: {e:?}"));
            in_flight.push(seq);
            ops += 1;
            if in_flight.len() > IN_FLIGHT as usize {
                let old = in_flight.remove(0);
                if old.is_multiple_of(2) {
                    block_on(s.remove(Key::command(old))).unwrap_or_else(|e| panic!("remove {old}: {e:?}"));
                } else {
                    block_on(s.remove_deferred(Key::command(old))).unwrap();
                }
                ops += 1;
            }
            seq += 1;
        }
        // Phase 2: out of order.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        while ops < total_ops {
            block_on(s.put(Key::command(seq), &[&value(seq)])).unwrap_or_else(|e| panic!("put {seq}: {e:?}"));
            in_flight.push(seq);
            ops += 1;
            seq += 1;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let old = in_flight.swap_remove((x % in_flight.len() as u64) as usize);
            if old.is_multiple_of(2) {
                block_on(s.remove(Key::command(old))).unwrap_or_else(|e| panic!("remove {old}: {e:?}"));
            } else {
                block_on(s.remove_deferred(Key::command(old))).unwrap();
            }
            ops += 1;
        }
        block_on(s.close()).unwrap();
    }
    // Remount: exactly the messages in flight, with their values.
    let mut s: Store<&mut Flash, PAGES> = block_on(Store::mount(&mut *flash, config)).expect("remount");
    block_on(s.open("soak", "tcp://broker:1883")).unwrap();
    let mut cur = KeyCursor::default();
    let mut keys = Vec::new();
    let mut buf = [Key::sent(0); 32];
    loop {
        let n = block_on(s.keys(&mut cur, &mut buf)).unwrap();
        if n == 0 {
            break;
        }
        keys.extend_from_slice(&buf[..n]);
    }
    let mut want: Vec<Key> = in_flight.iter().map(|&q| Key::command(q)).collect();
    want.sort();
    keys.sort();
    assert_eq!(keys, want, "the store does not hold exactly the messages in flight");
    let mut v = [0u8; 64];
    for &q in &in_flight {
        assert_eq!(block_on(s.get(Key::command(q), &mut v)).unwrap(), &value(q)[..]);
    }
    drop(s);

    let elapsed = start.elapsed();
    let erases: Vec<u64> = (0..PAGES).map(|p| flash.page_erases(p)).collect();
    let (min, max) = (*erases.iter().min().unwrap(), *erases.iter().max().unwrap());
    let stats = flash.stats();
    println!(
        "wear soak: {ops} operations ({seq} puts, 64-byte values, {IN_FLIGHT} in flight) on {PAGES} x 4 KiB ECC flash in {:.1} s",
        elapsed.as_secs_f64()
    );
    println!("erases per page:");
    for row in erases.chunks(16) {
        println!("  {}", row.iter().map(|e| format!("{e:5}")).collect::<String>());
    }
    println!(
        "wear: min {min} max {max} spread {} over {PAGES} pages; {} erases, {:.2} MB programmed, rewrites {}",
        max - min,
        stats.erases,
        stats.write_bytes as f64 / 1e6,
        stats.rewrites
    );
    if max - min > 2 {
        eprintln!("FAIL: uneven wear (spread {} > 2)", max - min);
        std::process::exit(1);
    }
}
