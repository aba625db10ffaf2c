//! The public API's contract on bad input and misuse: exact error variants, and that a refused
//! call changes nothing (neither the store's content nor the flash). Also namespaces of several
//! clients, the blocking facade and the Paho string form of keys.

// Dropping a store without `close` is how these tests model a reboot: the point is that its
// RAM state (pending deferred removals, summaries) is lost, even though it has no `Drop` impl.
#![allow(clippy::drop_non_drop)]

use mqtt_persist::flash::{BlockingFlash, FlashStats, SimFlash, block_on};
use mqtt_persist::{Blocking, Config, Error, Key, KeyCursor, Kind, ParseKeyError, Persistence, Store};

type Sim = SimFlash<1024, 8, 4, 4>;
type S<'a> = Store<&'a mut Sim, 8>;
type E = Error<mqtt_persist::flash::SimFlashError>;

const URI: &str = "tcp://broker.example:1883";

fn flash() -> Box<Sim> {
    let mut f = Sim::boxed();
    f.set_ecc(true);
    f
}

fn mount(flash: &mut Sim, max: usize) -> S<'_> {
    match block_on(Store::mount(flash, Config::new(max))) {
        Ok(s) => s,
        Err((_, e)) => panic!("mount: {e:?}"),
    }
}

fn all_keys<F: embedded_storage_async::nor_flash::NorFlash, const N: usize>(s: &mut Store<F, N>) -> Vec<Key> {
    let mut cur = KeyCursor::default();
    let mut v = Vec::new();
    let mut buf = [Key::sent(0); 5];
    for _ in 0..1000 {
        let n = block_on(s.keys(&mut cur, &mut buf)).expect("keys");
        if n == 0 {
            return v;
        }
        v.extend_from_slice(&buf[..n]);
    }
    panic!("keys() does not end");
}

fn get(s: &mut S<'_>, key: Key) -> Result<Vec<u8>, E> {
    let mut buf = [0u8; 1024];
    block_on(s.get(key, &mut buf)).map(|v| v.to_vec())
}

fn value(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ tag).collect()
}

/// The flash counters that record changes (not reads).
fn writes(stats: FlashStats) -> (u64, u64, u64) {
    (stats.writes, stats.write_bytes, stats.erases)
}

#[test]
fn oversize_put_is_too_large_with_the_configured_max_and_writes_nothing() {
    let mut f = flash();
    let mut s = mount(&mut f, 200);
    block_on(s.open("dev", URI)).unwrap();
    block_on(s.put(Key::sent(1), &[&value(1, 50)])).unwrap();

    let before = s.flash().stats();
    let big = value(2, 201);
    // Scatter-gather: the limit applies to the sum of the parts.
    assert_eq!(
        block_on(s.put(Key::sent(1), &[&big[..150], &big[150..]])),
        Err(E::TooLarge { max: 200 })
    );
    assert_eq!(
        block_on(s.put(Key::sent(2), &[&big[..100], &big[100..]])),
        Err(E::TooLarge { max: 200 })
    );
    assert_eq!(
        block_on(s.put(Key::command(70_000), &[&big])),
        Err(E::TooLarge { max: 200 })
    );
    // Nothing reached the flash, not even a read.
    assert_eq!(s.flash().stats(), before);
    assert_eq!(get(&mut s, Key::sent(1)), Ok(value(1, 50)));
    assert_eq!(get(&mut s, Key::sent(2)), Err(E::NotFound));
    assert_eq!(all_keys(&mut s), vec![Key::sent(1)]);

    // Exactly the limit is accepted.
    block_on(s.put(Key::sent(2), &[&big[..100], &big[100..200]])).unwrap();
    assert_eq!(get(&mut s, Key::sent(2)), Ok(big[..200].to_vec()));
    assert_eq!(block_on(s.len_of(Key::sent(2))), Ok(200));
}

#[test]
fn the_largest_configurable_limit_is_usable_and_one_more_is_too_large() {
    let limit = S::max_value_limit();
    assert!(limit > 0 && limit < 1024);
    let mut f = flash();
    let mut s = mount(&mut f, limit);
    block_on(s.open("dev", URI)).unwrap();
    let v = value(9, limit);
    block_on(s.put(Key::queued(3), &[&v])).unwrap();
    assert_eq!(get(&mut s, Key::queued(3)), Ok(v.clone()));
    let before = s.flash().stats();
    assert_eq!(
        block_on(s.put(Key::queued(4), &[&v, b"x"])),
        Err(E::TooLarge { max: limit })
    );
    assert_eq!(s.flash().stats(), before);
}

#[test]
fn get_with_a_small_buffer_names_the_exact_size_and_changes_nothing() {
    let mut f = flash();
    let mut s = mount(&mut f, 256);
    block_on(s.open("dev", URI)).unwrap();
    let v = value(3, 100);
    block_on(s.put(Key::received(7), &[&v[..1], &v[1..]])).unwrap();
    block_on(s.put(Key::received(8), &[])).unwrap();

    let before = writes(s.flash().stats());
    for size in [0usize, 1, 50, 99] {
        let mut small = vec![0xA5u8; size];
        assert_eq!(
            block_on(s.get(Key::received(7), &mut small)),
            Err(E::BufferTooSmall { needed: 100 }),
            "buffer of {size}"
        );
        assert!(small.iter().all(|&b| b == 0xA5), "a refused get wrote into the buffer");
    }
    assert_eq!(writes(s.flash().stats()), before);
    // The exact size and a larger buffer work; the returned slice is the value only.
    let mut exact = [0u8; 100];
    assert_eq!(block_on(s.get(Key::received(7), &mut exact)), Ok(&v[..]));
    let mut larger = [0u8; 300];
    assert_eq!(block_on(s.get(Key::received(7), &mut larger)).map(|x| x.len()), Ok(100));
    // An empty value fits an empty buffer.
    assert_eq!(block_on(s.get(Key::received(8), &mut [])), Ok(&[][..]));
    assert_eq!(block_on(s.len_of(Key::received(8))), Ok(0));
    assert_eq!(all_keys(&mut s), vec![Key::received(7), Key::received(8)]);
}

#[test]
fn every_call_before_open_is_not_open_and_touches_nothing() {
    let mut f = flash();
    let mut s = mount(&mut f, 256);
    assert!(!s.is_open());
    let before = s.flash().stats();
    let k = Key::sent(1);
    let mut buf = [0u8; 16];
    let mut keys = [k; 4];
    assert_eq!(block_on(s.close()), Err(E::NotOpen));
    assert_eq!(block_on(s.put(k, &[b"x"])), Err(E::NotOpen));
    assert_eq!(block_on(s.get(k, &mut buf)), Err(E::NotOpen));
    assert_eq!(block_on(s.len_of(k)), Err(E::NotOpen));
    assert_eq!(block_on(s.remove(k)), Err(E::NotOpen));
    assert_eq!(block_on(s.remove_deferred(k)), Err(E::NotOpen));
    assert_eq!(block_on(s.flush()), Err(E::NotOpen));
    assert_eq!(block_on(s.keys(&mut KeyCursor::default(), &mut keys)), Err(E::NotOpen));
    assert_eq!(block_on(s.clear()), Err(E::NotOpen));
    assert_eq!(block_on(s.contains(k)), Err(E::NotOpen));
    assert_eq!(s.pending_removals(), 0);
    assert_eq!(s.flash().stats(), before);
    assert_eq!(buf, [0u8; 16]);

    // The same through the Persistence trait.
    let p: &mut S<'_> = &mut s;
    assert_eq!(block_on(Persistence::put(p, k, &[b"x"])), Err(E::NotOpen));
    assert_eq!(block_on(Persistence::contains(p, k)), Err(E::NotOpen));
    assert_eq!(block_on(Persistence::close(p)), Err(E::NotOpen));
}

#[test]
fn open_is_idempotent_for_one_identity_and_refuses_another_until_closed() {
    let mut f = flash();
    let mut s = mount(&mut f, 256);
    block_on(s.open("a", URI)).unwrap();
    block_on(s.put(Key::sent(1), &[b"a1"])).unwrap();
    assert_eq!(block_on(s.open("a", URI)), Ok(()));
    assert_eq!(block_on(s.open("b", URI)), Err(E::AlreadyOpen));
    assert_eq!(block_on(s.open("a", "tcp://elsewhere:1883")), Err(E::AlreadyOpen));
    // The refused opens changed nothing: still "a".
    assert!(s.is_open());
    assert_eq!(get(&mut s, Key::sent(1)), Ok(b"a1".to_vec()));
    block_on(s.close()).unwrap();
    assert!(!s.is_open());
    assert_eq!(block_on(s.close()), Err(E::NotOpen));
    assert_eq!(block_on(s.put(Key::sent(2), &[b"x"])), Err(E::NotOpen));
    assert_eq!(get(&mut s, Key::sent(1)), Err(E::NotOpen));
    // After close another identity may open.
    assert_eq!(block_on(s.open("b", URI)), Ok(()));
    assert_eq!(get(&mut s, Key::sent(1)), Err(E::NotFound));
}

#[test]
fn remove_of_a_missing_key_is_not_found() {
    let mut f = flash();
    let mut s = mount(&mut f, 256);
    block_on(s.open("dev", URI)).unwrap();
    assert_eq!(block_on(s.remove(Key::pubrel(9))), Err(E::NotFound));
    block_on(s.put(Key::pubrel(9), &[b"rel"])).unwrap();
    // Same id, other kind: a different key.
    assert_eq!(block_on(s.remove(Key::sent(9))), Err(E::NotFound));
    assert_eq!(block_on(s.remove(Key::pubrel(9))), Ok(()));
    assert_eq!(block_on(s.remove(Key::pubrel(9))), Err(E::NotFound));
    assert_eq!(block_on(s.contains(Key::pubrel(9))), Ok(false));

    // A deferred removal counts as a removal for remove and for a second deferral.
    block_on(s.put(Key::sent(4), &[b"four"])).unwrap();
    assert_eq!(block_on(s.remove_deferred(Key::sent(4))), Ok(()));
    assert_eq!(s.pending_removals(), 1);
    assert_eq!(block_on(s.remove(Key::sent(4))), Err(E::NotFound));
    assert_eq!(block_on(s.remove_deferred(Key::sent(4))), Err(E::NotFound));
    assert_eq!(get(&mut s, Key::sent(4)), Err(E::NotFound));
    assert_eq!(s.pending_removals(), 1);
    block_on(s.flush()).unwrap();
    assert_eq!(s.pending_removals(), 0);
    assert_eq!(block_on(s.remove(Key::sent(4))), Err(E::NotFound));
    assert_eq!(all_keys(&mut s), Vec::<Key>::new());
}

/// Client "a" and client "b" share one partition; each sees only its own keys.
fn two_clients(remount_between: bool) {
    let mut f = flash();
    let mut s = mount(&mut f, 256);
    block_on(s.open("a", URI)).unwrap();
    block_on(s.put(Key::sent(1), &[b"a: s-1"])).unwrap();
    block_on(s.put(Key::command(70_000), &[b"a: ", b"c-70000"])).unwrap();
    block_on(s.put(Key::queued(2), &[b"a: q-2"])).unwrap();
    block_on(s.close()).unwrap();
    if remount_between {
        drop(s);
        s = mount(&mut f, 256);
    }

    block_on(s.open("b", URI)).unwrap();
    assert_eq!(all_keys(&mut s), Vec::<Key>::new());
    assert_eq!(block_on(s.contains(Key::sent(1))), Ok(false));
    assert_eq!(get(&mut s, Key::command(70_000)), Err(E::NotFound));
    assert_eq!(block_on(s.remove(Key::sent(1))), Err(E::NotFound));
    block_on(s.put(Key::sent(1), &[b"b: s-1"])).unwrap();
    block_on(s.put(Key::received(5), &[b"b: r-5"])).unwrap();
    assert_eq!(all_keys(&mut s), vec![Key::sent(1), Key::received(5)]);
    // "b" clears its own keys only.
    block_on(s.clear()).unwrap();
    assert_eq!(all_keys(&mut s), Vec::<Key>::new());
    block_on(s.put(Key::queued(2), &[b"b: q-2"])).unwrap();
    block_on(s.close()).unwrap();
    if remount_between {
        drop(s);
        s = mount(&mut f, 256);
    }

    block_on(s.open("a", URI)).unwrap();
    assert_eq!(
        all_keys(&mut s),
        vec![Key::sent(1), Key::command(70_000), Key::queued(2)]
    );
    assert_eq!(get(&mut s, Key::sent(1)), Ok(b"a: s-1".to_vec()));
    assert_eq!(get(&mut s, Key::command(70_000)), Ok(b"a: c-70000".to_vec()));
    assert_eq!(get(&mut s, Key::queued(2)), Ok(b"a: q-2".to_vec()));
    assert_eq!(block_on(s.contains(Key::received(5))), Ok(false));
    block_on(s.close()).unwrap();

    block_on(s.open("b", URI)).unwrap();
    assert_eq!(all_keys(&mut s), vec![Key::queued(2)]);
    assert_eq!(get(&mut s, Key::queued(2)), Ok(b"b: q-2".to_vec()));
    assert_eq!(get(&mut s, Key::sent(1)), Err(E::NotFound));
}

#[test]
fn two_clients_on_one_mounted_store_see_only_their_own_keys() {
    two_clients(false);
}

#[test]
fn two_clients_across_remounts_see_only_their_own_keys() {
    two_clients(true);
}

#[test]
fn the_same_client_id_at_another_server_is_another_namespace() {
    let mut f = flash();
    let mut s = mount(&mut f, 256);
    block_on(s.open("dev", "tcp://one:1883")).unwrap();
    block_on(s.put(Key::sent(3), &[b"at one"])).unwrap();
    block_on(s.close()).unwrap();
    block_on(s.open("dev", "tcp://two:1883")).unwrap();
    assert_eq!(block_on(s.contains(Key::sent(3))), Ok(false));
    block_on(s.put(Key::sent(3), &[b"at two"])).unwrap();
    block_on(s.clear()).unwrap();
    block_on(s.close()).unwrap();
    // The identity is the pair, not the concatenation.
    block_on(s.open("dev", "tcp://one:1883")).unwrap();
    assert_eq!(get(&mut s, Key::sent(3)), Ok(b"at one".to_vec()));
    block_on(s.close()).unwrap();
    block_on(s.open("devtcp://one:1883", "")).unwrap();
    assert_eq!(all_keys(&mut s), Vec::<Key>::new());
}

/// Found by the model test: `clear()` by one client marked pages holding only another
/// client's records as dead, and compaction then erased them.
#[test]
fn clear_by_one_client_keeps_another_clients_keys_through_compaction() {
    let mut f = flash();
    let mut s = mount(&mut f, 256);
    block_on(s.open("a", URI)).unwrap();
    for i in 1..=16u16 {
        block_on(s.put(Key::sent(i), &[&[i as u8; 100]])).unwrap();
    }
    block_on(s.close()).unwrap();
    block_on(s.open("b", URI)).unwrap();
    block_on(s.put(Key::sent(1), &[b"b-one"])).unwrap();
    block_on(s.clear()).unwrap();
    for i in 0..100u32 {
        block_on(s.put(Key::command(i % 4), &[&[7u8; 100]])).unwrap();
    }
    assert!(s.flash().stats().erases > 0, "the test must go through compaction");
    block_on(s.close()).unwrap();
    block_on(s.open("a", URI)).unwrap();
    assert_eq!(all_keys(&mut s), (1..=16).map(Key::sent).collect::<Vec<_>>());
    for i in 1..=16u16 {
        assert_eq!(get(&mut s, Key::sent(i)), Ok(vec![i as u8; 100]), "s-{i}");
    }
}

/// Found by the model test: a deferred removal of `s-5` by client "b" made compaction treat
/// client "a"'s `s-5` as removed, so it was not copied and was lost.
#[test]
fn a_deferred_removal_in_one_namespace_does_not_drop_the_same_key_of_another() {
    let mut f = flash();
    let mut s = mount(&mut f, 256);
    block_on(s.open("a", URI)).unwrap();
    block_on(s.put(Key::sent(5), &[b"a-five"])).unwrap();
    block_on(s.close()).unwrap();
    block_on(s.open("b", URI)).unwrap();
    block_on(s.remove_deferred(Key::sent(5))).unwrap();
    let mut n = 0u32;
    while s.flash().stats().erases < 3 {
        block_on(s.put(Key::command(n % 4), &[&[7u8; 100]])).unwrap();
        n += 1;
    }
    block_on(s.close()).unwrap();
    block_on(s.open("a", URI)).unwrap();
    assert_eq!(get(&mut s, Key::sent(5)), Ok(b"a-five".to_vec()));
    assert_eq!(all_keys(&mut s), vec![Key::sent(5)]);
}

/// Found by the model test on a small store: once a put had failed with `Full`, `remove`
/// (documented never to fail with `Full`), `flush`, `close` and `clear` failed with `Full` too.
#[test]
fn removals_still_work_when_the_store_is_full() {
    type Tiny = SimFlash<512, 5, 2, 8>;
    let mut f = Tiny::boxed();
    let mut s: Store<&mut Tiny, 5> = block_on(Store::mount(&mut *f, Config::new(128)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("a", URI)).unwrap();
    let puts: &[(Key, usize)] = &[
        (Key::sent(3), 117),
        (Key::queued(u32::MAX), 110),
        (Key::queued(5), 110),
        (Key::command(1), 103),
        (Key::received(65535), 103),
        (Key::sent(4), 26),
        (Key::queued(1), 108),
        (Key::queued(131_072), 60),
        (Key::pubrel(2), 26),
        (Key::command(2), 81),
        (Key::queued(131_073), 104),
        (Key::sent(5), 108),
        (Key::queued(131_072), 106),
        (Key::command(2), 34),
        (Key::command(0), 128),
        (Key::command(70_000), 128),
    ];
    let mut model = std::collections::BTreeMap::new();
    let mut full = 0;
    for &(k, len) in puts {
        let v = vec![len as u8; len];
        match block_on(s.put(k, &[&v])) {
            Ok(()) => {
                model.insert(k, v);
            }
            Err(E::Full) => full += 1,
            Err(e) => panic!("put {k}: {e:?}"),
        }
    }
    assert!(full > 0, "the store must have been full");
    // Remove two of the keys that were admitted: one durably, one deferred.
    let held: Vec<Key> = model.keys().copied().collect();
    assert!(held.len() >= 2, "at least two puts admitted: {held:?}");
    assert_eq!(block_on(s.remove(held[0])), Ok(()));
    model.remove(&held[0]);
    assert_eq!(block_on(s.remove_deferred(held[1])), Ok(()));
    model.remove(&held[1]);
    assert_eq!(block_on(s.flush()), Ok(()));
    let mut buf = [0u8; 128];
    for (k, v) in &model {
        assert_eq!(block_on(s.get(*k, &mut buf)), Ok(&v[..]), "{k}");
    }
    assert_eq!(block_on(s.close()), Ok(()));
    block_on(s.open("a", URI)).unwrap();
    assert_eq!(block_on(s.clear()), Ok(()));
    assert_eq!(block_on(s.close()), Ok(()));
    block_on(s.open("a", URI)).unwrap();
    assert_eq!(all_keys(&mut s), Vec::<Key>::new());
    // And the space is usable again.
    block_on(s.put(Key::sent(1), &[&[1u8; 128]])).unwrap();
}

#[test]
fn blocking_facade_over_blocking_flash() {
    let mut f = flash();
    {
        let store: Store<BlockingFlash<&mut Sim>, 8> = block_on(Store::mount(BlockingFlash(&mut *f), Config::new(512)))
            .map_err(|e| e.1)
            .unwrap();
        let mut b = Blocking(store);
        assert_eq!(b.put(Key::sent(1), &[b"x"]), Err(E::NotOpen));
        b.open("dev", URI).unwrap();
        b.put(Key::sent(1), &[b"hello ", b"world"]).unwrap();
        b.put(Key::command(70_001), &[&[0xFF; 300]]).unwrap();
        b.put(Key::queued(9), &[]).unwrap();
        b.put(Key::sent(1), &[b"hello again"]).unwrap();
        let mut buf = [0u8; 300];
        assert_eq!(b.get(Key::sent(1), &mut buf), Ok(&b"hello again"[..]));
        assert_eq!(b.get(Key::command(70_001), &mut buf), Ok(&[0xFF; 300][..]));
        assert_eq!(b.get(Key::queued(9), &mut buf), Ok(&[][..]));
        assert_eq!(b.get(Key::sent(2), &mut buf), Err(E::NotFound));
        assert_eq!(
            b.get(Key::command(70_001), &mut buf[..10]),
            Err(E::BufferTooSmall { needed: 300 })
        );
        let mut cur = KeyCursor::default();
        let mut out = [Key::sent(0); 8];
        let n = b.keys(&mut cur, &mut out).unwrap();
        assert_eq!(&out[..n], &[Key::command(70_001), Key::queued(9), Key::sent(1)]);
        assert_eq!(b.keys(&mut cur, &mut out), Ok(0));
        assert_eq!(b.contains(Key::queued(9)), Ok(true));
        b.remove(Key::queued(9)).unwrap();
        assert_eq!(b.remove(Key::queued(9)), Err(E::NotFound));
        b.remove_deferred(Key::sent(1)).unwrap();
        assert_eq!(b.contains(Key::sent(1)), Ok(false));
        b.flush().unwrap();
        assert_eq!(b.0.pending_removals(), 0);
        b.close().unwrap();
        assert_eq!(b.clear(), Err(E::NotOpen));
    }
    // The async store on the same flash reads what the blocking one wrote.
    let mut s = mount(&mut f, 512);
    block_on(s.open("dev", URI)).unwrap();
    assert_eq!(all_keys(&mut s), vec![Key::command(70_001)]);
    assert_eq!(get(&mut s, Key::command(70_001)), Ok(vec![0xFF; 300]));
}

#[test]
fn keys_listed_by_the_store_round_trip_through_their_paho_strings() {
    let mut f = flash();
    let mut s = mount(&mut f, 256);
    block_on(s.open("dev", URI)).unwrap();
    let texts = ["s-1", "sc-65535", "r-7", "c-70000", "q-4294967295", "c-0", "q-65536"];
    for t in texts {
        let k: Key = t.parse().unwrap();
        block_on(s.put(k, &[t.as_bytes()])).unwrap();
    }
    let listed = all_keys(&mut s);
    let shown: Vec<String> = listed.iter().map(|k| k.to_string()).collect();
    assert_eq!(shown, texts);
    for k in listed {
        let text = k.to_string();
        assert_eq!(text.parse::<Key>(), Ok(k));
        assert_eq!(get(&mut s, k), Ok(text.into_bytes()));
    }
    assert_eq!(
        "sc-65535".parse::<Key>().map(|k| (k.kind(), k.id())),
        Ok((Kind::PubRel, 65535))
    );
    assert_eq!("q-4294967295".parse::<Key>(), Ok(Key::queued(u32::MAX)));
    assert_eq!("c-70000".parse::<Key>(), Ok(Key::command(70_000)));
}

#[test]
fn malformed_key_strings_give_the_specific_parse_error() {
    let cases = [
        ("s1", ParseKeyError::MissingDash),
        ("", ParseKeyError::MissingDash),
        ("p-1", ParseKeyError::UnknownPrefix),
        ("-1", ParseKeyError::UnknownPrefix),
        ("SC-1", ParseKeyError::UnknownPrefix),
        ("q-", ParseKeyError::BadNumber),
        ("q-007", ParseKeyError::BadNumber),
        ("q- 7", ParseKeyError::BadNumber),
        ("c-1.0", ParseKeyError::BadNumber),
        ("r-65536", ParseKeyError::OutOfRange),
        ("sc-70000", ParseKeyError::OutOfRange),
        ("c-4294967296", ParseKeyError::OutOfRange),
        ("q-99999999999999999999", ParseKeyError::OutOfRange),
    ];
    for (text, err) in cases {
        assert_eq!(text.parse::<Key>(), Err(err), "{text:?}");
    }
    assert_eq!(Key::new(Kind::Received, 65_536), None);
    assert_eq!(Key::new(Kind::Queued, 65_536), Some(Key::queued(65_536)));
}

/// A `Persistence` that implements only the eight Paho operations, so `remove_deferred` and
/// `flush` are the trait's defaults.
struct PahoOnly<'a>(S<'a>);

impl Persistence for PahoOnly<'_> {
    type FlashError = mqtt_persist::flash::SimFlashError;
    async fn open(&mut self, client_id: &str, server_uri: &str) -> Result<(), E> {
        self.0.open(client_id, server_uri).await
    }
    async fn close(&mut self) -> Result<(), E> {
        self.0.close().await
    }
    async fn put(&mut self, key: Key, parts: &[&[u8]]) -> Result<(), E> {
        self.0.put(key, parts).await
    }
    async fn get<'b>(&mut self, key: Key, buf: &'b mut [u8]) -> Result<&'b [u8], E> {
        self.0.get(key, buf).await
    }
    async fn remove(&mut self, key: Key) -> Result<(), E> {
        self.0.remove(key).await
    }
    async fn keys(&mut self, cursor: &mut KeyCursor, out: &mut [Key]) -> Result<usize, E> {
        self.0.keys(cursor, out).await
    }
    async fn clear(&mut self) -> Result<(), E> {
        self.0.clear().await
    }
    async fn contains(&mut self, key: Key) -> Result<bool, E> {
        self.0.contains(key).await
    }
}

#[test]
fn persistence_defaults_make_deferred_removal_durable_at_once() {
    let mut f = flash();
    {
        let mut p = PahoOnly(mount(&mut f, 256));
        block_on(p.open("dev", URI)).unwrap();
        block_on(p.put(Key::sent(1), &[b"one"])).unwrap();
        block_on(p.put(Key::sent(2), &[b"two"])).unwrap();
        assert_eq!(block_on(p.remove_deferred(Key::sent(1))), Ok(()));
        // The default is a durable remove: nothing pending, a missing key is NotFound.
        assert_eq!(p.0.pending_removals(), 0);
        assert_eq!(block_on(p.remove_deferred(Key::sent(1))), Err(E::NotFound));
        assert_eq!(block_on(p.flush()), Ok(()));
        // Dropped without close.
    }
    let mut s = mount(&mut f, 256);
    block_on(s.open("dev", URI)).unwrap();
    assert_eq!(all_keys(&mut s), vec![Key::sent(2)]);
    // Unlike the store's own remove_deferred, which comes back after a drop without close.
    block_on(s.remove_deferred(Key::sent(2))).unwrap();
    drop(s);
    let mut s = mount(&mut f, 256);
    block_on(s.open("dev", URI)).unwrap();
    assert_eq!(get(&mut s, Key::sent(2)), Ok(b"two".to_vec()));
}

#[test]
fn the_33rd_deferred_removal_writes_the_first_32() {
    let mut f = flash();
    let mut s = mount(&mut f, 256);
    block_on(s.open("dev", URI)).unwrap();
    // Ids spread over several Batch windows and two id-high contexts.
    let keys: Vec<Key> = (0..40u32)
        .map(|i| {
            if i % 2 == 0 {
                Key::command(i * 37)
            } else {
                Key::command(65_536 + i * 1000)
            }
        })
        .collect();
    for (i, k) in keys.iter().enumerate() {
        block_on(s.put(*k, &[&[i as u8; 20]])).unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(block_on(s.remove_deferred(*k)), Ok(()), "{k}");
        let want = if i < 32 { i + 1 } else { i - 31 };
        assert_eq!(s.pending_removals(), want, "after deferring {k}");
    }
    assert_eq!(all_keys(&mut s), Vec::<Key>::new());
    // The first page of an empty store is erased before its header (a torn header write can
    // leave words programmed that read 0xFF); nothing else is.
    assert_eq!(s.flash().stats().erases, 1, "no compaction in this test");
    // Dropped without close: the first 32 were written, the last 8 come back, in their place.
    drop(s);
    let mut s = mount(&mut f, 256);
    block_on(s.open("dev", URI)).unwrap();
    assert_eq!(all_keys(&mut s), keys[32..].to_vec());
    for (i, k) in keys.iter().enumerate().skip(32) {
        assert_eq!(get(&mut s, *k), Ok(vec![i as u8; 20]), "{k}");
    }
}

#[test]
fn deferred_removals_come_back_after_a_reboot_but_not_after_close() {
    let mut f = flash();
    let mut s = mount(&mut f, 256);
    block_on(s.open("dev", URI)).unwrap();
    for i in 1..=4u16 {
        block_on(s.put(Key::sent(i), &[&[i as u8; 10]])).unwrap();
    }
    block_on(s.remove_deferred(Key::sent(2))).unwrap();
    block_on(s.remove_deferred(Key::sent(9))).unwrap(); // never written: nothing to bring back
    block_on(s.put(Key::sent(5), &[b"five"])).unwrap();
    assert_eq!(all_keys(&mut s), [1, 3, 4, 5].map(Key::sent).to_vec());
    drop(s);

    let mut s = mount(&mut f, 256);
    block_on(s.open("dev", URI)).unwrap();
    // Back with its value and its original place in the insertion order.
    assert_eq!(all_keys(&mut s), [1, 2, 3, 4, 5].map(Key::sent).to_vec());
    assert_eq!(get(&mut s, Key::sent(2)), Ok(vec![2; 10]));
    assert_eq!(get(&mut s, Key::sent(9)), Err(E::NotFound));
    block_on(s.remove_deferred(Key::sent(2))).unwrap();
    block_on(s.close()).unwrap();
    drop(s);

    let mut s = mount(&mut f, 256);
    block_on(s.open("dev", URI)).unwrap();
    assert_eq!(all_keys(&mut s), [1, 3, 4, 5].map(Key::sent).to_vec());
    assert_eq!(get(&mut s, Key::sent(2)), Err(E::NotFound));
}

#[test]
fn values_at_fragment_and_page_boundaries_survive_compaction_and_remount() {
    type Big = SimFlash<4096, 6, 4, 16>;
    let limit = Store::<&mut Big, 6>::max_value_limit();
    let mut f = Big::boxed();
    f.set_ecc(true);
    // One fragment carries at most 2047 bytes; the limit needs two fragments.
    let lens = [0usize, 1, 63, 64, 2047, 2048, limit];
    let val = |i: usize, len: usize| -> Vec<u8> { (0..len).map(|j| (j * 13 + i * 7) as u8).collect() };
    let check = |s: &mut Store<&mut Big, 6>, what: &str| {
        let mut buf = vec![0u8; limit];
        for (i, &len) in lens.iter().enumerate() {
            let k = Key::queued(70_000 + i as u32);
            assert_eq!(
                block_on(s.get(k, &mut buf)),
                Ok(&val(i, len)[..]),
                "{what}: {k} of {len} bytes"
            );
        }
    };
    let mut s: Store<&mut Big, 6> = block_on(Store::mount(&mut *f, Config::new(limit)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("dev", URI)).unwrap();
    for (i, &len) in lens.iter().enumerate() {
        let v = val(i, len);
        // Three parts, split unevenly.
        let (a, rest) = v.split_at(len / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        block_on(s.put(Key::queued(70_000 + i as u32), &[a, b, c])).unwrap();
    }
    check(&mut s, "written");
    // Rewrite other keys until every page was compacted at least twice.
    let mut n = 0u32;
    while s.flash().stats().erases < 14 {
        // Small enough that the old and the new value fit beside the boundary values.
        let len = [100usize, 500, 700, 300][n as usize % 4];
        block_on(s.put(Key::sent(1), &[&val(99, len)])).unwrap_or_else(|e| panic!("churn {n}: {e:?}"));
        n += 1;
        assert!(n < 1000, "no compaction");
    }
    check(&mut s, "after compaction");
    drop(s);
    let mut s: Store<&mut Big, 6> = block_on(Store::mount(&mut *f, Config::new(limit)))
        .map_err(|e| e.1)
        .unwrap();
    assert_eq!(s.mount_report().damaged_pages + s.mount_report().damaged_records, 0);
    block_on(s.open("dev", URI)).unwrap();
    check(&mut s, "after remount");
    let keys = all_keys(&mut s);
    let want: Vec<Key> = (0..lens.len() as u32).map(|i| Key::queued(70_000 + i)).collect();
    assert_eq!(&keys[..lens.len()], &want[..]);
}

/// Puts of `c-` keys (id, value length) that fill a 1 KiB x 8 store: the last six are refused
/// with `Full`. Found by filling stores and removing everything again.
const FILLING_PUTS: [(u32, usize); 58] = [
    (65557, 39),
    (15, 243),
    (1, 64),
    (65559, 185),
    (31, 128),
    (1, 8),
    (65568, 8),
    (21, 186),
    (10, 14),
    (65551, 35),
    (23, 8),
    (35, 128),
    (65548, 195),
    (17, 64),
    (65553, 154),
    (9, 256),
    (26, 64),
    (65545, 0),
    (25, 256),
    (26, 195),
    (65570, 179),
    (28, 177),
    (13, 158),
    (65542, 82),
    (2, 64),
    (30, 155),
    (65538, 128),
    (30, 64),
    (36, 67),
    (65545, 234),
    (0, 64),
    (19, 209),
    (65547, 104),
    (18, 183),
    (9, 64),
    (65566, 105),
    (24, 64),
    (35, 80),
    (65561, 153),
    (9, 200),
    (31, 232),
    (65538, 128),
    (38, 83),
    (17, 128),
    (65574, 90),
    (22, 256),
    (9, 161),
    (65563, 234),
    (26, 256),
    (7, 206),
    (65571, 115),
    (37, 50),
    (65562, 64),
    (0, 0),
    (7, 0),
    (65544, 0),
    (25, 0),
    (3, 0),
];

/// A store that reached `Full` must be emptied by removing its keys one by one: `remove` is
/// documented never to fail with `Full` (its tombstone is reserved at put time).
fn empty_a_store_that_was_full(remount: bool) {
    let mut f = Sim::boxed();
    let mut s = mount(&mut f, 256);
    block_on(s.open("dev", URI)).unwrap();
    let mut model = std::collections::BTreeMap::new();
    let mut full = 0;
    for (i, &(id, len)) in FILLING_PUTS.iter().enumerate() {
        let v = vec![i as u8; len];
        match block_on(s.put(Key::command(id), &[&v])) {
            Ok(()) => {
                model.insert(Key::command(id), v);
            }
            Err(E::Full) => full += 1,
            Err(e) => panic!("put {i}: {e:?}"),
        }
    }
    assert!(full > 0, "the store filled up");
    if remount {
        block_on(s.close()).unwrap();
        drop(s);
        s = mount(&mut f, 256);
        block_on(s.open("dev", URI)).unwrap();
    }
    let keys = all_keys(&mut s);
    assert_eq!(keys.len(), model.len());
    for (n, k) in keys.iter().enumerate() {
        let r = block_on(s.remove(*k));
        assert_eq!(r, Ok(()), "remove {k} (#{n}), {:?}", s.usage());
        model.remove(k);
        for (k2, v) in &model {
            assert_eq!(get(&mut s, *k2).as_ref(), Ok(v), "{k2} after removing {k}");
        }
    }
    assert_eq!(all_keys(&mut s), Vec::<Key>::new());
    block_on(s.put(Key::command(1), &[&[1u8; 256]])).unwrap();
}

#[test]
fn a_store_that_was_full_can_be_emptied_by_remove() {
    empty_a_store_that_was_full(false);
}

#[test]
fn a_store_that_was_full_can_be_emptied_by_remove_after_a_remount() {
    empty_a_store_that_was_full(true);
}
