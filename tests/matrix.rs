//! The geometry matrix (issue 8): every kind of geometry the store accepts, ECC on (torn words
//! unreadable until erase, as on STM32L4/H7) and off, `max_value_len` from small to the limit.
//!
//! Two parts per geometry:
//! - the fuzz harness's model-based workloads (`tests/support/harness.rs`: every operation
//!   against a model, remounts, 1 to 3 power cuts at operations or at byte positions, the
//!   admission rule and old-or-new checked at every step), from seeded inputs;
//! - fill-to-full and drain cycles with 2 to 5 power cuts in a row (during the operation and
//!   during the first writes after each remount), then the liveness guarantees: every
//!   acknowledged value readable, every removal accepted (never `Full`), and the emptied store
//!   takes a value of `max_value_len`; again after remounting with a smaller `max_value_len`.
//!
//! Bounded: 8 rounds per geometry and value size (`STORE_MATRIX=quick`: one, `STORE_MATRIX=64`:
//! 64, `STORE_MATRIX=full`: 200).

#[path = "common/checked.rs"]
mod checked;
#[path = "support/harness.rs"]
mod harness;

use std::collections::BTreeMap;

use checked::Checked;
use mqtt_persist::flash::{SimFlash, SimFlashError, block_on};
use mqtt_persist::{Config, Error, Key, Store};

fn scale() -> u64 {
    match std::env::var("STORE_MATRIX").as_deref() {
        Ok("quick") => 1,
        // The whole matrix: 200 rounds, about 6 minutes on 2 cores (DESIGN.md section 13).
        Ok("full") => 200,
        Ok(n) => n
            .parse()
            .unwrap_or_else(|_| panic!("STORE_MATRIX={n}: expected quick, full or a round count")),
        Err(_) => 8,
    }
}

/// splitmix64-seeded xorshift64.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
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
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The harness's workloads on every geometry it knows (the matrix's page sizes, write sizes and
/// page counts), ECC on and off, with and without power cuts.
#[test]
fn model_workloads_on_every_geometry() {
    let per = 3 * scale();
    let mut runs = 0;
    for g in 0..harness::GEOMETRIES {
        for ecc in [false, true] {
            for i in 0..per {
                let mut rng = Rng::new(((g as u64) << 32) | ((ecc as u64) << 16) | i);
                let len = 400 + rng.below(1600) as usize;
                let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                data[0] = g | if ecc { 0x80 } else { 0 };
                eprintln!("geometry {g} ecc {ecc} input {i}");
                if let Some(dir) = std::env::var_os("MATRIX_DUMP") {
                    std::fs::write(
                        std::path::Path::new(&dir).join(format!("g{g}-e{}-i{i}", ecc as u8)),
                        &data,
                    )
                    .unwrap();
                }
                harness::ops(&data);
                eprintln!("geometry {g} ecc {ecc} input {i}: power_loss");
                harness::power_loss(&data);
                runs += 2;
            }
        }
    }
    assert_eq!(runs, harness::GEOMETRIES as u64 * 2 * per * 2);
}

/// What a cycle ends with: the values acknowledged (key -> value), and the key whose operation
/// a cut interrupted with the value it may have now (old or new).
struct State {
    acked: BTreeMap<Key, Vec<u8>>,
    maybe: Option<(Key, Option<Vec<u8>>)>,
}

fn value(key: Key, round: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(key.id() as u64 ^ (round << 40) ^ len as u64);
    (0..len).map(|_| rng.next() as u8).collect()
}

fn mount<F: embedded_storage_async::nor_flash::NorFlash<Error = SimFlashError>, const N: usize>(
    flash: F,
    max: usize,
    ctx: &str,
) -> Store<F, N> {
    let mut s = match block_on(Store::<F, N>::mount(flash, Config::new(max))) {
        Ok(s) => s,
        Err((_, e)) => panic!("{ctx}: mount: {e:?}"),
    };
    // By hash: no identity registry entry (an open by name writes one, which a cut armed
    // before the mount would hit; tests/power_loss.rs covers that), so every byte of the
    // space model is the workload's.
    let ns = Store::<F, N>::namespace_of("dev-m", "tcp://matrix:1883");
    block_on(s.open_namespace(ns)).unwrap_or_else(|e| panic!("{ctx}: open: {e:?}"));
    s
}

/// Checks the store against `st`: every acknowledged key has its value, the interrupted one
/// old or new, nothing else exists among `universe`.
fn check<F: embedded_storage_async::nor_flash::NorFlash<Error = SimFlashError>, const N: usize>(
    s: &mut Store<F, N>,
    st: &State,
    universe: &[Key],
    max: usize,
    ctx: &str,
) -> BTreeMap<Key, Vec<u8>> {
    let mut buf = vec![0u8; max.max(1)];
    let mut now = BTreeMap::new();
    for &k in universe {
        let got = match block_on(s.get(k, &mut buf)) {
            Ok(v) => Some(v.to_vec()),
            Err(Error::NotFound) => None,
            Err(e) => panic!("{ctx}: get {k}: {e:?}"),
        };
        match &st.maybe {
            Some((mk, new)) if *mk == k => {
                let old = st.acked.get(&k);
                assert!(
                    got.as_ref() == old || got == *new,
                    "{ctx}: {k} after the interrupted operation is neither old nor new"
                );
            }
            _ => assert_eq!(got.as_ref(), st.acked.get(&k), "{ctx}: {k}"),
        }
        if let Some(v) = got {
            now.insert(k, v);
        }
    }
    now
}

/// Arms the next power cut: at the `k`-th write or erase from now, or after a random number of
/// programmed bytes (a torn write at byte granularity).
fn arm<const P: usize, const N: usize, const R: usize, const W: usize>(
    f: &mut SimFlash<P, N, R, W>,
    rng: &mut Rng,
    k: u64,
    w: usize,
) {
    if rng.below(2) == 0 {
        f.cut_power_at_op(Some(k));
    } else {
        f.cut_power_after(Some(k * 16 + rng.below(3 * w as u64 + 64)));
    }
}

/// Fill until `Full` (values between a quarter of `max` and `max`), then remove every other
/// key and fill again, with 2 to 5 power cuts in a row at a random point; then drain: every
/// removal accepted, the empty store takes a `max` value.
/// Returns the power cuts made and the puts refused below capacity in a degraded store.
fn cycles<const P: usize, const N: usize, const R: usize, const W: usize>(ecc: bool, storm: bool) -> (u64, u64) {
    let (mut all_cuts, mut all_degraded) = (0u64, 0u64);
    let limit = Store::<Checked<&mut SimFlash<P, N, R, W>>, N>::max_value_limit();
    assert!(limit > 0, "{P}x{N} W{W}: accepted geometry holds no value");
    // The capacity never grows with the value limit, and always holds one value of the limit.
    let mut last = u64::MAX;
    for max in [1, limit / 8, limit / 4, limit / 2, limit - limit / 8, limit] {
        let max = max.max(1);
        let mut flash = SimFlash::<P, N, R, W>::boxed();
        let s = mount::<_, N>(Checked::new(&mut *flash), max, "capacity");
        let cap = s.usage().capacity_bytes;
        assert!(
            cap <= last,
            "{P}x{N} W{W}: capacity {cap} for max {max} above {last} for a smaller max"
        );
        assert!(
            s.charge_for(max) <= cap,
            "{P}x{N} W{W}: capacity {cap} holds no value of {max}"
        );
        last = cap;
    }
    let universe: Vec<Key> = (0..400u32).map(|i| Key::queued(i * 65_521)).collect();
    for (c, max) in [limit, (limit / 4).max(1), limit / 2 + 1].into_iter().enumerate() {
        for round in 0..scale() {
            let ctx = format!("{P}x{N} R{R} W{W} ecc={ecc} max={max} round {round}");
            let mut rng = Rng::new(
                ((P as u64) << 40) ^ ((N as u64) << 24) ^ ((W as u64) << 8) ^ (c as u64) ^ (round << 50) ^ ecc as u64,
            );
            let mut flash = SimFlash::<P, N, R, W>::boxed();
            flash.set_ecc(ecc);
            flash.set_torn_unreadable(ecc);
            flash.set_seed(rng.next());
            let mut st = State {
                acked: BTreeMap::new(),
                maybe: None,
            };
            let mut next_key = 0usize;
            // 2 to 5 cuts in a row: the first somewhere in the workload, each next one within the
            // first few writes after the remount that recovered from the previous one.
            // A storm: 6 to 16 cuts in a row, most of them inside one head page.
            let mut cuts_left = if storm { 6 + rng.below(11) } else { 2 + rng.below(4) };
            let k = 10 + rng.below(300);
            // A storm starts at the first `Full`, when the head page is mixed and the store full.
            if !storm {
                arm(&mut flash, &mut rng, k, W);
            }
            let mut s = mount::<_, N>(Checked::new(&mut *flash), max, &ctx);
            let mut op = 0u64;
            let mut full_seen = 0;
            let mut cuts_done = 0;
            let mut degraded_seen = 0u32;
            // Bounded: at most 4,000 operations per cycle.
            while op < 4_000 && full_seen < 3 {
                op += 1;
                // Mostly puts while filling, more removals once full.
                let remove = !st.acked.is_empty() && rng.below(100) < if full_seen > 0 { 60 } else { 25 };
                let (key, r, new) = if remove {
                    let i = rng.below(st.acked.len() as u64) as usize;
                    let k = *st.acked.keys().nth(i).unwrap();
                    (k, block_on(s.remove(k)), None)
                } else {
                    let k = universe[next_key % universe.len()];
                    next_key += 1;
                    let len = (max / 4 + rng.below((max - max / 4 + 1) as u64) as usize).min(max);
                    let v = value(k, op, len);
                    let r = block_on(s.put(k, &[&v]));
                    (k, r, Some(v))
                };
                match r {
                    Ok(()) => {
                        match new {
                            Some(v) => st.acked.insert(key, v),
                            None => st.acked.remove(&key),
                        };
                    }
                    Err(Error::Full) if new.is_some() => {
                        let u = s.usage();
                        let len = new.as_ref().map_or(0, |v| v.len());
                        if u.degraded && u.live_bytes + u.damaged_bytes + s.charge_for(len) <= u.capacity_bytes {
                            degraded_seen += 1;
                        }
                        assert!(
                            u.live_bytes + u.damaged_bytes + s.charge_for(len) > u.capacity_bytes
                                || (storm && u.degraded),
                            "{ctx} op {op}: put of {len} refused with {u:?} (powered: {})",
                            s.flash().inner.is_powered()
                        );
                        full_seen += 1;
                        if storm && full_seen == 1 {
                            // Remount (nothing is pending: removals here are durable) to arm.
                            let inner = s.into_flash().inner;
                            let k = rng.below(20);
                            arm(inner, &mut rng, k, W);
                            s = mount::<_, N>(Checked::new(inner), max, &ctx);
                        }
                    }
                    Err(Error::Flash(SimFlashError::PowerCut)) => {
                        if std::env::var_os("MATRIX_TRACE").is_some() {
                            eprintln!(
                                "{ctx} op {op}: cut during {} {key}, usage {:?}",
                                if remove { "remove" } else { "put" },
                                s.usage()
                            );
                        }
                        st.maybe = Some((key, new));
                        let checked = s.into_flash();
                        let bad = checked.bad_accesses();
                        assert!(bad.is_empty(), "{ctx}: {bad:?}");
                        let inner = checked.inner;
                        inner.restore_power();
                        cuts_left -= 1;
                        cuts_done += 1;
                        if cuts_left > 0 {
                            let k = rng.below(4);
                            arm(inner, &mut rng, k, W);
                        } else {
                            inner.cut_power_at_op(None);
                            inner.cut_power_after(None);
                        }
                        s = mount::<_, N>(Checked::new(inner), max, &ctx);
                        st.acked = check(&mut s, &st, &universe, max, &ctx);
                        st.maybe = None;
                    }
                    Err(e) => panic!("{ctx} op {op}: {} {key}: {e:?}", if remove { "remove" } else { "put" }),
                }
            }
            let used = s.usage().live_bytes;
            let damaged = s.usage().damaged_bytes;
            if cuts_done == 0 && !storm {
                // No cut and no remount happened: nothing is damaged (a remount resumes behind
                // a Sync record, which is damage: the mount cannot tell it from a cut).
                assert_eq!(damaged, 0, "{ctx}: damage without a cut");
            }
            let checked = s.into_flash();
            let bad = checked.bad_accesses();
            assert!(bad.is_empty(), "{ctx}: {bad:?}");
            let inner = checked.inner;
            inner.cut_power_at_op(None);
            inner.cut_power_after(None);
            assert!(full_seen > 0 || op >= 4_000, "{ctx}: never reached Full");
            // A clean remount, then every removal accepted and the empty store takes `max`.
            let mut s = mount::<_, N>(Checked::new(inner), max, &ctx);
            let now = check(&mut s, &st, &universe, max, &ctx);
            // Charges are exact: the same from the running count and from the flash, and at least
            // the values' own (pages with live data are also charged their context records).
            assert_eq!(s.usage().live_bytes, used, "{ctx}: usage changed across a remount");
            assert_eq!(
                s.usage().damaged_bytes,
                damaged,
                "{ctx}: damage changed across a remount"
            );
            assert!(
                used >= now.values().map(|v| s.charge_for(v.len())).sum::<u64>(),
                "{ctx}"
            );
            for &k in now.keys() {
                assert_eq!(block_on(s.remove(k)), Ok(()), "{ctx}: remove {k} on a drained store");
            }
            assert_eq!(block_on(s.flush()), Ok(()), "{ctx}");
            let big = value(Key::queued(1), 99, max);
            if std::env::var_os("MATRIX_TRACE").is_some() {
                eprintln!(
                    "{ctx}: drained, usage {:?}, pending {}, charge {}",
                    s.usage(),
                    s.pending_removals(),
                    s.charge_for(max)
                );
            }
            assert_eq!(
                block_on(s.put(Key::queued(1), &[&big])),
                Ok(()),
                "{ctx}: empty store refuses a value of max_value_len"
            );
            assert_eq!(block_on(s.clear()), Ok(()), "{ctx}");
            assert_eq!(block_on(s.close()), Ok(()), "{ctx}");
            let bad = s.flash().bad_accesses();
            assert!(bad.is_empty(), "{ctx}: {bad:?}");
            let stats = s.into_flash().inner.stats();
            assert_eq!(stats.rewrites, 0, "{ctx}: a word programmed twice between erases");
            all_cuts += cuts_done;
            all_degraded += degraded_seen as u64;
        }
    }
    (all_cuts, all_degraded)
}

macro_rules! matrix {
    ($($name:ident: $p:expr, $n:expr, $r:expr, $w:expr;)*) => {
        $(
            #[test]
            fn $name() {
                for ecc in [false, true] {
                    let (cuts, degraded) = cycles::<$p, $n, $r, $w>(ecc, false);
                    assert_eq!(degraded, 0, "{} ecc {ecc}: refused below capacity", stringify!($name));
                    assert!(cuts > 0, "no power cut");
                }
            }
        )*
    };
}

// Page sizes 512 B to 128 KiB, WRITE_SIZE 1 to 32, READ_SIZE 1, the write size or above it, 4 to 64 pages.
matrix! {
    cycles_512x4_w1: 512, 4, 1, 1;
    cycles_512x4_w8: 512, 4, 1, 8;
    cycles_512x8_w8: 512, 8, 8, 8;
    cycles_1024x4_w32: 1024, 4, 32, 32;
    cycles_2048x4_w32: 2048, 4, 32, 32;
    cycles_2048x5_w4: 2048, 5, 1, 4;
    cycles_2048x8_w16: 2048, 8, 16, 16;
    cycles_4096x5_w8: 4096, 5, 1, 8;
    cycles_4096x8_w1: 4096, 8, 1, 1;
    cycles_4096x64_w4: 4096, 64, 4, 4;
    cycles_131072x4_w32: 131072, 4, 32, 32;
    cycles_2048x4_r4_w1: 2048, 4, 4, 1;
    cycles_1024x6_r8_w1: 1024, 6, 8, 1;
}

/// Cut storms: 6 to 16 power cuts in a row, each within the first few writes after the remount
/// that recovered from the one before, so several interrupted writes sit in one head page that
/// also holds live values (the waste the space model charges, DESIGN.md section 9).
macro_rules! storm {
    ($($name:ident: $p:expr, $n:expr, $r:expr, $w:expr;)*) => {
        $(
            #[test]
            fn $name() {
                for ecc in [false, true] {
                    let (cuts, degraded) = cycles::<$p, $n, $r, $w>(ecc, true);
                    eprintln!(
                        "{} ecc {ecc}: {cuts} power cuts, {degraded} puts refused below capacity while degraded",
                        stringify!($name)
                    );
                    assert!(cuts >= 6 * scale(), "{}: the storms did not happen ({cuts} cuts)", stringify!($name));
                }
            }
        )*
    };
}

storm! {
    storm_512x4_w8: 512, 4, 1, 8;
    storm_1024x4_w32: 1024, 4, 32, 32;
    storm_2048x5_w4: 2048, 5, 1, 4;
    storm_4096x8_w1: 4096, 8, 1, 1;
}
