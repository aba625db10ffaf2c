//! The main job on the embedded default, run on a host: a device is offline, persists a burst
//! of publishes to NOR flash (here a file-backed flash image), reboots, and replays them in
//! publish order once the link is back.
//!
//! `cargo run --example quickstart`

use std::mem::size_of_val;

use mqtt_persist::file_flash::FileFlash;
use mqtt_persist::flash::block_on;
use mqtt_persist::{Config, Key, KeyCursor, Store};

/// 64 erase pages of 4 KiB, read and write granularity 4 bytes: a typical SPI NOR partition.
type Flash = FileFlash<4096, 4, 4>;
const PAGES: usize = 64;
const BURST: u32 = 200;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("mqtt-persist-quickstart-{}.img", std::process::id()));
    let config = Config::new(512);

    // Boot 1: the link is down; every publish goes to flash before it is "sent".
    let flash = Flash::create(&path, PAGES)?;
    let mut store: Store<Flash, PAGES> = block_on(Store::mount(flash, config)).map_err(|(_, e)| e)?;
    block_on(store.open("sensor-17", "tcp://broker.local:1883"))?;
    for seq in 0..BURST {
        let topic = b"plant/line-3/temperature";
        let reading = format!("{{\"seq\":{seq},\"celsius\":{:.1}}}", 20.0 + (seq % 50) as f32 / 10.0);
        // Scatter-gather: topic length, topic and payload become one atomic record.
        block_on(store.put(Key::command(seq), &[&[topic.len() as u8], topic, reading.as_bytes()]))?;
    }
    let usage = store.usage();
    println!(
        "offline: persisted {BURST} publishes ({} bytes live, {} pages in the log)",
        usage.live_bytes, usage.log_pages
    );

    // RAM: the store struct and every operation's future, measured, not estimated (async
    // locals live in the future, so it is the operation's RAM).
    let mut buf = [0u8; 512];
    let mut keys = [Key::sent(0); 8];
    let mut cursor = KeyCursor::default();
    let put = size_of_val(&store.put(Key::command(0), &[b"x"]));
    let get = size_of_val(&store.get(Key::command(0), &mut buf));
    let remove = size_of_val(&store.remove(Key::command(0)));
    let remove_deferred = size_of_val(&store.remove_deferred(Key::command(0)));
    let flush = size_of_val(&store.flush());
    let close = size_of_val(&store.close());
    let clear = size_of_val(&store.clear());
    let keys_fut = size_of_val(&store.keys(&mut cursor, &mut keys));
    let contains = size_of_val(&store.contains(Key::command(0)));
    let futures = [
        ("put", put),
        ("get", get),
        ("remove", remove),
        ("remove_deferred", remove_deferred),
        ("flush", flush),
        ("close", close),
        ("clear", clear),
        ("keys", keys_fut),
        ("contains", contains),
    ];
    let largest = futures.iter().max_by_key(|f| f.1).unwrap();
    println!(
        "RAM: Store<_, {PAGES}> is {} bytes; largest operation future: {} ({} bytes); all: {}",
        size_of_val(&store) - size_of_val(store.flash()),
        largest.0,
        largest.1,
        futures
            .iter()
            .map(|(n, b)| format!("{n} {b}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Reboot: drop everything but the flash image.
    let flash = store.into_flash();
    drop(flash);
    let mut flash = Flash::open(&path)?;
    flash.reset_stats();
    let mut store: Store<Flash, PAGES> = block_on(Store::mount(flash, config)).map_err(|(_, e)| e)?;
    println!("reboot: mount report {:?}", store.mount_report());
    block_on(store.open("sensor-17", "tcp://broker.local:1883"))?;

    // Link is back: replay oldest first. Each acknowledged publish is removed (deferred: a
    // QoS 1 PUBACK may be redone after a crash, so its removal is batched).
    let mut replayed = 0u32;
    let mut cursor = KeyCursor::default();
    loop {
        let n = block_on(store.keys(&mut cursor, &mut keys))?;
        if n == 0 {
            break;
        }
        for &key in &keys[..n] {
            let value = block_on(store.get(key, &mut buf))?;
            let topic_len = value[0] as usize;
            let payload = std::str::from_utf8(&value[1 + topic_len..])?;
            assert_eq!(key, Key::command(replayed), "replay out of order");
            if replayed < 3 || replayed + 2 >= BURST {
                println!("  replay {key}: {payload}");
            } else if replayed == 3 {
                println!("  ...");
            }
            block_on(store.remove_deferred(key))?;
            replayed += 1;
        }
    }
    block_on(store.close())?;
    println!("replayed {replayed} of {BURST} publishes in publish order");

    let stats = store.flash().stats();
    println!(
        "flash after reboot: {} reads ({} bytes), {} writes ({} bytes), {} page erases",
        stats.reads, stats.read_bytes, stats.writes, stats.write_bytes, stats.erases
    );
    drop(store);
    std::fs::remove_file(&path)?;
    Ok(())
}
