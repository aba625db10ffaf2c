//! End to end for `adapter::minimq` against mosquitto on 127.0.0.1 (each test starts its
//! own; minimq 0.13 speaks MQTT 5 only, so rumqttd is not an option): a device (minimq
//! through the outbox, over the tokio TCP socket of examples/support/tcp.rs as its
//! `embedded-io-async` transport, on a simulated NOR flash) talks to the broker through a fault-injecting
//! proxy; the checking subscriber is the raw MQTT 3.1.1 one in tests/support/raw_mqtt.rs.
//! Broker, waiting and analysis helpers are tests/support/e2e.rs. Every wait is bounded.
//!
//! Scenarios: (a) 500 offline publishes, then a reboot; (b) 2,000 publishes with the
//! connection reset every ~50; (c) both overflow policies; (d) a power cut mid-burst; (e) QoS 2
//! without a reboot, and with a reboot between PUBREC and PUBCOMP (see the module docs of
//! `adapter::minimq` for why that is at least once, not exactly once); (f) publishes mosquitto
//! refuses by ACL (PUBACK 0x87). Each prints its figures on one line.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/raw_mqtt.rs"]
mod raw;
#[path = "../examples/support/tcp.rs"]
mod support;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use critical_section as _;
use e2e::{BrokerKind, analyse, now_ms, start_broker, start_broker_with_acl, wait_flag, wait_for};
use embassy_futures::join::join;
use embassy_futures::select::{Either, select};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use mqtt_persist::adapter::SharedOutbox;
use mqtt_persist::adapter::minimq::{Driver, Error, Event, Settings, Stats};
use mqtt_persist::flash::SimFlash;
use mqtt_persist::mqtt::{Dropped, OutboxConfig, OutboxError, OverflowPolicy, Publish, QoS, Receipt};
use mqtt_persist::{Config, Store};
use support::{Faults, TokioNetwork, start_proxy};

type Sim = SimFlash<4096, 64, 4, 4>;
const PAGES: usize = 64;
const W: usize = 8;
const BUF: usize = 256;

fn mosquitto() -> e2e::Broker {
    start_broker(BrokerKind::Mosquitto)
}

/// How a boot uses the driver.
#[derive(Clone, Copy)]
enum Drain<'a> {
    /// No driver: publish and stop (a reboot follows).
    No,
    /// Publish while the driver runs; stop once everything is acknowledged (then flush), or
    /// when the power is cut.
    UntilIdle,
    /// Publish while the driver runs; stop (no flush: a reboot) 300 ms after the flag is set.
    UntilSet(&'a AtomicBool),
}

#[derive(Default, Debug)]
struct Report {
    /// Readings whose `publish` returned Ok (durable).
    stored: Vec<u32>,
    /// Readings refused with `Full`.
    rejected: Vec<u32>,
    /// Sequence numbers dropped by the overflow policy.
    dropped: Vec<u32>,
    /// Times each sequence number was sent, and those sent with DUP.
    sent: HashMap<u32, u32>,
    dup: HashSet<u32>,
    /// Whether the outbox was empty at the end.
    idle: bool,
    stats: Stats,
    /// Sequence numbers the broker refused, with the reason code.
    refused: Vec<(u32, u8)>,
}

impl Report {
    /// Sequence numbers sent more than once or with DUP.
    fn resent(&self) -> HashSet<u32> {
        let again = self.sent.iter().filter(|&(_, &n)| n > 1).map(|(&s, _)| s);
        again.chain(self.dup.iter().copied()).collect()
    }
}

/// One boot: mount, restore, publish `readings` on `topic` (payload = reading = sequence
/// number) with `N` in flight, drive as `drain` says. Everything is dropped at the end, as in a
/// reboot; the flash stays.
#[allow(clippy::too_many_arguments)]
async fn device<const N: usize>(
    flash: &mut Sim,
    proxy: SocketAddr,
    id: &str,
    topic: &str,
    config: OutboxConfig,
    readings: std::ops::Range<u32>,
    drain: Drain<'_>,
    qos: QoS,
) -> Report {
    let mut store: Store<&mut Sim, PAGES> = Store::mount(flash, Config::new(BUF)).await.map_err(|e| e.1).unwrap();
    store.open(id, "tcp://e2e").await.unwrap();
    let outbox: SharedOutbox<NoopRawMutex, _, N, BUF> = SharedOutbox::restore(store, config).await.unwrap();
    let network = TokioNetwork;
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 2048]);
    let mut driver = Driver::new(&network, proxy, id, &mut rx, &mut tx, Settings::default());
    let report = RefCell::new(Report::default());
    let publishing = Cell::new(true);
    // Set once a publish fails on the flash (the power was cut): the boot is over.
    let powered_off = Cell::new(false);
    let publisher = async {
        for n in readings {
            let text = n.to_string();
            let mut msg = Publish::new(topic, text.as_bytes());
            msg.qos = qos;
            let mut dropped = Vec::new();
            match outbox.publish_with(&msg, now_ms(), |d| dropped.push(d)).await {
                Ok(Receipt::Stored {
                    sequence,
                    dropped_count,
                    ..
                }) => {
                    assert_eq!(sequence, n, "payload and sequence number agree");
                    assert_eq!(dropped_count as usize, dropped.len(), "every drop reported");
                    let mut r = report.borrow_mut();
                    r.stored.push(n);
                    r.dropped.extend(dropped.iter().map(|d| match d {
                        Dropped::Overflow { sequence } => *sequence,
                        other => panic!("unexpected drop {other:?}"),
                    }));
                }
                Ok(Receipt::NotPersisted) => unreachable!(),
                Err(OutboxError::Full { .. }) => report.borrow_mut().rejected.push(n),
                Err(OutboxError::Store(_)) => {
                    // The power was cut: this reading is not durable, and the boot is over.
                    powered_off.set(true);
                    break;
                }
                Err(e) => panic!("publish: {e:?}"),
            }
            // Let the driver run between publishes; a burst of 8 a millisecond while it runs,
            // so that acknowledgements interleave with the publishes.
            if matches!(drain, Drain::No) || n % 8 != 7 {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        publishing.set(false);
    };
    let events = |e: Event| {
        let mut r = report.borrow_mut();
        match e {
            Event::Sent { sequence, dup } => {
                *r.sent.entry(sequence).or_default() += 1;
                if dup {
                    r.dup.insert(sequence);
                }
            }
            Event::Rejected { sequence, reason } => r.refused.push((sequence, reason)),
            _ => {}
        }
    };
    let backoff = |_| tokio::time::sleep(Duration::from_millis(20));
    let driving = async {
        let stop = async {
            match drain {
                Drain::No => {}
                Drain::UntilIdle => loop {
                    if powered_off.get() || (!publishing.get() && outbox.lock().await.is_idle()) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                },
                Drain::UntilSet(flag) => {
                    wait_flag(flag).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        };
        let run = driver.run(&outbox, now_ms, events, false, backoff);
        let deadline = tokio::time::timeout(Duration::from_secs(90), select(run, stop));
        match deadline.await.expect("the boot did not finish") {
            Either::Second(()) => {}
            // The power was cut: this boot is over.
            Either::First(Err(Error::Outbox(OutboxError::Store(_)))) => powered_off.set(true),
            Either::First(r) if matches!(drain, Drain::UntilSet(_)) => drop(r),
            Either::First(r) => panic!("driver: {r:?}"),
        }
    };
    join(publisher, driving).await;
    if matches!(drain, Drain::UntilIdle) && !powered_off.get() {
        outbox.lock().await.flush().await.unwrap();
    }
    let mut r = report.into_inner();
    r.stats = driver.stats();
    r.idle = outbox.lock().await.is_idle();
    r
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn qos1(n: u32) -> OutboxConfig {
    OutboxConfig::new(n)
}

#[test]
fn a_offline_500_then_reboot_delivers_all_in_order() {
    let started = Instant::now();
    let broker = mosquitto();
    runtime().block_on(async {
        let faults = Arc::new(Faults::default());
        let proxy = start_proxy(broker.addr, faults.clone()).await;
        let received = raw::subscribe(broker.addr, "check-a", "e2e/a", 1).await;
        let mut flash = Sim::boxed();
        let (cfg, q) = (qos1(1000), QoS::AtLeastOnce);
        let boot1 = device::<W>(&mut flash, proxy, "dev-a", "e2e/a", cfg, 0..500, Drain::No, q).await;
        assert_eq!(boot1.stored, (0..500).collect::<Vec<_>>(), "all 500 persisted offline");
        assert!(received.snapshot().is_empty());
        let boot2 = device::<W>(&mut flash, proxy, "dev-a", "e2e/a", cfg, 0..0, Drain::UntilIdle, q).await;
        assert!(boot2.idle);
        assert_eq!(boot2.stats.delivered, 500);
        assert_eq!(boot2.stats.connects, 1, "{:?}", boot2.stats);
        wait_for(&received, 500, Duration::from_secs(20)).await;
        let got = received.snapshot();
        let (first, dups) = analyse(&got);
        assert_eq!(
            first,
            (0..500).collect::<Vec<_>>(),
            "first occurrences in publish order"
        );
        assert!(
            dups.is_subset(&boot2.resent()),
            "duplicates only of resent messages: {dups:?}"
        );
        eprintln!(
            "(a) minimq, 500 offline + reboot: delivered {}/500, {} duplicates, 0 resets, {} connects, {:.1} s",
            first.len(),
            got.len() - first.len(),
            boot2.stats.connects,
            started.elapsed().as_secs_f64()
        );
    });
}

#[test]
fn b_connection_resets_every_50_messages_lose_nothing() {
    let started = Instant::now();
    let broker = mosquitto();
    runtime().block_on(async {
        let faults = Arc::new(Faults::default());
        // A minimq (MQTT 5) publish of "e2e/b" with a reading is about 16 bytes.
        faults.reset_after_bytes.store(50 * 16, Ordering::Relaxed);
        let proxy = start_proxy(broker.addr, faults.clone()).await;
        let received = raw::subscribe(broker.addr, "check-b", "e2e/b", 1).await;
        let mut flash = Sim::boxed();
        let (cfg, q) = (qos1(5000), QoS::AtLeastOnce);
        let boot = device::<W>(&mut flash, proxy, "dev-b", "e2e/b", cfg, 0..2000, Drain::UntilIdle, q).await;
        assert!(boot.idle);
        assert_eq!(boot.stored.len(), 2000);
        let resets = faults.resets.load(Ordering::Relaxed);
        assert!(resets >= 20, "the proxy reset the connection ({resets} times)");
        assert!(u64::from(boot.stats.connects) > resets, "{:?}", boot.stats);
        wait_for(&received, 2000, Duration::from_secs(20)).await;
        let got = received.snapshot();
        let (first, dups) = analyse(&got);
        assert_eq!(first, (0..2000).collect::<Vec<_>>(), "none lost, in order");
        let resent = boot.resent();
        assert!(dups.is_subset(&resent), "duplicates only of resent messages: {dups:?}");
        eprintln!(
            "(b) minimq, 2,000 with a reset every ~50: delivered {}/2000, {} duplicates, all among the {} resent, {resets} resets, {} connects, {:.1} s",
            first.len(),
            got.len() - first.len(),
            resent.len(),
            boot.stats.connects,
            started.elapsed().as_secs_f64()
        );
    });
}

#[test]
fn c_overflow_policies_apply_exactly() {
    let started = Instant::now();
    let broker = mosquitto();
    let mut figures = Vec::new();
    runtime().block_on(async {
        for (policy, topic) in [
            (OverflowPolicy::RejectNewest, "e2e/c1"),
            (OverflowPolicy::DropOldest, "e2e/c2"),
        ] {
            let faults = Arc::new(Faults::default());
            let proxy = start_proxy(broker.addr, faults.clone()).await;
            let id = topic.replace('/', "-");
            let received = raw::subscribe(broker.addr, &format!("check-{id}"), topic, 1).await;
            let mut flash = Sim::boxed();
            let mut cfg = qos1(100);
            cfg.overflow = policy;
            let (dev, q) = (format!("dev-{id}"), QoS::AtLeastOnce);
            let offline = device::<W>(&mut flash, proxy, &dev, topic, cfg, 0..150, Drain::No, q).await;
            let expect: Vec<u32> = match policy {
                OverflowPolicy::RejectNewest => {
                    assert_eq!(offline.stored, (0..100).collect::<Vec<_>>());
                    assert_eq!(offline.rejected, (100..150).collect::<Vec<_>>());
                    assert!(offline.dropped.is_empty());
                    (0..100).collect()
                }
                OverflowPolicy::DropOldest => {
                    assert_eq!(offline.stored, (0..150).collect::<Vec<_>>());
                    assert!(offline.rejected.is_empty());
                    assert_eq!(offline.dropped, (0..50).collect::<Vec<_>>(), "dropped ones reported");
                    (50..150).collect()
                }
            };
            let online = device::<W>(&mut flash, proxy, &dev, topic, cfg, 0..0, Drain::UntilIdle, q).await;
            assert!(online.idle);
            assert_eq!(online.stats.delivered, 100);
            wait_for(&received, 100, Duration::from_secs(20)).await;
            let got = received.snapshot();
            assert_eq!(got, expect, "{policy:?}: exactly the kept ones, once each, in order");
            figures.push(format!(
                "{policy:?} {} delivered ({}..={}), {} rejected, {} dropped",
                got.len(),
                got[0],
                got[got.len() - 1],
                offline.rejected.len(),
                offline.dropped.len()
            ));
        }
    });
    eprintln!(
        "(c) minimq, 150 into 100: {}; 0 duplicates, 0 resets, {:.1} s",
        figures.join("; "),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn d_power_cut_mid_burst_loses_no_acknowledged_publish() {
    let started = Instant::now();
    let broker = mosquitto();
    runtime().block_on(async {
        let faults = Arc::new(Faults::default());
        let proxy = start_proxy(broker.addr, faults.clone()).await;
        let received = raw::subscribe(broker.addr, "check-d", "e2e/d", 1).await;
        let mut flash = Sim::boxed();
        flash.set_ecc(true);
        // Cut during the burst (a put is one or two flash writes, an acknowledgement one).
        flash.cut_power_at_op(Some(300));
        let (cfg, q) = (qos1(1000), QoS::AtLeastOnce);
        let boot1 = device::<W>(&mut flash, proxy, "dev-d", "e2e/d", cfg, 0..400, Drain::UntilIdle, q).await;
        assert!(!flash.is_powered(), "the power cut happened during the burst");
        let durable = boot1.stored.len();
        assert!(durable < 400 && durable > 0, "{durable}");
        assert_eq!(boot1.stored, (0..durable as u32).collect::<Vec<_>>());
        assert!(boot1.stats.delivered > 0, "the cut came while the driver was delivering");
        flash.restore_power();
        let boot2 = device::<W>(&mut flash, proxy, "dev-d", "e2e/d", cfg, 0..0, Drain::UntilIdle, q).await;
        assert!(boot2.idle);
        wait_for(&received, durable, Duration::from_secs(20)).await;
        let got = received.snapshot();
        let (first, dups) = analyse(&got);
        // Acknowledged messages whose removal the cut caught unflushed are sent again after
        // the reboot: a duplicate is always of a message sent before the cut.
        let sent_before: HashSet<u32> = boot1.sent.keys().copied().collect();
        assert!(dups.is_subset(&sent_before), "duplicates only of messages sent before the cut: {dups:?}");
        let delivered: HashSet<u32> = first.iter().copied().collect();
        let missing: Vec<u32> = boot1.stored.iter().copied().filter(|n| !delivered.contains(n)).collect();
        assert!(missing.is_empty(), "acknowledged publishes lost: {missing:?}");
        // Only the publish the cut interrupted may have reached the flash whole.
        assert!(first.len() <= durable + 1, "{} delivered", first.len());
        assert!(first.windows(2).all(|w| w[0] < w[1]), "first occurrences in publish order");
        eprintln!(
            "(d) minimq, power cut after {durable} durable publishes ({} sent, {} acknowledged before the cut): delivered {}/{durable}, {} duplicates, all of messages sent before the cut, 0 resets, {:.1} s",
            sent_before.len(),
            boot1.stats.delivered,
            first.iter().filter(|&&n| (n as usize) < durable).count(),
            got.len() - first.len(),
            started.elapsed().as_secs_f64()
        );
    });
}

// ---------------------------------------------------------------- (e) QoS 2

fn qos2_subscriber(broker: SocketAddr, id: &str, topic: &str) -> impl Future<Output = raw::Received> {
    raw::subscribe(broker, id, topic, 2)
}

#[test]
fn e1_qos2_without_reboot_is_exactly_once() {
    let started = Instant::now();
    let broker = mosquitto();
    runtime().block_on(async {
        let faults = Arc::new(Faults::default());
        let proxy = start_proxy(broker.addr, faults.clone()).await;
        let received = qos2_subscriber(broker.addr, "check-e1", "e2e/e1").await;
        let mut flash = Sim::boxed();
        let (cfg, q) = (qos1(1000), QoS::ExactlyOnce);
        let boot = device::<W>(&mut flash, proxy, "dev-e1", "e2e/e1", cfg, 0..300, Drain::UntilIdle, q).await;
        assert!(boot.idle);
        assert_eq!(boot.stats.delivered, 300);
        assert!(boot.resent().is_empty());
        wait_for(&received, 300, Duration::from_secs(20)).await;
        let got = received.snapshot();
        assert_eq!(got, (0..300).collect::<Vec<_>>(), "each exactly once, in order");
        eprintln!(
            "(e1) minimq, QoS 2 without reboot: delivered {}/300, 0 duplicates, 0 resets, {:.1} s",
            got.len(),
            started.elapsed().as_secs_f64()
        );
    });
}

/// Ten QoS 2 publishes, one in flight at a time; the proxy cuts the connection at the sixth
/// PUBREL (reading 5), dropping it (`forward` false) or after forwarding it (`forward` true,
/// so the broker releases reading 5 and its PUBCOMP is lost), and stays down; the device
/// reboots; the second boot drains. Returns (received before the reboot, after, resent in
/// boot 2).
async fn qos2_reboot_between_pubrec_and_pubcomp(
    broker: SocketAddr,
    name: &str,
    forward: bool,
) -> (Vec<u32>, Vec<u32>, HashSet<u32>) {
    let topic = format!("e2e/{name}");
    let received = qos2_subscriber(broker, &format!("check-{name}"), &topic).await;
    let proxy = if forward {
        raw::start_cut_proxy_after(broker, 6, 6).await
    } else {
        raw::start_cut_proxy(broker, 6, 6).await
    };
    let mut flash = Sim::boxed();
    let (cfg, q, dev) = (qos1(100), QoS::ExactlyOnce, format!("dev-{name}"));
    let until = Drain::UntilSet(&proxy.down);
    let boot1 = device::<1>(&mut flash, proxy.addr, &dev, &topic, cfg, 0..10, until, q).await;
    assert!(proxy.down.load(Ordering::Relaxed), "the proxy cut at the sixth PUBREL");
    assert_eq!(boot1.stats.delivered, 5, "PUBCOMP for readings 0..5: {:?}", boot1.stats);
    wait_for(&received, if forward { 6 } else { 5 }, Duration::from_secs(5)).await;
    let before = received.snapshot();
    // Reboot; the broker is reachable again.
    proxy.down.store(false, Ordering::Relaxed);
    let boot2 = device::<1>(&mut flash, proxy.addr, &dev, &topic, cfg, 0..0, Drain::UntilIdle, q).await;
    assert!(boot2.idle);
    assert_eq!(boot2.stats.delivered, 5, "readings 5..10 completed after the reboot");
    wait_for(&received, 10, Duration::from_secs(10)).await;
    (before, received.snapshot(), boot2.resent())
}

#[test]
fn e2_qos2_reboot_before_the_broker_got_pubrel_delivers_once() {
    let started = Instant::now();
    let broker = mosquitto();
    runtime().block_on(async {
        let (before, got, resent) = qos2_reboot_between_pubrec_and_pubcomp(broker.addr, "e2", false).await;
        assert_eq!(
            before,
            (0..5).collect::<Vec<_>>(),
            "reading 5 is held by the broker, unreleased"
        );
        assert_eq!(
            resent,
            HashSet::from([5]),
            "reading 5 is published again (a new message)"
        );
        // The clean start discarded the broker's unreleased copy: once each.
        assert_eq!(got, (0..10).collect::<Vec<_>>(), "each exactly once, in order");
        eprintln!(
            "(e2) minimq, QoS 2 reboot after PUBREC, PUBREL lost: delivered {}/10, 0 duplicates, 1 reset, {:.1} s",
            got.len(),
            started.elapsed().as_secs_f64()
        );
    });
}

#[test]
fn e3_qos2_reboot_after_the_broker_got_pubrel_duplicates_only_that_message() {
    let started = Instant::now();
    let broker = mosquitto();
    runtime().block_on(async {
        let (before, got, resent) = qos2_reboot_between_pubrec_and_pubcomp(broker.addr, "e3", true).await;
        assert_eq!(before, (0..6).collect::<Vec<_>>(), "reading 5 released by the PUBREL");
        assert_eq!(resent, HashSet::from([5]));
        // The PUBCOMP was lost: minimq cannot send PUBREL after the reboot, so reading 5 is
        // published again and delivered a second time. Nothing else is duplicated or lost.
        let expect: Vec<u32> = (0..6).chain(5..10).collect();
        assert_eq!(got, expect, "at least once: one duplicate, of reading 5");
        eprintln!(
            "(e3) minimq, QoS 2 reboot after PUBREL, PUBCOMP lost: delivered 10/10, 1 duplicate (reading 5), 1 reset, {:.1} s",
            started.elapsed().as_secs_f64()
        );
    });
}

// ---------------------------------------------------------------- (f) broker rejection

#[test]
fn f_a_puback_with_an_error_code_removes_the_message_and_is_reported() {
    let started = Instant::now();
    // Anonymous clients may publish on e2e/f/ok only; mosquitto answers an MQTT 5 publish it
    // denies with PUBACK 0x87 (not authorized).
    let acl = "topic read e2e/f/#\ntopic readwrite e2e/f/ok\n";
    let broker = start_broker_with_acl(BrokerKind::Mosquitto, Some(acl));
    runtime().block_on(async {
        let faults = Arc::new(Faults::default());
        let proxy = start_proxy(broker.addr, faults.clone()).await;
        let received = raw::subscribe(broker.addr, "check-f", "e2e/f/#", 1).await;
        let mut flash = Sim::boxed();
        let (cfg, q) = (qos1(100), QoS::AtLeastOnce);
        let denied = device::<W>(&mut flash, proxy, "dev-f", "e2e/f/denied", cfg, 0..20, Drain::UntilIdle, q).await;
        assert!(denied.idle, "refused messages are removed");
        assert_eq!(denied.stats.delivered, 0);
        let refused: Vec<u32> = denied.refused.iter().map(|&(s, _)| s).collect();
        assert_eq!(refused, (0..20).collect::<Vec<_>>(), "each refusal reported once, in order");
        assert!(denied.refused.iter().all(|&(_, r)| r == 0x87), "{:?}", denied.refused);
        assert_eq!(denied.stats.connects, 1, "a refusal does not end the connection");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(received.snapshot().is_empty(), "the broker delivered none of the refused");
        // The store is empty again, so the sequence numbers start over.
        let allowed = device::<W>(&mut flash, proxy, "dev-f", "e2e/f/ok", cfg, 0..20, Drain::UntilIdle, q).await;
        assert!(allowed.idle);
        assert_eq!(allowed.stats.delivered, 20);
        assert!(allowed.refused.is_empty());
        wait_for(&received, 20, Duration::from_secs(10)).await;
        let got = received.snapshot();
        assert_eq!(got, (0..20).collect::<Vec<_>>(), "only the allowed ones, once each, in order");
        eprintln!(
            "(f) minimq, 20 refused (PUBACK 0x87) then 20 allowed: delivered {}/20, {} refused and removed, 0 duplicates, 0 resets, {:.1} s",
            got.len(),
            refused.len(),
            started.elapsed().as_secs_f64()
        );
    });
}
