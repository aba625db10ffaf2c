//! Damaged and foreign flash images: mount and every operation return a value or a typed error,
//! never panic and never return wrong data; damage is reported and confined to what it hit.

// Dropping a store without `close` is how these tests model a reboot: the point is that its
// RAM state (pending deferred removals, summaries) is lost, even though it has no `Drop` impl.
#![allow(clippy::drop_non_drop)]

use mqtt_persist::codec::CRC;
use mqtt_persist::flash::{SimFlash, SimFlashError, block_on};
use mqtt_persist::{Config, Error, GeometryError, Key, KeyCursor, Store};

type E = Error<SimFlashError>;
type Sim = SimFlash<1024, 8, 4, 4>;
const PAGE: usize = 1024;
const URI: &str = "tcp://broker:1883";

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so small seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.byte();
        }
    }
}

fn all_keys<F: embedded_storage_async::nor_flash::NorFlash, const N: usize>(
    s: &mut Store<F, N>,
) -> Result<Vec<Key>, Error<F::Error>> {
    let mut cur = KeyCursor::default();
    let mut v = Vec::new();
    let mut buf = [Key::sent(0); 6];
    for _ in 0..2000 {
        let n = block_on(s.keys(&mut cur, &mut buf))?;
        if n == 0 {
            return Ok(v);
        }
        v.extend_from_slice(&buf[..n]);
    }
    panic!("keys() does not end: {} keys so far", v.len());
}

/// Keys the tests use: every kind, ids that share low 16 bits across id-high contexts.
fn universe() -> Vec<Key> {
    let mut v: Vec<Key> = (1..=6).map(Key::sent).collect();
    v.extend([Key::pubrel(1), Key::received(7), Key::received(65535)]);
    v.extend([0u32, 1, 2, 65536, 65537, 70000, 131_072].map(Key::command));
    v.extend([0u32, 3, 0x2_0003, u32::MAX].map(Key::queued));
    v
}

/// Writes a realistic image: two clients, overwrites, removals, deferred removals, enough data
/// to wrap the ring a few times.
fn build_image<const P: usize, const N: usize, const R: usize, const W: usize>(seed: u64, max: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut f = SimFlash::<P, N, R, W>::boxed();
    let mut s: Store<&mut SimFlash<P, N, R, W>, N> = block_on(Store::mount(&mut *f, Config::new(max)))
        .map_err(|e| e.1)
        .unwrap();
    let keys = universe();
    for round in 0..6 {
        let who = if round % 3 == 2 { "other" } else { "dev" };
        block_on(s.open(who, URI)).unwrap();
        for _ in 0..40 {
            let k = keys[rng.below(keys.len())];
            match rng.below(10) {
                0 => {
                    let _ = block_on(s.remove(k));
                }
                1 => {
                    let _ = block_on(s.remove_deferred(k));
                }
                _ => {
                    let mut v = vec![0u8; rng.below(max + 1)];
                    rng.fill(&mut v);
                    match block_on(s.put(k, &[&v])) {
                        Ok(()) | Err(Error::Full) => {}
                        Err(e) => panic!("building image: {e:?}"),
                    }
                }
            }
        }
        block_on(s.close()).unwrap();
    }
    drop(s);
    f.as_bytes().to_vec()
}

/// Errors a damaged image may legitimately produce for an operation.
fn acceptable(e: &E, put: bool) -> bool {
    matches!(e, Error::Corrupted | Error::NotFound) || (put && *e == Error::Full)
}

/// Mounts `img` and runs every operation on it; panics (with `what`) on a panic-worthy result:
/// an untyped outcome, a wrong value, a flash rule broken by the store.
fn exercise<const P: usize, const N: usize, const R: usize, const W: usize>(img: &[u8], max: usize, what: &str) {
    let mut f = SimFlash::<P, N, R, W>::boxed();
    f.set_ecc(true);
    f.load_image(img);
    let mut s: Store<&mut SimFlash<P, N, R, W>, N> = match block_on(Store::mount(&mut *f, Config::new(max))) {
        Ok(s) => s,
        Err((_, e)) => {
            assert!(
                matches!(e, Error::Corrupted | Error::UnsupportedVersion { .. }),
                "{what}: mount: {e:?}"
            );
            return;
        }
    };
    let mut rng = Rng::new(img.len() as u64 ^ img[7] as u64);
    let keys = universe();
    let mut buf = vec![0u8; P];
    for who in ["dev", "other"] {
        block_on(s.open(who, URI)).unwrap();
        let listed = match all_keys(&mut s) {
            Ok(v) => v,
            Err(e) => {
                assert!(acceptable(&e, false), "{what}: keys: {e:?}");
                Vec::new()
            }
        };
        let mut seen = listed.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen.len(),
            listed.len(),
            "{what}: keys() listed a key twice: {listed:?}"
        );
        for &k in keys.iter().chain(&listed) {
            match block_on(s.get(k, &mut buf)) {
                Ok(v) => {
                    let len = v.len();
                    assert_eq!(block_on(s.len_of(k)), Ok(len), "{what}: len_of {k}");
                    assert_eq!(block_on(s.contains(k)), Ok(true), "{what}: contains {k}");
                }
                Err(Error::NotFound) => {
                    assert_eq!(block_on(s.contains(k)), Ok(false), "{what}: contains {k}");
                }
                Err(e) => assert!(acceptable(&e, false), "{what}: get {k}: {e:?}"),
            }
        }
        // Writes on top of the damage: what succeeds must read back exactly.
        for i in 0..12 {
            let k = keys[rng.below(keys.len())];
            match rng.below(4) {
                0 => match block_on(s.remove(k)) {
                    Ok(()) => assert_eq!(block_on(s.contains(k)), Ok(false), "{what}: removed {k}"),
                    // A damaged image can hold a log that covers every page with a full head
                    // page: no byte is left for a tombstone and compaction has nowhere to copy,
                    // so `Full` (nothing changed) is the right answer there and only there.
                    Err(E::Full) if s.usage().log_pages as usize == N => {}
                    Err(e) => assert!(acceptable(&e, false), "{what}: remove {k}: {e:?}"),
                },
                1 => match block_on(s.remove_deferred(k)) {
                    Ok(()) => assert_eq!(block_on(s.contains(k)), Ok(false), "{what}: deferred {k}"),
                    Err(e) => assert!(acceptable(&e, false), "{what}: remove_deferred {k}: {e:?}"),
                },
                _ => {
                    let mut v = vec![0u8; rng.below(max + 1)];
                    rng.fill(&mut v);
                    v.push(i);
                    v.truncate(max);
                    match block_on(s.put(k, &[&v])) {
                        Ok(()) => {
                            assert_eq!(block_on(s.get(k, &mut buf)), Ok(&v[..]), "{what}: read back {k}");
                        }
                        Err(e) => assert!(acceptable(&e, true), "{what}: put {k}: {e:?}"),
                    }
                }
            }
        }
        match block_on(s.close()) {
            Ok(()) => {}
            Err(e) => {
                assert!(acceptable(&e, true), "{what}: close: {e:?}");
                return;
            }
        }
    }
    // What the store wrote on the damaged image mounts again.
    drop(s);
    if let Err((_, e)) = block_on(Store::<_, N>::mount(&mut *f, Config::new(max))) {
        assert!(matches!(e, Error::Corrupted), "{what}: remount: {e:?}");
    }
}

fn random_images<const P: usize, const N: usize, const R: usize, const W: usize>(max: usize) {
    let clean = build_image::<P, N, R, W>(11, max);
    exercise::<P, N, R, W>(&clean, max, "clean image");
    for seed in 0..120u64 {
        let mut rng = Rng::new(seed);
        // Random bytes everywhere.
        let mut img = vec![0u8; P * N];
        rng.fill(&mut img);
        exercise::<P, N, R, W>(&img, max, &format!("random image, seed {seed}"));

        // A real image with a few random bytes changed.
        let mut img = clean.clone();
        for _ in 0..1 + rng.below(16) {
            let i = rng.below(img.len());
            img[i] = rng.byte();
        }
        exercise::<P, N, R, W>(&img, max, &format!("flipped bytes, seed {seed}"));

        // A real image whose page headers stay valid while the records behind an offset of
        // one page become random.
        let mut img = clean.clone();
        let p = rng.below(N);
        let from = 32 + rng.below(P - 32);
        rng.fill(&mut img[p * P + from..(p + 1) * P]);
        exercise::<P, N, R, W>(
            &img,
            max,
            &format!("random records in page {p} from {from}, seed {seed}"),
        );

        // Random words that decode as plausible tags, at word offsets.
        let mut img = clean.clone();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(img.len() / 4) * 4;
            let ty = 1 + rng.below(13) as u32;
            let word = (ty << 28) | (rng.next() as u32 & 0x0FFF_FFFF);
            img[at..at + 4].copy_from_slice(&word.to_le_bytes());
        }
        exercise::<P, N, R, W>(&img, max, &format!("random tags, seed {seed}"));
    }
}

#[test]
fn random_and_damaged_images_never_panic_1k_pages() {
    random_images::<1024, 8, 4, 4>(256);
}

#[test]
fn random_and_damaged_images_never_panic_512_byte_pages_byte_reads() {
    random_images::<512, 6, 1, 8>(128);
}

/// One client's store with `n` values of 48 distinctive bytes each, `c-0`..`c-{n-1}`, written in
/// order and never overwritten, so each value is in exactly one record.
fn distinct_values(n: u32) -> (Box<Sim>, Vec<(Key, Vec<u8>)>) {
    let mut f = Sim::boxed();
    f.set_ecc(true);
    let mut s: Store<&mut Sim, 8> = block_on(Store::mount(&mut *f, Config::new(256)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("dev", URI)).unwrap();
    let mut kv = Vec::new();
    for i in 0..n {
        // Ids across the id-high boundary, so context records are in play.
        let k = Key::command(65_520 + i);
        let mut v = format!("value of {k} ").into_bytes();
        v.resize(48, b'.');
        v[47] = i as u8;
        block_on(s.put(k, &[&v])).unwrap();
        kv.push((k, v));
    }
    block_on(s.close()).unwrap();
    drop(s);
    (f, kv)
}

fn page_of(img: &[u8], v: &[u8]) -> usize {
    let hits: Vec<usize> = img
        .windows(v.len())
        .enumerate()
        .filter(|(_, w)| *w == v)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "each value is stored once");
    hits[0] / PAGE
}

fn mount(f: &mut Sim) -> Store<&mut Sim, 8> {
    match block_on(Store::mount(f, Config::new(256))) {
        Ok(s) => s,
        Err((_, e)) => panic!("mount: {e:?}"),
    }
}

fn get(s: &mut Store<&mut Sim, 8>, k: Key) -> Result<Vec<u8>, E> {
    let mut buf = [0u8; 256];
    block_on(s.get(k, &mut buf)).map(|v| v.to_vec())
}

/// Writes enough other data to wrap the ring, so every old page is compacted.
fn churn(s: &mut Store<&mut Sim, 8>, rounds: u32) {
    for i in 0..rounds {
        block_on(s.put(Key::queued(i % 5), &[&[i as u8; 120]])).unwrap_or_else(|e| panic!("churn put {i}: {e:?}"));
    }
}

#[test]
fn a_garbage_page_inside_the_log_loses_only_its_own_records() {
    let (mut f, kv) = distinct_values(50);
    let pages: Vec<usize> = kv.iter().map(|(_, v)| page_of(f.as_bytes(), v)).collect();
    assert!(
        pages[0] == 0 && *pages.last().unwrap() >= 2,
        "values span at least 3 pages: {pages:?}"
    );
    let victim = 1;
    Rng::new(5).fill(&mut f.as_bytes_mut()[victim * PAGE..(victim + 1) * PAGE]);

    let mut s = mount(&mut f);
    let rep = s.mount_report();
    assert_eq!(rep.damaged_pages, 1, "{rep:?}");
    assert!(!rep.torn_tail, "{rep:?}");
    block_on(s.open("dev", URI)).unwrap();
    let survivors: Vec<Key> = kv
        .iter()
        .zip(&pages)
        .filter(|(_, p)| **p != victim)
        .map(|(kv, _)| kv.0)
        .collect();
    assert!(survivors.len() < kv.len());
    assert_eq!(all_keys(&mut s), Ok(survivors.clone()));
    for ((k, v), p) in kv.iter().zip(&pages) {
        if *p == victim {
            assert_eq!(get(&mut s, *k), Err(E::NotFound), "{k} was on the damaged page");
        } else {
            assert_eq!(get(&mut s, *k), Ok(v.clone()), "{k}");
        }
    }

    // The store keeps working across the damaged page, and the damage goes away with it.
    churn(&mut s, 150);
    for ((k, v), p) in kv.iter().zip(&pages) {
        let want = if *p == victim { Err(E::NotFound) } else { Ok(v.clone()) };
        assert_eq!(get(&mut s, *k), want, "{k} after compaction");
    }
    block_on(s.close()).unwrap();
    drop(s);
    let mut s = mount(&mut f);
    assert_eq!(s.mount_report().damaged_pages, 0);
    assert_eq!(s.mount_report().damaged_records, 0);
    block_on(s.open("dev", URI)).unwrap();
    let keys = all_keys(&mut s).unwrap();
    assert_eq!(&keys[..survivors.len()], &survivors[..]);
}

#[test]
fn a_broken_record_cuts_the_scan_of_its_page_only() {
    let (mut f, kv) = distinct_values(50);
    let img = f.as_bytes().to_vec();
    let pages: Vec<usize> = kv.iter().map(|(_, v)| page_of(&img, v)).collect();
    let victim = 1;
    let on_victim: Vec<usize> = (0..kv.len()).filter(|&i| pages[i] == victim).collect();
    assert!(on_victim.len() >= 6, "{pages:?}");
    // Zero the page from the tag of its fifth value on: an impossible tag, then nothing valid.
    let cut = on_victim[4];
    let at = img.windows(48).position(|w| w == &kv[cut].1[..]).unwrap() - 4;
    f.as_bytes_mut()[at..(victim + 1) * PAGE].fill(0);

    let mut s = mount(&mut f);
    let rep = s.mount_report();
    assert_eq!((rep.damaged_pages, rep.damaged_records), (0, 1), "{rep:?}");
    block_on(s.open("dev", URI)).unwrap();
    let lost = |i: usize| pages[i] == victim && i >= cut;
    let survivors: Vec<Key> = (0..kv.len()).filter(|&i| !lost(i)).map(|i| kv[i].0).collect();
    assert_eq!(all_keys(&mut s), Ok(survivors));
    for (i, (k, v)) in kv.iter().enumerate() {
        let want = if lost(i) { Err(E::NotFound) } else { Ok(v.clone()) };
        assert_eq!(get(&mut s, *k), want, "{k}");
    }
    churn(&mut s, 150);
    for (i, (k, v)) in kv.iter().enumerate() {
        let want = if lost(i) { Err(E::NotFound) } else { Ok(v.clone()) };
        assert_eq!(get(&mut s, *k), want, "{k} after compaction");
    }
}

/// Flips one data byte of the value of `kv[victim]` (which must not be in the head page).
fn flip_value_byte(f: &mut Sim, kv: &[(Key, Vec<u8>)], victim: usize) -> usize {
    let img = f.as_bytes();
    let at = img.windows(48).position(|w| w == &kv[victim].1[..]).unwrap();
    f.as_bytes_mut()[at + 20] ^= 0x01;
    at / PAGE
}

#[test]
fn a_bad_crc_makes_only_that_value_corrupted() {
    let (mut f, kv) = distinct_values(50);
    let victim = 20;
    let head = kv.iter().map(|(_, v)| page_of(f.as_bytes(), v)).max().unwrap();
    let page = flip_value_byte(&mut f, &kv, victim);
    assert!(page < head, "the damaged value is not in the head page");

    let mut s = mount(&mut f);
    assert_eq!(s.mount_report().damaged_pages, 0);
    block_on(s.open("dev", URI)).unwrap();
    let (vk, _) = kv[victim];
    assert_eq!(get(&mut s, vk), Err(E::Corrupted));
    // Corrupted is not BufferTooSmall and not a partial value: the buffer size does not matter.
    let mut exact = [0u8; 48];
    assert_eq!(block_on(s.get(vk, &mut exact)), Err(E::Corrupted));
    for (i, (k, v)) in kv.iter().enumerate() {
        if i != victim {
            assert_eq!(get(&mut s, *k), Ok(v.clone()), "{k}");
        }
    }
    let others: Vec<Key> = kv.iter().map(|(k, _)| *k).filter(|k| *k != vk).collect();
    let listed: Vec<Key> = all_keys(&mut s).unwrap().into_iter().filter(|k| *k != vk).collect();
    assert_eq!(listed, others);
    // The key can be repaired by writing it again.
    block_on(s.put(vk, &[b"fresh"])).unwrap();
    assert_eq!(get(&mut s, vk), Ok(b"fresh".to_vec()));
}

#[test]
fn a_corrupted_value_can_be_removed() {
    let (mut f, kv) = distinct_values(50);
    flip_value_byte(&mut f, &kv, 20);
    let mut s = mount(&mut f);
    block_on(s.open("dev", URI)).unwrap();
    let (vk, _) = kv[20];
    assert_eq!(block_on(s.remove(vk)), Ok(()));
    assert_eq!(get(&mut s, vk), Err(E::NotFound));
    churn(&mut s, 150);
    assert_eq!(get(&mut s, vk), Err(E::NotFound));
    assert_eq!(get(&mut s, kv[21].0), Ok(kv[21].1.clone()));
}

/// A value that fails its CRC must never come back as a good value: compaction has to check
/// the CRC of what it copies (all of it, up to the last byte's CRC) and not write the damaged
/// bytes under a fresh, valid CRC.
#[test]
fn compaction_never_turns_a_corrupted_value_into_a_valid_one() {
    let (mut f, kv) = distinct_values(50);
    flip_value_byte(&mut f, &kv, 20);
    let mut s = mount(&mut f);
    block_on(s.open("dev", URI)).unwrap();
    let (vk, _) = kv[20];
    assert_eq!(get(&mut s, vk), Err(E::Corrupted));
    let mut refused = 0;
    for i in 0..150u32 {
        // Whatever compaction does with the bad record, it must not hide it as good data.
        match block_on(s.put(Key::queued(i % 5), &[&[i as u8; 120]])) {
            Ok(()) => {}
            Err(E::Corrupted) => refused += 1,
            Err(e) => panic!("put {i}: {e:?}"),
        }
    }
    assert!(
        s.flash().stats().erases >= 8 || refused > 0,
        "compaction reached the damaged page (the ring wrapped, or puts were refused)"
    );
    let r = get(&mut s, vk);
    assert!(
        matches!(r, Err(Error::Corrupted) | Err(Error::NotFound)),
        "{vk} after compaction: {:?}",
        r.map(|v| String::from_utf8_lossy(&v).into_owned())
    );
    // Also across a remount (the copy would be in a page that is not CRC-checked at mount).
    drop(s);
    let mut s = mount(&mut f);
    block_on(s.open("dev", URI)).unwrap();
    let r = get(&mut s, vk);
    assert!(
        matches!(r, Err(Error::Corrupted) | Err(Error::NotFound)),
        "{vk} after remount: {r:?}"
    );
}

/// DESIGN.md section 13: "A damaged live value blocks compaction of its page: it is not copied,
/// compaction returns `Error::Corrupted`, and operations that need space fail until the key is
/// removed or overwritten." A refused put changes nothing; after the remove all is well again.
#[test]
fn a_corrupted_live_value_blocks_compaction_until_it_is_removed() {
    let (mut f, kv) = distinct_values(50);
    flip_value_byte(&mut f, &kv, 20);
    let mut s = mount(&mut f);
    block_on(s.open("dev", URI)).unwrap();
    let (vk, _) = kv[20];
    let mut last = [None; 5];
    let mut blocked = None;
    for i in 0..150u32 {
        let k = Key::queued(i % 5);
        match block_on(s.put(k, &[&[i as u8; 120]])) {
            Ok(()) => last[(i % 5) as usize] = Some(i),
            Err(E::Corrupted) => {
                blocked = Some(i);
                // Nothing changed: the key keeps its previous value.
                let want = last[(i % 5) as usize].map(|j| vec![j as u8; 120]).ok_or(E::NotFound);
                assert_eq!(get(&mut s, k), want, "{k} after a refused put");
                break;
            }
            Err(e) => panic!("put {i}: {e:?}"),
        }
    }
    assert!(
        blocked.is_some(),
        "compaction went through a page with a damaged live value"
    );
    assert_eq!(get(&mut s, vk), Err(E::Corrupted));
    assert_eq!(block_on(s.remove(vk)), Ok(()));
    for i in 0..150u32 {
        let r = block_on(s.put(Key::queued(i % 5), &[&[i as u8; 120]]));
        assert_eq!(r, Ok(()), "put {i} after the damaged key was removed");
    }
    assert!(s.flash().stats().erases >= 8, "the ring wrapped");
    for (i, (k, v)) in kv.iter().enumerate() {
        let want = if i == 20 { Err(E::NotFound) } else { Ok(v.clone()) };
        assert_eq!(get(&mut s, *k), want, "{k}");
    }
}

fn set_version(img: &mut [u8], page: usize, version: u8) {
    let h = &mut img[page * PAGE..page * PAGE + 32];
    assert_eq!(&h[0..4], b"MQPS");
    assert_eq!(h[4], mqtt_persist::codec::FORMAT_VERSION);
    h[4] = version;
    let crc = CRC.checksum(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn an_unknown_format_version_is_refused_without_writing() {
    let (mut f, kv) = distinct_values(50);
    let head = kv.iter().map(|(_, v)| page_of(f.as_bytes(), v)).max().unwrap();
    // Version 1 (record CRCs without the binding), version 2 (records aligned to WRITE_SIZE
    // only: misread where READ_SIZE is larger) and a future version are refused, not misread.
    for (page, version) in [(0, 4), (head, 4), (0, 1), (head, 1), (0, 2), (head, 2)] {
        let mut img = f.as_bytes().to_vec();
        set_version(&mut img, page, version);
        let mut g = Sim::boxed();
        g.set_ecc(true);
        g.load_image(&img);
        let before = g.stats();
        match block_on(Store::<_, 8>::mount(&mut *g, Config::new(256))) {
            Ok(_) => panic!("a version {version} page was mounted"),
            Err((_, e)) => assert_eq!(e, E::UnsupportedVersion { found: version }, "page {page}"),
        }
        assert_eq!(g.as_bytes(), &img[..], "page {page}: the image changed");
        let after = g.stats();
        assert_eq!((after.writes, after.erases), (before.writes, before.erases));
    }
    // The untouched image still mounts.
    let mut s = mount(&mut f);
    block_on(s.open("dev", URI)).unwrap();
    assert_eq!(get(&mut s, kv[0].0), Ok(kv[0].1.clone()));
}

#[test]
fn a_page_count_other_than_the_store_s_is_bad_geometry() {
    let mut f = Sim::boxed();
    f.as_bytes_mut()[5] = 0x12;
    let img = f.as_bytes().to_vec();
    match block_on(Store::<_, 6>::mount(&mut *f, Config::new(64))) {
        Ok(_) => panic!("8 pages mounted as 6"),
        Err((_, e)) => assert_eq!(
            e,
            E::BadGeometry(GeometryError::Capacity {
                flash_bytes: 8 * PAGE,
                expected: 6 * PAGE,
                page_size: PAGE,
            })
        ),
    }
    match block_on(Store::<_, 16>::mount(&mut *f, Config::new(64))) {
        Ok(_) => panic!("8 pages mounted as 16"),
        Err((_, e)) => assert_eq!(
            e,
            E::BadGeometry(GeometryError::Capacity {
                flash_bytes: 8 * PAGE,
                expected: 16 * PAGE,
                page_size: PAGE,
            })
        ),
    }
    // Nothing was read or written (SPEC section 2).
    assert_eq!(f.stats(), Default::default());
    assert_eq!(f.as_bytes(), &img[..]);
}

#[test]
fn a_value_limit_above_the_geometry_s_is_bad_geometry() {
    let limit = Store::<&mut Sim, 8>::max_value_limit();
    assert!(limit > PAGE / 2 && limit <= PAGE - 32, "limit {limit}");
    let mut f = Sim::boxed();
    match block_on(Store::<_, 8>::mount(&mut *f, Config::new(limit + 1))) {
        Ok(_) => panic!("limit + 1 accepted"),
        Err((_, e)) => assert_eq!(
            e,
            E::BadGeometry(GeometryError::ValueTooLarge {
                max_value_len: limit + 1,
                limit
            })
        ),
    }
    assert_eq!(f.stats(), Default::default());
    let mut s = block_on(Store::<_, 8>::mount(&mut *f, Config::new(limit)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("dev", URI)).unwrap();
    // The limit is the largest value an empty store takes with every reserve kept.
    assert!(s.charge_for(limit) <= s.usage().capacity_bytes, "{:?}", s.usage());
    block_on(s.put(Key::sent(1), &[&vec![3u8; limit]])).unwrap();
    let mut buf = vec![0u8; limit];
    assert_eq!(block_on(s.get(Key::sent(1), &mut buf)), Ok(&vec![3u8; limit][..]));
}

#[test]
fn unsupported_flash_geometries_are_bad_geometry() {
    fn refused<const P: usize, const N: usize, const R: usize, const W: usize>(why: GeometryError) {
        let mut f = SimFlash::<P, N, R, W>::boxed();
        match block_on(Store::<_, N>::mount(&mut *f, Config::new(16))) {
            Ok(_) => panic!("{P}x{N} read {R} write {W} mounted"),
            Err((_, e)) => assert_eq!(e, Error::BadGeometry(why), "{P}x{N} read {R} write {W}"),
        }
        assert_eq!(f.stats(), Default::default());
    }
    refused::<128, 8, 4, 4>(GeometryError::PageSize { page_size: 128 });
    refused::<1040, 8, 4, 4>(GeometryError::PageSize { page_size: 1040 });
    refused::<1024, 3, 4, 4>(GeometryError::PageCount { pages: 3 });
    refused::<1024, 8, 4, 64>(GeometryError::WriteSize { write_size: 64 });
    refused::<1536, 8, 4, 12>(GeometryError::WriteSize { write_size: 12 });
    refused::<1024, 8, 64, 4>(GeometryError::ReadSize { read_size: 64 });
}

/// The records of every page of a 4-byte-word image: (absolute offset, tag). Stops at the
/// first erased or invalid tag word of each page.
fn records(img: &[u8]) -> Vec<(usize, mqtt_persist::codec::Tag)> {
    let mut out = Vec::new();
    for p in 0..img.len() / PAGE {
        let page = &img[p * PAGE..(p + 1) * PAGE];
        if &page[0..4] != b"MQPS" {
            continue;
        }
        let mut off = 32;
        while off + 4 <= PAGE {
            let word = u32::from_le_bytes(page[off..off + 4].try_into().unwrap());
            let Ok(tag) = mqtt_persist::codec::Tag::decode(word) else {
                break;
            };
            out.push((p * PAGE + off, tag));
            off += mqtt_persist::codec::stored_len(tag.data_len(), 4);
        }
    }
    out
}

/// The data of removal and context records (Batch bitmaps, Namespace hashes) is applied by the
/// scan without its CRC. One flipped bit must not silently change which keys exist: either
/// every key reads as before, or the mount reports damage.
#[test]
fn a_flipped_bit_in_a_batch_removal_does_not_silently_bring_a_key_back() {
    let mut f = Sim::boxed();
    f.set_ecc(true);
    let mut s = mount(&mut f);
    block_on(s.open("dev", URI)).unwrap();
    for i in 1..=4u16 {
        block_on(s.put(Key::sent(i), &[format!("value {i}").as_bytes()])).unwrap();
    }
    block_on(s.remove_deferred(Key::sent(2))).unwrap();
    block_on(s.flush()).unwrap();
    churn(&mut s, 20); // the Batch record's page is no longer the head
    block_on(s.close()).unwrap();
    drop(s);

    let recs = records(f.as_bytes());
    let batches: Vec<_> = recs
        .iter()
        .filter(|(_, t)| t.ty == mqtt_persist::codec::RecordType::Batch)
        .collect();
    assert_eq!(batches.len(), 1);
    let (at, tag) = *batches[0];
    assert!(at / PAGE != recs.last().unwrap().0 / PAGE, "not in the head page");
    let data = at + 4;
    let base = u32::from_le_bytes(f.as_bytes()[data..data + 4].try_into().unwrap());
    assert!(tag.data_len() >= 8 && base <= 2);
    let bit = (2 - base) as usize;
    // Clear the bit that removes s-2: one flipped bit.
    f.as_bytes_mut()[data + 4 + bit / 8] ^= 1 << (bit % 8);

    let mut s = mount(&mut f);
    let rep = s.mount_report();
    block_on(s.open("dev", URI)).unwrap();
    let back = get(&mut s, Key::sent(2));
    assert!(
        back == Err(E::NotFound) || rep.damaged_records + rep.damaged_pages > 0,
        "s-2 was removed, came back as {:?} and the mount reported {rep:?}",
        back.map(|v| String::from_utf8_lossy(&v).into_owned())
    );
}

#[test]
fn a_flipped_bit_in_a_namespace_record_does_not_silently_hide_a_clients_keys() {
    let mut f = Sim::boxed();
    f.set_ecc(true);
    let mut s = mount(&mut f);
    for who in ["a", "b"] {
        block_on(s.open(who, URI)).unwrap();
        for i in 1..=3u16 {
            block_on(s.put(Key::sent(i), &[format!("{who} {i}").as_bytes()])).unwrap();
        }
        block_on(s.close()).unwrap();
    }
    block_on(s.open("a", URI)).unwrap();
    churn(&mut s, 20);
    block_on(s.close()).unwrap();
    drop(s);

    let hash = mqtt_persist::codec::namespace_hash("b", URI).to_le_bytes();
    let recs = records(f.as_bytes());
    let ns_recs: Vec<usize> = recs
        .iter()
        .filter(|(at, t)| t.ty == mqtt_persist::codec::RecordType::Namespace && f.as_bytes()[at + 4..at + 12] == hash)
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(ns_recs.len(), 1, "b's keys follow one Namespace record");
    assert!(
        ns_recs[0] / PAGE != recs.last().unwrap().0 / PAGE,
        "not in the head page"
    );
    f.as_bytes_mut()[ns_recs[0] + 4 + 3] ^= 0x04;

    let mut s = mount(&mut f);
    let rep = s.mount_report();
    block_on(s.open("b", URI)).unwrap();
    let damage = rep.damaged_records + rep.damaged_pages > 0;
    for i in 1..=3u16 {
        let r = get(&mut s, Key::sent(i));
        assert!(
            r == Ok(format!("b {i}").into_bytes()) || damage,
            "b's s-{i} read as {r:?} and the mount reported {rep:?}"
        );
    }
    block_on(s.close()).unwrap();
    block_on(s.open("a", URI)).unwrap();
    for i in 1..=3u16 {
        assert_eq!(get(&mut s, Key::sent(i)), Ok(format!("a {i}").into_bytes()));
    }
}

/// A flash that refuses every read (power gone, a bus fault, a driver error) is an error to
/// every operation, never a store with fewer keys: on ECC flash an unreadable word is garbage
/// only if the flash still answers elsewhere (DESIGN.md section 7). Found by the power_loss
/// fuzzer: a close whose Sync record was cut returned `Ok`, and `keys()` then listed nothing.
#[test]
fn a_flash_that_refuses_every_read_is_an_error_not_an_empty_store() {
    let (f, kv) = distinct_values(12);
    let img = f.as_bytes().to_vec();
    // How many writes and erases mount and open make on this image.
    let mut probe = Sim::boxed();
    probe.load_image(&img);
    probe.set_ecc(true);
    probe.set_torn_unreadable(true);
    let before = probe.ops();
    let mut s = mount(&mut probe);
    block_on(s.open("dev", URI)).unwrap();
    drop(s);
    let setup = probe.ops() - before;

    for (what, op) in [("put", 0u8), ("keys", 1), ("get", 2), ("contains", 3)] {
        let mut g = Sim::boxed();
        g.load_image(&img);
        g.set_ecc(true);
        g.set_torn_unreadable(true);
        // Power goes at the first write after mount and open: every read fails from then on.
        g.cut_power_at_op(Some(g.ops() + setup));
        let mut s = mount(&mut g);
        block_on(s.open("dev", URI)).unwrap();
        let r = block_on(s.put(Key::queued(7), &[&[0x5A; 40]]));
        assert_eq!(
            r,
            Err(Error::Flash(SimFlashError::PowerCut)),
            "{what}: put with the power cut"
        );
        match op {
            0 => assert_eq!(
                block_on(s.put(Key::queued(8), &[&[1; 8]])),
                Err(Error::Flash(SimFlashError::PowerCut)),
                "a second put"
            ),
            1 => {
                let mut cur = KeyCursor::default();
                let mut out = [Key::sent(0); 32];
                assert_eq!(
                    block_on(s.keys(&mut cur, &mut out)),
                    Err(Error::Flash(SimFlashError::PowerCut)),
                    "keys() on a flash that refuses every read"
                );
            }
            2 => assert_eq!(get(&mut s, kv[3].0), Err(Error::Flash(SimFlashError::PowerCut)), "get"),
            _ => assert_eq!(
                block_on(s.contains(kv[5].0)),
                Err(Error::Flash(SimFlashError::PowerCut)),
                "contains"
            ),
        }
        drop(s);
        // Power back: nothing was lost, every value reads as it was.
        g.restore_power();
        g.cut_power_at_op(None);
        let mut s = mount(&mut g);
        block_on(s.open("dev", URI)).unwrap();
        let keys = all_keys(&mut s).unwrap();
        assert_eq!(
            keys,
            kv.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            "{what}: keys after power is back"
        );
        for (k, v) in &kv {
            assert_eq!(get(&mut s, *k).as_ref(), Ok(v), "{what}: {k} after power is back");
        }
    }
}
