//! `Store::keys` with writes between calls (issue 8 follow-up). Compaction moves records and
//! compresses their insertion ordinals, so a cursor holding a stamp listed a key a second
//! time, late, or not at all until the next pass (found by tests/outbox_overflow.rs, QoS 2 on
//! a full store). The store now keeps its most recently used cursors exact across every
//! compaction copy (src/log/keys.rs, DESIGN.md section 11). Two tests: the outbox's own
//! store calls replayed on a raw store (the original finding), and a model-based workload on
//! several geometries with up to three listings interleaved with puts, overwrites and
//! removals on a store kept near full: every key live throughout a listing is listed
//! exactly once and in insertion order, every key listed is live when listed, and a
//! cursor pushed out of the tracked set gets `CursorExpired`, never a wrong answer.

use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::mqtt::{Outbox, OutboxConfig, OverflowPolicy, Publish, QoS, Transmit};
use mqtt_persist::persistence::Persistence;
use mqtt_persist::{Config, Error, Key, KeyCursor, Store};
use std::cell::RefCell;

/// A store call the outbox made (a put with whether it was admitted: a refused put still
/// writes the pending removals).
#[derive(Debug, Clone)]
enum Op {
    Put(Key, Vec<u8>, bool),
    Flush,
    Remove(Key),
    RemoveDeferred(Key),
    Keys(KeyCursor, Vec<Key>),
    Get(Key),
    Contains(Key),
}

/// Records every call that reads or changes the store.
struct Rec<'a, S> {
    inner: S,
    log: &'a RefCell<Vec<Op>>,
}
impl<'a, S: Persistence> Persistence for Rec<'a, S> {
    type FlashError = S::FlashError;
    async fn open(&mut self, c: &str, s: &str) -> Result<(), Error<Self::FlashError>> {
        self.inner.open(c, s).await
    }
    async fn close(&mut self) -> Result<(), Error<Self::FlashError>> {
        self.inner.close().await
    }
    async fn put(&mut self, key: Key, parts: &[&[u8]]) -> Result<(), Error<Self::FlashError>> {
        let r = self.inner.put(key, parts).await;
        self.log.borrow_mut().push(Op::Put(key, parts.concat(), r.is_ok()));
        r
    }
    async fn get<'b>(&mut self, key: Key, buf: &'b mut [u8]) -> Result<&'b [u8], Error<Self::FlashError>> {
        self.log.borrow_mut().push(Op::Get(key));
        self.inner.get(key, buf).await
    }
    async fn remove(&mut self, key: Key) -> Result<(), Error<Self::FlashError>> {
        self.log.borrow_mut().push(Op::Remove(key));
        self.inner.remove(key).await
    }
    async fn keys(&mut self, cursor: &mut KeyCursor, out: &mut [Key]) -> Result<usize, Error<Self::FlashError>> {
        let before = *cursor;
        let n = self.inner.keys(cursor, out).await?;
        self.log.borrow_mut().push(Op::Keys(before, out[..n].to_vec()));
        Ok(n)
    }
    async fn clear(&mut self) -> Result<(), Error<Self::FlashError>> {
        self.inner.clear().await
    }
    async fn contains(&mut self, key: Key) -> Result<bool, Error<Self::FlashError>> {
        self.log.borrow_mut().push(Op::Contains(key));
        self.inner.contains(key).await
    }
    async fn remove_deferred(&mut self, key: Key) -> Result<(), Error<Self::FlashError>> {
        self.log.borrow_mut().push(Op::RemoveDeferred(key));
        self.inner.remove_deferred(key).await
    }
    async fn flush(&mut self) -> Result<(), Error<Self::FlashError>> {
        self.log.borrow_mut().push(Op::Flush);
        self.inner.flush().await
    }
}

#[test]

fn keys_cursor_does_not_repeat_a_key_moved_by_compaction() {
    let log = RefCell::new(Vec::new());
    let mut flash = SimFlash::<4096, 4, 4, 4>::boxed();
    let mut store: Store<_, 4> = block_on(Store::mount(&mut *flash, Config::new(128)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(store.open("dev", "tcp://b")).unwrap();
    let mut c = OutboxConfig::new(1_000_000);
    c.overflow = OverflowPolicy::DropOldest;
    let mut ob: Outbox<_, 4, 128> = block_on(Outbox::restore(
        Rec {
            inner: store,
            log: &log,
        },
        c,
    ))
    .unwrap();
    for i in 0..400u32 {
        let t = format!("{{\"n\":{i:06}}}");
        let mut p = Publish::new("plant/line-3/temperature", t.as_bytes());
        p.qos = QoS::ExactlyOnce;
        block_on(ob.publish(&p, 0)).unwrap();
    }
    let mut buf = [0u8; 128];
    // QoS 2 flows on the full store, `W` at a time (the outbox skips the repeats).
    loop {
        let mut sent = vec![];
        while let Some(Transmit::Publish(p)) = block_on(ob.next_transmit(0, &mut buf, |_| {})).unwrap() {
            sent.push(p.packet_id);
        }
        if sent.is_empty() {
            break;
        }
        for pid in sent {
            block_on(ob.on_pubrec(pid)).unwrap();
            block_on(ob.on_pubcomp(pid)).unwrap();
        }
    }
    drop(ob);
    // Replay the log on a raw store and check keys() with the same cursors.
    let ops = log.borrow().clone();
    let mut flash = SimFlash::<4096, 4, 4, 4>::boxed();
    let mut store: Store<_, 4> = block_on(Store::mount(&mut *flash, Config::new(128)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(store.open("dev", "tcp://b")).unwrap();
    let mut b = [0u8; 128];
    let mut cur = KeyCursor::default();
    let mut last_batch: Vec<Key> = vec![];
    let mut repeats = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Put(k, v, ok) => {
                assert_eq!(block_on(store.put(*k, &[v])).is_ok(), *ok, "op {i}");
            }
            Op::Flush => block_on(store.flush()).unwrap(),
            Op::Remove(k) => {
                let _ = block_on(store.remove(*k));
            }
            Op::RemoveDeferred(k) => {
                let _ = block_on(store.remove_deferred(*k));
            }
            Op::Get(k) => {
                let _ = block_on(store.get(*k, &mut b));
            }
            Op::Contains(k) => {
                let _ = block_on(store.contains(*k));
            }
            Op::Keys(c, expect) => {
                let mut out = [Key::sent(0); 16];
                let mut cc = *c;
                let n = block_on(store.keys(&mut cc, &mut out)).unwrap();
                assert_eq!(&out[..n], &expect[..], "op {i}");
                if *c != KeyCursor::default()
                    && *c == cur
                    && let (Some(l), Some(f)) = (last_batch.last(), out[..n].first())
                    && l == f
                {
                    repeats.push(format!(
                        "op {i}: {f} listed again after {c:?}; before it: {:?}",
                        &ops[i.saturating_sub(4)..i]
                    ));
                }
                cur = cc;
                last_batch = out[..n].to_vec();
            }
        }
    }
    assert!(repeats.is_empty(), "{} ops, repeats: {repeats:#?}", ops.len());
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
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One listing in progress: its cursor, the keys live at its start that nothing touched since
/// (key -> insertion counter), and what it listed.
struct Listing {
    cursor: KeyCursor,
    untouched: std::collections::BTreeMap<Key, u64>,
    listed: Vec<Key>,
}

fn listings_stay_exact<const P: usize, const N: usize, const R: usize, const W: usize>(seed: u64) -> (u64, u64) {
    use std::collections::BTreeMap;
    let limit = Store::<&mut SimFlash<P, N, R, W>, N>::max_value_limit();
    let max = (limit / 4).max(8);
    let mut flash = SimFlash::<P, N, R, W>::boxed();
    let mut s: Store<_, N> = block_on(Store::mount(&mut *flash, Config::new(max)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("dev", "tcp://b")).unwrap();
    let mut rng = Rng::new(seed ^ ((P as u64) << 20) ^ N as u64);
    // key -> insertion counter of its latest put.
    let mut live: BTreeMap<Key, u64> = BTreeMap::new();
    let mut counter = 0u64;
    let mut next_id = 0u32;
    let mut listings: Vec<Listing> = Vec::new();
    let (mut finished, mut moved_during) = (0u64, 0u64);
    for step in 0..6_000u32 {
        let ctx = format!("{P}x{N} W{W} seed {seed} step {step}");
        // Keep up to three listings going.
        if listings.len() < 3 && rng.below(4) == 0 {
            listings.push(Listing {
                cursor: KeyCursor::default(),
                untouched: live.clone(),
                listed: Vec::new(),
            });
        }
        match rng.below(10) {
            0..=2 if !listings.is_empty() => {
                let i = rng.below(listings.len() as u64) as usize;
                let l = &mut listings[i];
                let mut out = [Key::sent(0); 16];
                let take = 1 + rng.below(16) as usize;
                let n =
                    block_on(s.keys(&mut l.cursor, &mut out[..take])).unwrap_or_else(|e| panic!("{ctx}: keys {e:?}"));
                for k in &out[..n] {
                    assert!(live.contains_key(k), "{ctx}: listed {k}, which is not live");
                }
                l.listed.extend_from_slice(&out[..n]);
                if n == 0 {
                    let l = listings.swap_remove(i);
                    // Every untouched key exactly once, in insertion order.
                    let got: Vec<Key> = l
                        .listed
                        .iter()
                        .copied()
                        .filter(|k| l.untouched.contains_key(k))
                        .collect();
                    let mut want: Vec<(u64, Key)> = l.untouched.iter().map(|(k, c)| (*c, *k)).collect();
                    want.sort();
                    let want: Vec<Key> = want.into_iter().map(|(_, k)| k).collect();
                    assert_eq!(got, want, "{ctx}: listing of {} keys", l.untouched.len());
                    finished += 1;
                }
            }
            3..=7 => {
                // A put: a new key, or now and then an overwrite.
                let k = if !live.is_empty() && rng.below(5) == 0 {
                    *live.keys().nth(rng.below(live.len() as u64) as usize).unwrap()
                } else {
                    next_id += 1;
                    Key::queued(next_id)
                };
                let len = 1 + rng.below(max as u64) as usize;
                let before = s.usage();
                match block_on(s.put(k, &[&vec![k.id() as u8; len]])) {
                    Ok(()) => {
                        counter += 1;
                        live.insert(k, counter);
                        for l in &mut listings {
                            l.untouched.remove(&k);
                        }
                    }
                    Err(Error::Full) => {
                        assert!(
                            before.live_bytes + before.damaged_bytes + s.charge_for(len) > before.capacity_bytes,
                            "{ctx}"
                        );
                        // Make room: remove a few of the oldest.
                        for _ in 0..3 {
                            let Some((&k, _)) = live.iter().min_by_key(|(_, c)| **c) else {
                                break;
                            };
                            block_on(s.remove(k)).unwrap();
                            live.remove(&k);
                            for l in &mut listings {
                                l.untouched.remove(&k);
                            }
                        }
                    }
                    Err(e) => panic!("{ctx}: put {e:?}"),
                }
            }
            _ if !live.is_empty() => {
                let k = *live.keys().nth(rng.below(live.len() as u64) as usize).unwrap();
                if rng.below(2) == 0 {
                    block_on(s.remove(k)).unwrap();
                } else {
                    block_on(s.remove_deferred(k)).unwrap();
                }
                live.remove(&k);
                for l in &mut listings {
                    l.untouched.remove(&k);
                }
            }
            _ => {}
        }
        if !listings.is_empty() && s.moved_records() > 0 {
            moved_during += 1;
        }
    }
    (finished, moved_during)
}

#[test]
fn listings_interleaved_with_writes_stay_exact_on_every_geometry() {
    for seed in 0..6u64 {
        let figures = [
            listings_stay_exact::<1024, 4, 4, 4>(seed),
            listings_stay_exact::<4096, 4, 4, 4>(seed),
            listings_stay_exact::<512, 8, 8, 8>(seed),
            listings_stay_exact::<2048, 8, 16, 16>(seed),
            listings_stay_exact::<2048, 5, 1, 1>(seed),
        ];
        for (finished, moved) in figures {
            assert!(finished > 50, "seed {seed}: only {finished} listings finished");
            assert!(
                moved > 100,
                "seed {seed}: compaction moved records during only {moved} steps"
            );
        }
        if seed == 0 {
            println!("listings finished / steps with moves, per geometry: {figures:?}");
        }
    }
}

#[test]
fn a_cursor_pushed_out_of_the_tracked_set_expires_instead_of_misleading() {
    let mut flash = SimFlash::<1024, 4, 4, 4>::boxed();
    let mut s: Store<_, 4> = block_on(Store::mount(&mut *flash, Config::new(64)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("dev", "tcp://b")).unwrap();
    for i in 0..20u32 {
        block_on(s.put(Key::queued(i), &[&[i as u8; 40]])).unwrap();
    }
    // KEY_CURSORS + 1 listings, one batch each: the first is the least recently used.
    let mut cursors = [KeyCursor::default(); mqtt_persist::KEY_CURSORS + 1];
    for (i, c) in cursors.iter_mut().enumerate() {
        let mut out = [Key::sent(0); 16];
        assert_eq!(block_on(s.keys(c, &mut out[..1 + i])).unwrap(), 1 + i);
    }
    // No record moved yet: every cursor still answers.
    let mut probe = cursors[0];
    let mut out = [Key::sent(0); 16];
    assert_eq!(block_on(s.keys(&mut probe, &mut out[..1])).unwrap(), 1);
    assert_eq!(out[0], Key::queued(1));
    // Churn until compaction moves records.
    let moves = s.moved_records();
    let mut i = 20u32;
    while s.moved_records() == moves {
        block_on(s.put(Key::queued(i), &[&[i as u8; 40]])).unwrap();
        block_on(s.remove(Key::queued(i - 18))).unwrap();
        i += 1;
        assert!(i < 10_000, "compaction never moved a record");
    }
    // The last listing pushed cursors[0] out of the tracked set, and probe's (a copy of
    // cursors[0], no longer tracked) pushed out cursors[1]: both expire; the others go on.
    assert_eq!(block_on(s.keys(&mut cursors[0], &mut out)), Err(Error::CursorExpired));
    assert_eq!(block_on(s.keys(&mut cursors[1], &mut out)), Err(Error::CursorExpired));
    assert!(block_on(s.keys(&mut probe, &mut out)).is_ok());
    for c in &mut cursors[2..] {
        assert!(block_on(s.keys(c, &mut out)).is_ok());
    }
}
