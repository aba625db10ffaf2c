//! The image inspector (`mqtt-persist-inspect`) run as a binary on images made by the store:
//! clean, torn write, torn erase, damaged, random bytes; text and JSON output.

use std::path::PathBuf;
use std::process::Command;

use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Key, KeyCursor, Store};

type Sim = SimFlash<1024, 8, 4, 4>;
const N: usize = 8;

fn mount(flash: &mut Sim) -> Store<&mut Sim, N> {
    let mut s: Store<&mut Sim, N> = block_on(Store::mount(flash, Config::new(200)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("dev-a", "tcp://broker:1883")).unwrap();
    s
}

fn run(image: &[u8], name: &str, json: bool) -> String {
    run_paged(image, name, json, 1024)
}

fn run_paged(image: &[u8], name: &str, json: bool, page: usize) -> String {
    let path: PathBuf = std::env::temp_dir().join(format!("mqtt-persist-inspect-{}-{name}.bin", std::process::id()));
    std::fs::write(&path, image).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mqtt-persist-inspect"));
    cmd.arg(&path)
        .args(["--page-size", &page.to_string(), "--write-size", "4"]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    std::fs::remove_file(&path).ok();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{name}: exit {:?}\n{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn live_keys(s: &mut Store<&mut Sim, N>) -> Vec<Key> {
    let mut cur = KeyCursor::default();
    let mut v = Vec::new();
    let mut buf = [Key::sent(0); 32];
    loop {
        let n = block_on(s.keys(&mut cur, &mut buf)).unwrap();
        if n == 0 {
            return v;
        }
        v.extend_from_slice(&buf[..n]);
    }
}

/// A store with puts (some spanning pages), removals, a batch and a second namespace, enough to
/// wrap the ring once.
fn workload(flash: &mut Sim) -> Vec<Key> {
    let mut s = mount(flash);
    for i in 0..90u32 {
        let k = if i % 2 == 0 {
            Key::command(70_000 + i)
        } else {
            Key::sent(i as u16)
        };
        block_on(s.put(k, &[&vec![i as u8; 20 + (i as usize * 7) % 180]])).unwrap();
        if i >= 12 {
            let j = i - 12;
            match j % 4 {
                0 | 2 => block_on(s.remove(Key::command(70_000 + j))).unwrap(),
                1 => block_on(s.remove_deferred(Key::sent(j as u16))).unwrap(),
                _ => block_on(s.remove(Key::sent(j as u16))).unwrap(),
            }
        }
    }
    block_on(s.close()).unwrap();
    block_on(s.open("dev-b", "tcp://broker:1883")).unwrap();
    block_on(s.put(Key::queued(5), &[b"other client"])).unwrap();
    block_on(s.close()).unwrap();
    block_on(s.open("dev-a", "tcp://broker:1883")).unwrap();
    live_keys(&mut s)
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[test]
fn clean_image_lists_every_page_record_and_live_key() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    let keys = workload(&mut flash);
    assert!(flash.stats().erases > 0, "the workload should wrap the ring");
    let text = run(flash.as_bytes(), "clean", false);

    assert!(text.contains("corruption: none"), "{text}");
    for p in 0..N {
        assert!(text.contains(&format!("\npage {p}: ")), "page {p} missing:\n{text}");
    }
    // Record count: the total line matches the record lines.
    let records = text.lines().filter(|l| l.starts_with("  @")).count();
    let total = line_with(&text, "total: ");
    assert!(total.starts_with(&format!("total: {records} records;")), "{total}");
    // Live keys of the first client: exactly what the store lists, in its order, in Paho form.
    let ns_a = mqtt_persist::codec::namespace_hash("dev-a", "tcp://broker:1883");
    let line = line_with(&text, &format!("live keys ns {ns_a:#018x} ({})", keys.len()));
    let listed: Vec<&str> = line
        .split(": ")
        .nth(1)
        .unwrap()
        .split(", ")
        .map(|k| k.split(' ').next().unwrap())
        .collect();
    let want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(listed, want);
    assert!(listed.contains(&"c-70088"), "{line}");
    // The other client's key, resolved through a namespace record.
    let ns_b = mqtt_persist::codec::namespace_hash("dev-b", "tcp://broker:1883");
    assert!(
        text.contains(&format!("live keys ns {ns_b:#018x} (1): q-5 (12 bytes)")),
        "{text}"
    );
    // Record lines: type, Paho key, CRC, liveness.
    assert!(
        text.lines()
            .any(|l| l.contains(" put ") && l.contains("c-70088") && l.contains("crc ok  live"))
    );
    assert!(
        text.lines().any(|l| l.contains(" tombstone ") && l.contains(" c-700")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.contains(" batch ")), "{text}");
    assert!(text.lines().any(|l| l.contains(" id-high ")), "{text}");
    assert!(text.contains("[head]"));
}

#[test]
fn torn_write_is_reported_as_interrupted_and_its_key_is_not_live() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    {
        let mut s = mount(&mut flash);
        for i in 0..3u32 {
            block_on(s.put(Key::command(70_000 + i), &[&[i as u8; 100]])).unwrap();
        }
    }
    // The cut lands in the record of the next put (the head page has room for it).
    flash.cut_power_after(Some(60));
    {
        let mut s = mount(&mut flash);
        assert!(block_on(s.put(Key::sent(999), &[&[0x42; 150]])).is_err());
    }
    flash.restore_power();
    let text = run(flash.as_bytes(), "torn-write", false);
    let line = line_with(&text, "interrupted write");
    assert!(line.contains(": interrupted: "), "{line}");
    assert!(!line.contains("DAMAGE"));
    assert!(
        text.contains("corruption: 0 damaged, 1 from interrupted operations"),
        "{text}"
    );
    assert!(!text.contains("s-999"), "the torn put must not be listed:\n{text}");
    // The store agrees.
    let mut s = mount(&mut flash);
    assert!(s.mount_report().torn_tail);
    assert_eq!(block_on(s.contains(Key::sent(999))), Ok(false));
}

#[test]
fn torn_erase_leaves_a_garbage_page() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    workload(&mut flash);
    let image = flash.as_bytes().to_vec();
    // Cut at successive flash operations of more puts until the cut tears an erase.
    let mut found = None;
    for k in 0..400 {
        let mut f = Sim::boxed();
        f.set_ecc(true);
        f.load_image(&image);
        f.set_seed(k);
        f.cut_power_at_op(Some(k));
        {
            let mut s = mount(&mut f);
            for i in 0..100u32 {
                if block_on(s.put(Key::command(i), &[&[7u8; 150]])).is_err() {
                    break;
                }
            }
        }
        if f.stats().erases > 0 {
            f.restore_power();
            found = Some(f);
            break;
        }
    }
    let f = found.expect("no cut tore an erase");
    let text = run(f.as_bytes(), "torn-erase", false);
    let line = line_with(&text, ": garbage");
    assert!(line.starts_with("page "), "{line}");
    assert!(
        text.contains("garbage outside the log (a torn erase or stale data)"),
        "{text}"
    );
    assert!(!text.contains("DAMAGE"), "a torn erase is not damage:\n{text}");
}

#[test]
fn damaged_record_is_reported_with_its_place() {
    let mut flash = Sim::boxed();
    workload(&mut flash);
    // Flip a data byte of the first put of the oldest log page that is still live, in a page
    // that is not the head: the store would return Corrupted for it.
    let json = run(flash.as_bytes(), "before-damage", true);
    let at = json.find("\"live\":true").expect("a live record");
    let rec = &json[json[..at].rfind('{').unwrap()..at];
    let off: usize = rec
        .split("\"offset\":")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let page_part = &json[..at];
    let page: usize = page_part
        .rsplit("{\"index\":")
        .next()
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    flash.as_bytes_mut()[page * 1024 + off + 5] ^= 0x01;
    let text = run(flash.as_bytes(), "damaged", false);
    let line = line_with(&text, "DAMAGE");
    assert!(
        line.contains(&format!("page {page} @{off}: DAMAGE: put ")) && line.contains("get returns Corrupted"),
        "{line}"
    );
}

#[test]
fn random_bytes_give_a_report() {
    let mut x = 0x1234_5678_9ABC_DEF1u64;
    let image: Vec<u8> = (0..N * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let text = run(&image, "random", false);
    assert!(text.contains("log: empty (no valid page header)"), "{text}");
    assert_eq!(text.lines().filter(|l| l.ends_with(": garbage")).count(), N, "{text}");
    assert!(text.contains("live keys: none"));
    // Odd sizes and a header that passes its CRC over random records.
    let mut odd = image[..3000].to_vec();
    let h = mqtt_persist::codec::PageHeader {
        seq: 7,
        tail_seq: 1,
        erase_count: 3,
        namespace: 1,
        id_high: 0,
        prev_torn: true,
    };
    odd[1024..1056].copy_from_slice(&h.encode());
    let text = run(&odd, "odd", false);
    assert!(text.contains("is not a multiple of the page size"), "{text}");
    assert!(text.contains("page 1: valid seq=7"), "{text}");
    let json = run(&odd, "odd", true);
    check_json(&json);
}

#[test]
fn json_output_is_well_formed_and_complete() {
    let mut flash = Sim::boxed();
    let keys = workload(&mut flash);
    let json = run(flash.as_bytes(), "json", true);
    check_json(&json);
    assert!(json.starts_with("{\"image_bytes\":8192,\"page_size\":1024,\"write_size\":4,\"page_count\":8,"));
    for k in &keys {
        assert!(
            json.contains(&format!("\"key\":\"{k}\",\"len\":")),
            "{k} not in live_keys"
        );
    }
    assert!(json.contains("\"type\":\"put\",\"key\":\"c-70088\""));
    assert!(json.contains("\"corruption\":[]"));
}

/// A minimal JSON well-formedness check (objects, arrays, strings, numbers, literals).
fn check_json(s: &str) {
    fn value(b: &[u8], i: &mut usize) {
        skip(b, i);
        match b[*i] {
            b'{' => {
                *i += 1;
                skip(b, i);
                if b[*i] == b'}' {
                    *i += 1;
                    return;
                }
                loop {
                    skip(b, i);
                    string(b, i);
                    skip(b, i);
                    assert_eq!(b[*i], b':', "at {i}");
                    *i += 1;
                    value(b, i);
                    skip(b, i);
                    match b[*i] {
                        b',' => *i += 1,
                        b'}' => {
                            *i += 1;
                            return;
                        }
                        c => panic!("unexpected {:?} at {i}", c as char),
                    }
                }
            }
            b'[' => {
                *i += 1;
                skip(b, i);
                if b[*i] == b']' {
                    *i += 1;
                    return;
                }
                loop {
                    value(b, i);
                    skip(b, i);
                    match b[*i] {
                        b',' => *i += 1,
                        b']' => {
                            *i += 1;
                            return;
                        }
                        c => panic!("unexpected {:?} at {i}", c as char),
                    }
                }
            }
            b'"' => string(b, i),
            b't' | b'f' | b'n' => {
                let rest = std::str::from_utf8(&b[*i..]).unwrap();
                let lit = ["true", "false", "null"]
                    .into_iter()
                    .find(|l| rest.starts_with(l))
                    .unwrap();
                *i += lit.len();
            }
            _ => {
                let start = *i;
                while *i < b.len() && (b[*i].is_ascii_digit() || b"-+.eE".contains(&b[*i])) {
                    *i += 1;
                }
                assert!(*i > start, "bad value at {start}");
            }
        }
    }
    fn string(b: &[u8], i: &mut usize) {
        assert_eq!(b[*i], b'"', "string expected at {i}");
        *i += 1;
        while b[*i] != b'"' {
            if b[*i] == b'\\' {
                *i += 1;
            }
            *i += 1;
        }
        *i += 1;
    }
    fn skip(b: &[u8], i: &mut usize) {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }
    let b = s.as_bytes();
    let mut i = 0;
    value(b, &mut i);
    skip(b, &mut i);
    assert_eq!(i, b.len(), "trailing data after JSON");
}

#[test]
fn identities_are_printed_with_their_registered_names() {
    let mut flash = SimFlash::<4096, 8, 4, 4>::boxed();
    {
        let mut s: Store<_, 8> = block_on(Store::mount(&mut *flash, Config::new(200)))
            .map_err(|e| e.1)
            .unwrap();
        block_on(s.open("dev-1", "tcp://localhost:1883")).unwrap();
        for i in 0..27 {
            block_on(s.put(Key::command(i), &[b"reading"])).unwrap();
        }
        block_on(s.close()).unwrap();
        block_on(s.open_namespace(0xABCD)).unwrap();
        block_on(s.put(Key::command(1), &[b"x"])).unwrap();
        block_on(s.close()).unwrap();
    }
    let text = run_paged(flash.as_bytes(), "identities", false, 4096);
    let ns = mqtt_persist::codec::namespace_hash("dev-1", "tcp://localhost:1883");
    assert!(
        text.contains(&format!(
            "identity ns {ns:#018x}: client \"dev-1\" server \"tcp://localhost:1883\", 27 keys, 189 bytes"
        )),
        "{text}"
    );
    assert!(
        text.contains("identity ns 0x000000000000abcd: unnamed (no registry entry), 1 keys, 1 bytes"),
        "{text}"
    );
    let json = run_paged(flash.as_bytes(), "identities-json", true, 4096);
    check_json(&json);
    assert!(
        json.contains(&format!(
            "{{\"namespace\":\"{ns:#018x}\",\"client_id\":\"dev-1\",\"server_uri\":\"tcp://localhost:1883\",\"truncated\":false,\"keys\":27}}"
        )),
        "{json}"
    );
}
