//! Identities that can be found again (issue 12, item 3): a backlog written under one spelling
//! of the identity is listed, named, adopted or discarded from another; the registry stays
//! bounded; adopt under power cuts loses nothing.

// Dropping a store without `close` models a reboot (its RAM state is lost).
#![allow(clippy::drop_non_drop)]

use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::identity::{MAX_ENTRY_LEN, REGISTRY_NS};
use mqtt_persist::{Adopted, Config, Error, Identity, Key, KeyCursor, Store};

// Large enough for the registry: it keeps entries only where one costs at most 1/32 of the
// capacity (a_tiny_store_keeps_no_registry covers the rest).
type Sim = SimFlash<4096, 8, 4, 4>;
type S<'a> = Store<&'a mut Sim, 8>;

const ID: &str = "dev-1";
const AS_TYPED: &str = "tcp://localhost:1883";
const AS_NUMBERS: &str = "tcp://127.0.0.1:1883";

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

fn reading(i: u32) -> Vec<u8> {
    format!("reading {i:04} {}", "x".repeat((i % 7) as usize)).into_bytes()
}

fn keys(s: &mut S<'_>) -> Vec<Key> {
    let mut cur = KeyCursor::default();
    let mut out = Vec::new();
    let mut buf = [Key::sent(0); 7];
    loop {
        let n = block_on(s.keys(&mut cur, &mut buf)).expect("keys");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn get(s: &mut S<'_>, k: Key) -> Vec<u8> {
    let mut buf = [0u8; 256];
    block_on(s.get(k, &mut buf)).expect("get").to_vec()
}

fn list(s: &mut S<'_>) -> Vec<Identity> {
    let mut out = [Identity::default(); 4];
    let (n, more) = block_on(s.identities(&mut out)).expect("identities");
    assert!(!more);
    out[..n].to_vec()
}

/// `n` readings as `c-<first..>` in the open namespace.
fn publish(s: &mut S<'_>, first: u32, n: u32) {
    for i in first..first + n {
        block_on(s.put(Key::command(i), &[&reading(i)])).expect("put");
    }
}

fn bytes_of(ids: core::ops::Range<u32>) -> u64 {
    ids.map(|i| reading(i).len() as u64).sum()
}

#[test]
fn a_backlog_under_another_spelling_is_listed_named_and_adopted_in_order() {
    let mut f = flash();
    let a = Store::<&mut Sim, 8>::namespace_of(ID, AS_TYPED);
    let b = Store::<&mut Sim, 8>::namespace_of(ID, AS_NUMBERS);
    {
        let mut s = mount(&mut f, 200);
        block_on(s.open(ID, AS_TYPED)).unwrap();
        publish(&mut s, 0, 27);
        // A remove, so the census counts only what is live.
        block_on(s.remove(Key::command(3))).unwrap();
        block_on(s.close()).unwrap();
    }
    let mut s = mount(&mut f, 200);
    block_on(s.open(ID, AS_NUMBERS)).unwrap();
    assert!(keys(&mut s).is_empty(), "the other spelling is another namespace");
    let ids = list(&mut s);
    let live: u64 = bytes_of(0..27) - reading(3).len() as u64;
    assert_eq!(
        ids,
        vec![Identity {
            ns: a,
            keys: 26,
            bytes: live
        }]
    );
    let mut buf = [0u8; MAX_ENTRY_LEN];
    let name = block_on(s.identity_name(a, &mut buf)).unwrap().expect("registered");
    assert_eq!((name.client_id, name.server_uri, name.truncated), (ID, AS_TYPED, false));
    let mut buf = [0u8; MAX_ENTRY_LEN];
    let mine = block_on(s.identity_name(b, &mut buf))
        .unwrap()
        .expect("the open one is registered too");
    assert_eq!(mine.server_uri, AS_NUMBERS);

    // The open namespace has no c- keys: the backlog keeps its ids, in order.
    let mut buf = [0u8; 256];
    let done = block_on(s.adopt(a, &mut buf)).unwrap();
    assert_eq!(done, Adopted { moved: 26, dropped: 0 });
    let want: Vec<Key> = (0..27).filter(|&i| i != 3).map(Key::command).collect();
    assert_eq!(keys(&mut s), want);
    for k in &want {
        assert_eq!(get(&mut s, *k), reading(k.id()));
    }
    assert!(list(&mut s).iter().all(|i| i.ns == b), "the old namespace is empty");
    let mut buf = [0u8; MAX_ENTRY_LEN];
    assert_eq!(
        block_on(s.identity_name(a, &mut buf)).unwrap(),
        None,
        "its entry went with it"
    );
    // After a reboot the same holds.
    drop(s);
    let mut s = mount(&mut f, 200);
    block_on(s.open(ID, AS_NUMBERS)).unwrap();
    assert_eq!(keys(&mut s), want);
    assert_eq!(
        list(&mut s),
        vec![Identity {
            ns: b,
            keys: 26,
            bytes: live
        }]
    );
}

#[test]
fn adopt_renumbers_behind_the_open_namespace_and_drops_session_state() {
    let mut f = flash();
    let a = Store::<&mut Sim, 8>::namespace_of(ID, AS_TYPED);
    let mut s = mount(&mut f, 200);
    block_on(s.open(ID, AS_TYPED)).unwrap();
    publish(&mut s, 100, 10);
    block_on(s.put(Key::sent(3), &[b"assigned"])).unwrap();
    block_on(s.put(Key::pubrel(4), &[b"pubrel"])).unwrap();
    block_on(s.put(Key::queued(7), &[b"inbound q"])).unwrap();
    block_on(s.close()).unwrap();
    block_on(s.open(ID, AS_NUMBERS)).unwrap();
    publish(&mut s, 0, 5);
    let mut buf = [0u8; 256];
    let done = block_on(s.adopt(a, &mut buf)).unwrap();
    assert_eq!(done, Adopted { moved: 11, dropped: 2 });
    let mut want: Vec<Key> = (0..15).map(Key::command).collect();
    // q- had no key of its kind in the open namespace: it keeps its id.
    want.insert(15, Key::queued(7));
    assert_eq!(keys(&mut s), want);
    for i in 0..10 {
        assert_eq!(
            get(&mut s, Key::command(5 + i)),
            reading(100 + i),
            "c-{} is old c-{}",
            5 + i,
            100 + i
        );
    }
    assert_eq!(get(&mut s, Key::queued(7)), b"inbound q");
    assert!(block_on(s.contains(Key::sent(3))).map(|c| !c).unwrap());
    // The old namespace is empty.
    block_on(s.close()).unwrap();
    block_on(s.open(ID, AS_TYPED)).unwrap();
    assert!(keys(&mut s).is_empty());
}

#[test]
fn discard_drops_a_backlog_and_its_entry_and_nothing_else() {
    let mut f = flash();
    let a = Store::<&mut Sim, 8>::namespace_of(ID, AS_TYPED);
    let b = Store::<&mut Sim, 8>::namespace_of(ID, AS_NUMBERS);
    let mut s = mount(&mut f, 200);
    block_on(s.open(ID, AS_TYPED)).unwrap();
    publish(&mut s, 0, 9);
    block_on(s.close()).unwrap();
    block_on(s.open(ID, AS_NUMBERS)).unwrap();
    publish(&mut s, 50, 4);
    block_on(s.remove_deferred(Key::command(50))).unwrap();
    block_on(s.discard(a)).unwrap();
    assert_eq!(
        list(&mut s),
        vec![Identity {
            ns: b,
            keys: 3,
            bytes: bytes_of(51..54)
        }]
    );
    assert_eq!(s.pending_removals(), 1, "the open namespace's pending removal is kept");
    let mut buf = [0u8; MAX_ENTRY_LEN];
    assert_eq!(block_on(s.identity_name(a, &mut buf)).unwrap(), None);
    assert_eq!(keys(&mut s), (51..54).map(Key::command).collect::<Vec<_>>());
}

#[test]
fn the_registry_is_reserved_and_adopt_needs_an_open_store() {
    let mut f = flash();
    let mut s = mount(&mut f, 200);
    let mut buf = [0u8; 256];
    assert_eq!(block_on(s.adopt(1, &mut buf)), Err(Error::NotOpen));
    assert_eq!(block_on(s.open_namespace(REGISTRY_NS)), Err(Error::ReservedNamespace));
    assert_eq!(block_on(s.discard(REGISTRY_NS)), Err(Error::ReservedNamespace));
    block_on(s.open(ID, AS_TYPED)).unwrap();
    assert_eq!(block_on(s.adopt(REGISTRY_NS, &mut buf)), Err(Error::ReservedNamespace));
    // Adopting itself is a no-op.
    publish(&mut s, 0, 2);
    let me = s.namespace().unwrap();
    assert_eq!(block_on(s.adopt(me, &mut buf)), Ok(Adopted::default()));
    assert_eq!(keys(&mut s).len(), 2);
    // A buffer too small for a value: exact size, nothing moved.
    block_on(s.close()).unwrap();
    block_on(s.open(ID, AS_NUMBERS)).unwrap();
    let mut small = [0u8; 4];
    assert_eq!(
        block_on(s.adopt(me, &mut small)),
        Err(Error::BufferTooSmall {
            needed: reading(0).len()
        })
    );
    assert!(keys(&mut s).is_empty());
    assert_eq!(list(&mut s)[0].keys, 2);
}

#[test]
fn the_registry_stays_one_entry_when_every_boot_uses_a_new_client_id() {
    let mut f = flash();
    let uri = "tcp://h:1883";
    let ns_of = |boot: u32| Store::<&mut Sim, 8>::namespace_of(&format!("random-{boot:08x}"), uri);
    let named = |s: &mut S<'_>, ns: u64| {
        let mut buf = [0u8; MAX_ENTRY_LEN];
        block_on(s.identity_name(ns, &mut buf))
            .unwrap()
            .map(|n| n.client_id.to_string())
    };
    for boot in 0..40u32 {
        let mut s = mount(&mut f, 200);
        let id = format!("random-{boot:08x}");
        block_on(s.open(&id, uri)).unwrap();
        assert_eq!(named(&mut s, ns_of(boot)), Some(id.clone()), "boot {boot}");
        // Every earlier boot's namespace is empty: its entry was removed.
        for earlier in 0..boot {
            assert_eq!(
                named(&mut s, ns_of(earlier)),
                None,
                "boot {boot}: entry of boot {earlier}"
            );
        }
        block_on(s.put(Key::command(boot), &[b"m"])).unwrap();
        block_on(s.remove(Key::command(boot))).unwrap();
        block_on(s.close()).unwrap();
    }
    let mut s = mount(&mut f, 200);
    assert!(list(&mut s).is_empty(), "no namespace has live keys");
    // An earlier namespace that still holds a key keeps its entry through a new registration.
    block_on(s.open("keeper", uri)).unwrap();
    publish(&mut s, 0, 1);
    block_on(s.close()).unwrap();
    block_on(s.open("other", uri)).unwrap();
    let keeper = Store::<&mut Sim, 8>::namespace_of("keeper", uri);
    assert_eq!(named(&mut s, keeper), Some("keeper".to_string()));
    assert_eq!(named(&mut s, ns_of(39)), None);
    let mut out = [Identity::default(); 4];
    assert_eq!(block_on(s.identities(&mut out)).unwrap(), (1, false));
    assert_eq!(out[0].ns, keeper);
}

#[test]
fn a_small_max_value_len_truncates_the_entry_and_open_namespace_still_adopts() {
    let mut f = flash();
    let a = Store::<&mut Sim, 8>::namespace_of(ID, AS_TYPED);
    let mut s = mount(&mut f, 20);
    block_on(s.open(ID, AS_TYPED)).unwrap();
    for i in 0..3 {
        block_on(s.put(Key::command(i), &[b"tiny"])).unwrap();
    }
    block_on(s.close()).unwrap();
    let mut buf = [0u8; MAX_ENTRY_LEN];
    let name = block_on(s.identity_name(a, &mut buf)).unwrap().unwrap();
    assert_eq!((name.client_id, name.server_uri, name.truncated), (ID, "tcp", true));
    // Reopen by hash: the keys are there.
    block_on(s.open_namespace(a)).unwrap();
    assert_eq!(keys(&mut s).len(), 3);
    block_on(s.close()).unwrap();
    // A namespace opened by hash only is listed, unnamed.
    block_on(s.open_namespace(0x1234)).unwrap();
    block_on(s.put(Key::command(9), &[b"x"])).unwrap();
    let mut buf = [0u8; MAX_ENTRY_LEN];
    assert_eq!(block_on(s.identity_name(0x1234, &mut buf)).unwrap(), None);
    let ids = list(&mut s);
    assert_eq!(
        ids.iter().map(|i| (i.ns, i.keys)).collect::<Vec<_>>(),
        vec![(a, 3), (0x1234, 1)]
    );
    // More namespaces than the caller's slice: reported.
    let mut one = [Identity::default(); 1];
    assert_eq!(block_on(s.identities(&mut one)).unwrap(), (1, true));
    assert_eq!(one[0].ns, a);
}

/// Adopt cut at every flash operation: after the remount every reading is in the old or the
/// new namespace (at least once), the new namespace's are in order behind its own, and at
/// most the one being moved is in both.
#[test]
fn adopt_under_a_power_cut_at_every_operation_loses_nothing() {
    let a = Store::<&mut Sim, 8>::namespace_of(ID, AS_TYPED);
    let mut base = flash();
    {
        let mut s = mount(&mut base, 200);
        block_on(s.open(ID, AS_TYPED)).unwrap();
        publish(&mut s, 0, 30);
        block_on(s.close()).unwrap();
        block_on(s.open(ID, AS_NUMBERS)).unwrap();
        publish(&mut s, 500, 3);
        block_on(s.close()).unwrap();
    }
    let mut cuts = 0;
    for k in 0..200u64 {
        let mut f = base.clone();
        f.set_seed(k);
        // Mount and this open write nothing (the identity is registered): the k-th write or
        // erase from here is adopt's.
        f.cut_power_at_op(Some(k));
        let finished = {
            let mut s = mount(&mut f, 200);
            block_on(s.open(ID, AS_NUMBERS)).unwrap();
            let mut buf = [0u8; 256];
            block_on(s.adopt(a, &mut buf)).is_ok()
        };
        f.restore_power();
        f.cut_power_at_op(None);
        if !finished {
            cuts += 1;
        }
        let mut s = mount(&mut f, 200);
        block_on(s.open(ID, AS_NUMBERS)).unwrap();
        let new: Vec<Key> = keys(&mut s);
        let mut seen: Vec<Vec<u8>> = new.iter().map(|&k| get(&mut s, k)).collect();
        assert_eq!(
            &seen[..3],
            &[reading(500), reading(501), reading(502)],
            "cut {k}: own keys first"
        );
        // Renumbered behind c-502, consecutive.
        assert_eq!(
            new[3..],
            (503..503 + new.len() as u32 - 3).map(Key::command).collect::<Vec<_>>()[..]
        );
        block_on(s.close()).unwrap();
        block_on(s.open(ID, AS_TYPED)).unwrap();
        let old = keys(&mut s);
        for &k in &old {
            seen.push(get(&mut s, k));
        }
        let moved: Vec<Vec<u8>> = seen[3..3 + new.len() - 3].to_vec();
        let left: Vec<Vec<u8>> = seen[new.len()..].to_vec();
        // Moved readings are a prefix of the backlog, the rest is its suffix, overlapping by
        // at most one.
        let m = moved.len();
        assert!(
            (0..30).map(reading).take(m).eq(moved.iter().cloned()),
            "cut {k}: moved in order"
        );
        let first_left = 30 - left.len();
        assert!(
            first_left <= m && m - first_left <= 1,
            "cut {k}: {m} moved, {} left",
            left.len()
        );
        assert!(
            (first_left as u32..30).map(reading).eq(left.iter().cloned()),
            "cut {k}: rest kept"
        );
        if finished {
            assert!(left.is_empty() && m == 30, "uncut adopt moves everything");
            break;
        }
    }
    assert!(cuts > 50, "the sweep cut {cuts} times");
}

#[test]
fn a_tiny_store_keeps_no_registry_but_still_lists_namespaces() {
    let mut f = SimFlash::<1024, 4, 4, 4>::boxed();
    let mut s = block_on(Store::<_, 4>::mount(&mut *f, Config::new(64)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open(ID, AS_TYPED)).unwrap();
    assert_eq!(s.usage().live_bytes, 0, "no entry: every byte is the backlog's");
    block_on(s.put(Key::command(1), &[b"one"])).unwrap();
    let a = s.namespace().unwrap();
    let mut buf = [0u8; MAX_ENTRY_LEN];
    assert_eq!(block_on(s.identity_name(a, &mut buf)).unwrap(), None);
    let mut out = [Identity::default(); 2];
    assert_eq!(block_on(s.identities(&mut out)).unwrap(), (1, false));
    assert_eq!(
        out[0],
        Identity {
            ns: a,
            keys: 1,
            bytes: 3
        }
    );
}
