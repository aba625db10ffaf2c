//! Store engine finding (not fixed here: the engine was out of scope for the outbox work):
//! `Store::keys` with a cursor lists a key a second time when a write between two calls made
//! compaction move its record; on 8 x 1024 B it can also list a key out of order or miss it
//! until the next pass. Found by tests/outbox_overflow.rs (QoS 2 on a full store); the outbox
//! guards against the repeat (docs/DESIGN.md section 17). This records the store calls the
//! outbox makes, replays them on a raw store, and asserts that no pass lists the last key of a
//! batch again at the start of the next. Ignored until the engine is fixed; run with
//! `cargo test --release --test keys_cursor_compaction -- --ignored`.

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
#[ignore = "store engine: keys() repeats a key moved by compaction between calls (issue to file)"]
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
