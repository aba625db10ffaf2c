extern crate std;
use std::vec::Vec as StdVec;

use super::*;
use crate::flash::{SimFlash, block_on};
use crate::{Config, Store};

type Sim = SimFlash<4096, 16, 4, 4>;
type TestStore<'f> = Store<&'f mut Sim, 16>;
type Box8<'f> = Outbox<TestStore<'f>, 8, 256>;

fn mount(flash: &mut Sim) -> TestStore<'_> {
    let mut store = block_on(Store::mount(flash, Config::new(512)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(store.open("dev", "tcp://b")).unwrap();
    store
}

fn outbox<const W: usize>(flash: &mut Sim, config: OutboxConfig) -> Outbox<TestStore<'_>, W, 256> {
    block_on(Outbox::restore(mount(flash), config)).unwrap()
}

fn msg(payload: &[u8], qos: QoS) -> Publish<'_> {
    let mut p = Publish::new("t/x", payload);
    p.qos = qos;
    p
}

fn publish_n<const W: usize>(ob: &mut Outbox<TestStore<'_>, W, 256>, range: core::ops::Range<u32>, qos: QoS) {
    for i in range {
        let text = std::format!("{i}");
        block_on(ob.publish(&msg(text.as_bytes(), qos), 0)).unwrap();
    }
}

/// (sequence, packet id, dup, payload as number) of the next publish.
fn next<const W: usize>(ob: &mut Outbox<TestStore<'_>, W, 256>, now: u64) -> Option<(u32, u16, bool, u32)> {
    let mut buf = [0u8; 256];
    match block_on(ob.next_transmit(now, &mut buf, |_| {})).unwrap() {
        Some(Transmit::Publish(p)) => {
            let n = core::str::from_utf8(p.payload).unwrap().parse().unwrap();
            Some((p.sequence, p.packet_id, p.dup, n))
        }
        Some(Transmit::PubRel { .. }) => panic!("unexpected PUBREL"),
        None => None,
    }
}

#[test]
fn acknowledged_messages_whose_removal_a_cut_lost_count_as_maybe_sent() {
    let mut flash = Sim::boxed();
    {
        let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(1000));
        publish_n(&mut ob, 0..100, QoS::AtLeastOnce);
        // 30 sent and acknowledged: their removals stay deferred (no flush), then the power
        // goes (the outbox is dropped without writing them).
        for _ in 0..30 {
            let (seq, pid, dup, _) = next(&mut ob, 0).unwrap();
            assert!(!dup);
            assert_eq!(block_on(ob.on_puback(pid)).unwrap(), Some(seq));
        }
        assert_eq!(ob.capacity().buffered, 70);
        let _ = ob.into_store_unflushed();
    }
    let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(1000));
    // All 30 are back; with the window they are within the oldest 8 + 32.
    assert_eq!(ob.capacity().buffered, 100);
    assert_eq!(ob.restored_maybe_sent(), 40);
    let mut seen = 0;
    while let Some((seq, pid, dup, _)) = next(&mut ob, 0) {
        assert_eq!(seq, seen);
        // DUP marks the window only.
        assert_eq!(dup, seq < 8, "seq {seq}");
        seen += 1;
        assert_eq!(block_on(ob.on_puback(pid)).unwrap(), Some(seq));
    }
    assert_eq!(seen, 100);
}

#[test]
fn offline_messages_survive_a_reboot_in_order_and_the_sequence_continues() {
    let mut flash = Sim::boxed();
    {
        let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(1000));
        publish_n(&mut ob, 0..100, QoS::AtLeastOnce);
        assert_eq!(ob.capacity().buffered, 100);
    }
    let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(1000));
    assert_eq!(ob.capacity().buffered, 100);
    assert_eq!(ob.next_sequence(), 100);
    // The first W may have been in flight before the reboot, and the 32 before them (the
    // store's deferred-removal set) acknowledged with their removal lost.
    assert_eq!(ob.restored_maybe_sent(), 8 + 32);
    let mut seen = StdVec::new();
    while let Some((seq, pid, dup, n)) = next(&mut ob, 0) {
        assert_eq!(seq, n);
        assert_eq!(dup, seq < 8, "seq {seq}");
        seen.push(seq);
        assert_eq!(block_on(ob.on_puback(pid)).unwrap(), Some(seq));
    }
    assert_eq!(seen, (0..100).collect::<StdVec<_>>());
    assert!(ob.is_idle());
    publish_n(&mut ob, 0..1, QoS::AtLeastOnce);
    assert_eq!(next(&mut ob, 0).unwrap().0, 100);
}

#[test]
fn window_bounds_in_flight_and_out_of_order_acks_are_handled() {
    let mut flash = Sim::boxed();
    let mut ob: Outbox<_, 4, 256> = outbox(&mut flash, OutboxConfig::new(1000));
    publish_n(&mut ob, 0..20, QoS::AtLeastOnce);
    let mut inflight: StdVec<(u32, u16)> = (0..4).map(|_| next(&mut ob, 0).map(|t| (t.0, t.1)).unwrap()).collect();
    assert_eq!(inflight.iter().map(|t| t.0).collect::<StdVec<_>>(), [0, 1, 2, 3]);
    assert_eq!(next(&mut ob, 0), None, "window of 4 is full");
    let mut order = StdVec::new();
    let mut acked = 0;
    while acked < 20 {
        // Acknowledge the newest first: reverse order.
        let (seq, pid) = inflight.pop().unwrap();
        assert_eq!(block_on(ob.on_puback(pid)).unwrap(), Some(seq));
        assert_eq!(block_on(ob.on_puback(pid)).unwrap(), None, "second ack is ignored");
        acked += 1;
        while let Some((s, p, dup, _)) = next(&mut ob, 0) {
            assert!(!dup);
            order.push(s);
            inflight.insert(0, (s, p));
        }
    }
    assert_eq!(order, (4..20).collect::<StdVec<_>>());
    assert!(ob.is_idle());
}

#[test]
fn connection_loss_resends_unacknowledged_with_dup() {
    let mut flash = Sim::boxed();
    let mut ob: Outbox<_, 4, 256> = outbox(&mut flash, OutboxConfig::new(1000));
    publish_n(&mut ob, 0..10, QoS::AtLeastOnce);
    let sent: StdVec<_> = (0..4).map(|_| next(&mut ob, 0).unwrap()).collect();
    block_on(ob.on_puback(sent[1].1)).unwrap();
    block_on(ob.on_puback(sent[3].1)).unwrap();
    ob.on_connection_lost();
    let resent: StdVec<_> = (0..4).map(|_| next(&mut ob, 0).unwrap()).collect();
    assert_eq!(
        resent.iter().map(|t| (t.0, t.2)).collect::<StdVec<_>>(),
        [(0, true), (2, true), (4, false), (5, false)]
    );
}

#[test]
fn overflow_reject_newest_keeps_the_oldest() {
    let mut flash = Sim::boxed();
    let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(100));
    let mut rejected = 0;
    for i in 0..150u32 {
        let text = std::format!("{i}");
        match block_on(ob.publish(&msg(text.as_bytes(), QoS::AtLeastOnce), 0)) {
            Ok(Receipt::Stored { dropped: None, .. }) => assert!(i < 100),
            Err(OutboxError::Full {
                limit:
                    Limit::Count {
                        buffered: 100,
                        max_buffered: 100,
                    },
            }) => rejected += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rejected, 50);
    let mut n = 0;
    while let Some((_, pid, _, payload)) = next(&mut ob, 0) {
        assert_eq!(payload, n);
        block_on(ob.on_puback(pid)).unwrap();
        n += 1;
    }
    assert_eq!(n, 100);
}

#[test]
fn overflow_drop_oldest_reports_what_it_dropped() {
    let mut flash = Sim::boxed();
    let mut config = OutboxConfig::new(100);
    config.overflow = OverflowPolicy::DropOldest;
    let mut ob: Box8 = outbox(&mut flash, config);
    let mut dropped = StdVec::new();
    for i in 0..150u32 {
        let text = std::format!("{i}");
        match block_on(ob.publish(&msg(text.as_bytes(), QoS::AtLeastOnce), 0)).unwrap() {
            Receipt::Stored { dropped: Some(d), .. } => dropped.push(d),
            Receipt::Stored { dropped: None, .. } => assert!(i < 100),
            Receipt::NotPersisted => panic!(),
        }
    }
    assert_eq!(dropped, (0..50).collect::<StdVec<_>>());
    assert_eq!(ob.capacity().buffered, 100);
    let mut got = StdVec::new();
    while let Some((_, pid, _, payload)) = next(&mut ob, 0) {
        got.push(payload);
        block_on(ob.on_puback(pid)).unwrap();
    }
    assert_eq!(got, (50..150).collect::<StdVec<_>>());
}

#[test]
fn expired_messages_are_dropped_at_replay_and_reported() {
    let mut flash = Sim::boxed();
    let mut config = OutboxConfig::new(100);
    config.ttl = Some(10);
    let mut ob: Box8 = outbox(&mut flash, config);
    for (i, t) in [(0u32, 0u64), (1, 5), (2, 0), (3, 8)] {
        let text = std::format!("{i}");
        block_on(ob.publish(&msg(text.as_bytes(), QoS::AtLeastOnce), t)).unwrap();
    }
    let mut buf = [0u8; 256];
    let mut expired = StdVec::new();
    let mut sent = StdVec::new();
    while let Some(Transmit::Publish(p)) = block_on(ob.next_transmit(12, &mut buf, |d| expired.push(d))).unwrap() {
        sent.push(p.sequence);
    }
    assert_eq!(sent, [1, 3]);
    assert_eq!(
        expired,
        [Dropped::Expired { sequence: 0 }, Dropped::Expired { sequence: 2 }]
    );
    assert_eq!(ob.capacity().buffered, 2);
}

#[test]
fn qos0_is_not_persisted_unless_asked_and_then_sent_once() {
    let mut flash = Sim::boxed();
    let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(10));
    assert_eq!(
        block_on(ob.publish(&msg(b"0", QoS::AtMostOnce), 0)),
        Ok(Receipt::NotPersisted)
    );
    assert!(ob.is_idle());
    let mut config = OutboxConfig::new(10);
    config.persist_qos0 = true;
    drop(ob);
    let mut ob: Box8 = outbox(&mut flash, config);
    publish_n(&mut ob, 0..3, QoS::AtMostOnce);
    let sent: StdVec<_> = core::iter::from_fn(|| next(&mut ob, 0)).collect();
    assert_eq!(
        sent.iter().map(|t| (t.0, t.1)).collect::<StdVec<_>>(),
        [(0, 0), (1, 0), (2, 0)]
    );
    assert!(ob.is_idle());
    assert_eq!(ob.capacity().in_flight, 0);
}

#[test]
fn qos2_reboot_between_pubrec_and_pubcomp_resumes_with_pubrel() {
    let mut flash = Sim::boxed();
    let pid;
    {
        let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(10));
        publish_n(&mut ob, 0..2, QoS::ExactlyOnce);
        let first = next(&mut ob, 0).unwrap();
        pid = first.1;
        assert_eq!(block_on(ob.on_pubrec(pid)).unwrap(), Some(0));
        assert_eq!(ob.capacity().pubrel_pending, 1);
        // Power cut: nothing flushed.
        let _ = ob.into_store_unflushed();
    }
    let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(10));
    assert_eq!(ob.capacity().buffered, 1, "the PUBREC'd message is gone from the queue");
    let mut buf = [0u8; 256];
    assert_eq!(
        block_on(ob.next_transmit(0, &mut buf, |_| {})).unwrap(),
        Some(Transmit::PubRel { packet_id: pid })
    );
    // The second message is sent once, not the first again.
    let second = next(&mut ob, 0).unwrap();
    assert_eq!(second.0, 1);
    assert_eq!(next(&mut ob, 0), None);
    assert_eq!(block_on(ob.on_pubcomp(pid)).unwrap(), Some(0));
    block_on(ob.on_pubrec(second.1)).unwrap();
    block_on(ob.on_pubcomp(second.1)).unwrap();
    assert!(ob.is_idle());
    drop(ob);
    let ob: Box8 = outbox(&mut flash, OutboxConfig::new(10));
    assert!(ob.is_idle());
}

#[test]
fn qos2_reboot_before_pubrec_reuses_the_packet_id_with_dup() {
    let mut flash = Sim::boxed();
    let first;
    {
        let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(10));
        publish_n(&mut ob, 0..1, QoS::ExactlyOnce);
        first = next(&mut ob, 0).unwrap();
        assert!(!first.2);
    }
    let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(10));
    let again = next(&mut ob, 0).unwrap();
    assert_eq!((again.0, again.1, again.2), (first.0, first.1, true));
}

#[test]
fn inbound_qos2_is_delivered_once_across_a_reboot() {
    let mut flash = Sim::boxed();
    {
        let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(10));
        assert_eq!(block_on(ob.inbound_publish(7)).unwrap(), Inbound::Deliver);
        block_on(ob.inbound_delivered(7)).unwrap();
    }
    let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(10));
    assert!(ob.is_idle(), "inbound state is not outgoing work");
    assert_eq!(block_on(ob.inbound_publish(7)).unwrap(), Inbound::Duplicate);
    block_on(ob.inbound_pubrel(7)).unwrap();
    assert_eq!(block_on(ob.inbound_publish(7)).unwrap(), Inbound::Deliver);
}

#[test]
fn a_garbage_record_is_a_typed_error() {
    let mut flash = Sim::boxed();
    let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(10));
    let mut store = ob.into_store_unflushed();
    block_on(store.put(Key::command(0), &[b"\x01\x00\xff\xff\xff"])).unwrap();
    ob = block_on(Outbox::restore(store, OutboxConfig::new(10))).unwrap();
    let mut buf = [0u8; 256];
    assert!(matches!(
        block_on(ob.next_transmit(0, &mut buf, |_| {})),
        Err(OutboxError::Decode { key, .. }) if key == Key::command(0)
    ));
}

#[test]
fn capacity_reports_bytes_free() {
    let mut flash = Sim::boxed();
    let mut ob: Box8 = outbox(&mut flash, OutboxConfig::new(100));
    let before = ob.bytes_free();
    publish_n(&mut ob, 0..10, QoS::AtLeastOnce);
    assert!(ob.bytes_free() < before);
    assert_eq!(ob.capacity().max_buffered, 100);
}
