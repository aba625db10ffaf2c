//! Regression tests for bugs found in review, each named for the behaviour it protects.

use std::collections::BTreeMap;

use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Error, Key, Store};

type Sim = SimFlash<1024, 8, 4, 4>;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A deferred removal by client A must not hide client B's record of the same key when
/// compaction decides what to copy (it used to drop B's value).
#[test]
fn a_pending_removal_of_one_client_does_not_drop_another_clients_key() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    let mut s: Store<&mut Sim, 8> = block_on(Store::mount(&mut *flash, Config::new(256)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("b", "u")).unwrap();
    block_on(s.put(Key::sent(1), &[b"value of b"])).unwrap();
    block_on(s.close()).unwrap();
    block_on(s.open("a", "u")).unwrap();
    block_on(s.put(Key::sent(1), &[b"value of a"])).unwrap();
    block_on(s.remove_deferred(Key::sent(1))).unwrap();
    // Churn so the first pages are compacted while a's removal is pending.
    for i in 0..200u32 {
        block_on(s.put(Key::command(i % 5), &[&[3u8; 150]])).unwrap();
    }
    block_on(s.close()).unwrap();
    block_on(s.open("b", "u")).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        block_on(s.get(Key::sent(1), &mut buf)).map(|v| v.to_vec()),
        Ok(b"value of b".to_vec())
    );
    block_on(s.close()).unwrap();
    block_on(s.open("a", "u")).unwrap();
    assert_eq!(block_on(s.get(Key::sent(1), &mut buf)), Err(Error::NotFound));
}

/// After a mount, live counts are upper bounds; making them exact must count records whose
/// removal is still pending, or the flush charges them off a second time and a page holding
/// live keys is retired as dead.
#[test]
fn pending_removals_are_charged_off_once_after_a_remount() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    let cfg = Config::new(256);
    {
        let mut s: Store<&mut Sim, 8> = block_on(Store::mount(&mut *flash, cfg)).map_err(|e| e.1).unwrap();
        block_on(s.open("a", "u")).unwrap();
        for i in 0..20u32 {
            block_on(s.put(Key::command(100 + i), &[&[1u8; 40]])).unwrap();
            block_on(s.put(Key::command(200 + i), &[&[2u8; 40]])).unwrap();
        }
        block_on(s.close()).unwrap();
    }
    let mut s: Store<&mut Sim, 8> = block_on(Store::mount(&mut *flash, cfg)).map_err(|e| e.1).unwrap();
    block_on(s.open("a", "u")).unwrap();
    for i in 0..20u32 {
        block_on(s.remove_deferred(Key::command(100 + i))).unwrap();
    }
    // Enough puts that admission control refines the counts and compaction runs repeatedly.
    for i in 0..400u32 {
        block_on(s.put(Key::command(1000 + i % 4), &[&[5u8; 100]])).unwrap();
    }
    block_on(s.flush()).unwrap();
    let mut buf = [0u8; 64];
    for i in 0..20u32 {
        assert_eq!(
            block_on(s.get(Key::command(200 + i), &mut buf)).unwrap(),
            &[2u8; 40][..],
            "c-{}",
            200 + i
        );
        assert_eq!(block_on(s.get(Key::command(100 + i), &mut buf)), Err(Error::NotFound));
    }
}

/// Fill the store until it reports full, then remove every key: no remove (durable or
/// deferred) and no close may report `Full`.
fn fill_then_remove_all<const P: usize, const N: usize, const W: usize>(seed: u64, max: usize, deferred: bool) {
    let mut flash = SimFlash::<P, N, 1, W>::boxed();
    flash.set_ecc(true);
    let mut rng = Rng(seed | 1);
    let mut s: Store<_, N> = block_on(Store::mount(&mut *flash, Config::new(max)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("c", "u")).unwrap();
    let mut keys = Vec::new();
    for i in 0.. {
        let len = rng.below(max as u64 + 1) as usize;
        match block_on(s.put(Key::command(i), &[&vec![1u8; len]])) {
            Ok(()) => keys.push(Key::command(i)),
            Err(Error::Full) => break,
            Err(e) => panic!("put: {e:?}"),
        }
    }
    assert!(keys.len() > 10, "store took only {} values", keys.len());
    for k in &keys {
        let r = if deferred {
            block_on(s.remove_deferred(*k))
        } else {
            block_on(s.remove(*k))
        };
        assert_eq!(r, Ok(()), "removing {k} from a full store (seed {seed})");
    }
    assert_eq!(block_on(s.close()), Ok(()));
}

#[test]
fn removes_never_report_full_on_a_full_store() {
    for seed in 1..4 {
        fill_then_remove_all::<4096, 16, 4>(seed, 512, false);
        fill_then_remove_all::<4096, 16, 16>(seed, 512, false);
        fill_then_remove_all::<4096, 16, 4>(seed, 512, true);
        fill_then_remove_all::<1024, 8, 4>(seed, 256, false);
        fill_then_remove_all::<1024, 8, 4>(seed, 256, true);
    }
}

/// A random workload of puts (0..=max bytes), removes, deferred removes and remounts against a
/// model, checking every key after every step.
fn stress<const P: usize, const N: usize, const W: usize>(seed: u64, max: usize, ops: usize, nkeys: u64) {
    let mut flash = SimFlash::<P, N, 1, W>::boxed();
    flash.set_ecc(true);
    let mut rng = Rng(seed | 1);
    let mut model: BTreeMap<Key, Vec<u8>> = BTreeMap::new();
    let mut s: Store<_, N> = block_on(Store::mount(&mut *flash, Config::new(max)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("c", "u")).unwrap();
    let mut buf = vec![0u8; max];
    for i in 0..ops {
        let k = Key::command(rng.below(nkeys) as u32);
        let r = rng.below(100);
        if r < 60 {
            let len = rng.below(max as u64 + 1) as usize;
            let v: Vec<u8> = (0..len).map(|j| (j as u64 ^ i as u64 ^ seed) as u8).collect();
            match block_on(s.put(k, &[&v])) {
                Ok(()) => {
                    model.insert(k, v);
                }
                Err(Error::Full) => {}
                Err(e) => panic!("seed {seed} op {i}: put {k}: {e:?}"),
            }
        } else if r < 80 {
            let want = if model.remove(&k).is_some() {
                Ok(())
            } else {
                Err(Error::NotFound)
            };
            assert_eq!(block_on(s.remove(k)), want, "seed {seed} op {i}: remove {k}");
        } else if r < 97 {
            match block_on(s.remove_deferred(k)) {
                Ok(()) | Err(Error::NotFound) => {}
                Err(e) => panic!("seed {seed} op {i}: remove_deferred {k}: {e:?}"),
            }
            model.remove(&k);
        } else {
            block_on(s.close()).unwrap_or_else(|e| panic!("seed {seed} op {i}: close: {e:?}"));
            s = block_on(Store::mount(&mut *flash, Config::new(max)))
                .map_err(|e| e.1)
                .unwrap();
            block_on(s.open("c", "u")).unwrap();
        }
        for (k, v) in &model {
            let got = block_on(s.get(*k, &mut buf)).map(|x| x.to_vec());
            assert_eq!(got.as_ref(), Ok(v), "seed {seed} op {i}: get {k}");
        }
    }
}

#[test]
fn random_workloads_with_remounts_match_the_model() {
    for seed in 1..31u64 {
        match seed % 3 {
            0 => stress::<1024, 8, 4>(seed, 256, 400, 30),
            1 => stress::<4096, 16, 4>(seed, 512, 600, 120),
            _ => stress::<4096, 8, 16>(seed, 1000, 500, 30),
        }
    }
}
