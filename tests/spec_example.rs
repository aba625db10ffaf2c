//! The worked example of docs/SPEC.md section 14, byte for byte: the bytes the document lists
//! for a header and a put are what the store writes to a fresh flash.

use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Key, Store};

/// `(offset, bytes)` of every `0xNN  HH HH ..  field` line in section 14 before the Sync
/// example.
fn spec_bytes() -> Vec<(usize, Vec<u8>)> {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/SPEC.md")).unwrap();
    let start = spec.find("## 14. Worked example").expect("section 14");
    let end = spec[start..]
        .find("**A Sync record**")
        .map_or(spec.len(), |e| start + e);
    let mut out = Vec::new();
    for line in spec[start..end].lines() {
        let Some(rest) = line.strip_prefix("0x") else { continue };
        let Ok(off) = usize::from_str_radix(&rest[..2], 16) else {
            continue;
        };
        // The bytes column: hex pairs up to the first run of two spaces after them.
        let cols = rest[2..].trim_start();
        let hex = cols.split("  ").next().unwrap_or("");
        let bytes: Vec<u8> = hex
            .split(' ')
            .filter(|h| h.len() == 2)
            .map_while(|h| u8::from_str_radix(h, 16).ok())
            .collect();
        if !bytes.is_empty() && !hex.contains("...") {
            out.push((off, bytes));
        }
    }
    out
}

#[test]
fn the_worked_example_is_what_the_store_writes() {
    let lines = spec_bytes();
    // magic, version, flags, id_high, seq, tail_seq, erase_count, namespace, crc; tag, data,
    // crc, padding.
    assert_eq!(lines.len(), 13, "the example's byte lines: {lines:?}");
    assert_eq!(
        lines[1],
        (0x04, vec![mqtt_persist::codec::FORMAT_VERSION]),
        "the example's version"
    );

    let mut f = SimFlash::<4096, 4, 1, 4>::boxed();
    let mut s: Store<_, 4> = block_on(Store::mount(&mut *f, Config::new(256)))
        .map_err(|e| e.1)
        .unwrap();
    // By hash, as the example says: `open` would write the registry entry first.
    block_on(s.open_namespace(mqtt_persist::codec::namespace_hash("dev-1", "tcp://broker:1883"))).unwrap();
    block_on(s.put(Key::command(70_000), &[b"hello"])).unwrap();
    let page = s.into_flash().page(0);
    let mut covered = 0;
    for (off, bytes) in &lines {
        assert_eq!(
            &page[*off..off + bytes.len()],
            &bytes[..],
            "SPEC section 14, offset {off:#04x}"
        );
        covered += bytes.len();
    }
    assert_eq!(covered, 0x30, "the example covers the header and the put record");
    assert!(page[0x30..].iter().all(|&b| b == 0xFF), "nothing else is written");
}
