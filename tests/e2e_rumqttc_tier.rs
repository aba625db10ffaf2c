//! End to end for the RAM-first tier (`TieredOutbox`, DESIGN section 19) through the rumqttc
//! adapter against mosquitto on 127.0.0.1: the gateway of tests/e2e_rumqttc.rs (rumqttc 0.25
//! driven by `Driver`, the store on a simulated NOR flash, a fault-injecting TCP proxy), with
//! `RumqttcOutbox::restore_tiered` instead of `restore`; a raw-TCP subscriber checks what the
//! broker delivers. `MQTT_BROKER=rumqttd` runs against rumqttd in process instead.
//!
//! (a) healthy link: every publish delivered in order, zero message bytes on flash, against
//!     the same run with `Persist::Always`;
//! (b) broker outage mid-run: what was in RAM is spilled at the loss, publishes during the
//!     outage go to flash, all delivered after the reconnect in publish order;
//! (c) `spill_all` with messages in RAM (sent, acknowledgements delayed), then a reboot (RAM
//!     lost by design): everything spilled is delivered by the next boot.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/rumqttc_gateway.rs"]
mod gateway;
#[path = "support/raw_mqtt.rs"]
mod raw;
#[path = "../examples/support/tcp.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gateway::*;
use mqtt_persist::adapter::rumqttc::{Driver, Event, RumqttcOutbox, Stats};
use mqtt_persist::mqtt::{OutboxConfig, Persist, Publish, QoS, TierReceipt, TieredOutbox};
use support::{Faults, start_proxy};

/// RAM queue entries.
const R: usize = 32;
type Tier = TieredOutbox<TestStore, W, BUF, R>;
type TierOutbox = RumqttcOutbox<TestStore, W, BUF, Tier>;

const RAM_FIRST: Persist = Persist::RamFirst { spill_after_ms: 60_000 };

/// One boot: the tier restored from `flash`, the driver spawned (stopped by `stop`).
struct Boot {
    outbox: TierOutbox,
    drive: tokio::task::JoinHandle<Stats>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Flash bytes written when the boot was restored.
    written_at_start: u64,
}

fn written(flash: &SharedFlash) -> u64 {
    flash.sim().stats().write_bytes
}

async fn boot(flash: &SharedFlash, proxy: SocketAddr, client_id: &str, persist: Persist) -> Boot {
    let store = mount(flash, client_id).await;
    let outbox = TierOutbox::restore_tiered(store, OutboxConfig::new(1000), persist)
        .await
        .unwrap();
    let written_at_start = written(flash);
    let (client, mut driver) = Driver::new(outbox.clone(), options(client_id, proxy), 16, settings()).unwrap();
    let connected = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let drive = {
        let (connected, stop) = (connected.clone(), stop.clone());
        tokio::spawn(async move {
            let _client = client;
            let mut events = |e: Event| match e {
                Event::Connected { .. } => connected.store(true, Ordering::Relaxed),
                Event::ConnectionLost => connected.store(false, Ordering::Relaxed),
                _ => {}
            };
            tokio::select! {
                r = driver.run(now_ms, &mut events, false) => panic!("driver ended: {r:?}"),
                () = wait_flag(&stop) => {}
            }
            driver.stats()
        })
    };
    Boot {
        outbox,
        drive,
        connected,
        stop,
        written_at_start,
    }
}

impl Boot {
    /// Publishes reading `n` (payload = `n` = its sequence number), at most `R / 2` in RAM.
    async fn publish(&self, topic: &str, n: u32) -> TierReceipt {
        while self.outbox.with(|t| t.in_ram()).await.unwrap() >= R / 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let text = n.to_string();
        let mut msg = Publish::new(topic, text.as_bytes());
        msg.qos = QoS::AtLeastOnce;
        let receipt = self.outbox.publish(&msg, now_ms()).await.unwrap();
        let sequence = match receipt {
            TierReceipt::Ram { sequence, .. } => sequence,
            TierReceipt::Flash { receipt, .. } => match receipt {
                mqtt_persist::mqtt::Receipt::Stored { sequence, .. } => sequence,
                other => panic!("{other:?}"),
            },
        };
        assert_eq!(sequence, n, "payload and sequence number agree");
        receipt
    }

    async fn wait_idle(&self, limit: Duration) {
        let start = Instant::now();
        while !self.outbox.is_idle().await.unwrap() {
            assert!(start.elapsed() < limit, "not idle after {limit:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the driver (cancelled: a reboot) and drops everything but the flash; returns the
    /// driver's counters and the flash bytes written during the boot.
    async fn end(self, flash: &SharedFlash) -> (Stats, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let stats = self.drive.await.expect("driver task");
        let start = Instant::now();
        let mut outbox = self.outbox;
        loop {
            match outbox.try_into_inner() {
                Ok(tier) => {
                    drop(tier.into_outbox().into_store_unflushed());
                    break;
                }
                Err(back) => outbox = back,
            }
            assert!(start.elapsed() < Duration::from_secs(5), "outbox still shared");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (stats, written(flash) - self.written_at_start)
    }
}

async fn wait_connected(flag: &AtomicBool) {
    tokio::time::timeout(Duration::from_secs(10), wait_flag(flag))
        .await
        .expect("no CONNACK");
}

/// `n` readings over a healthy link in `persist` mode; returns (flash bytes written, stats).
async fn healthy(broker: SocketAddr, persist: Persist, id: &str, n: u32) -> (u64, Stats) {
    let faults = Arc::new(Faults::default());
    let proxy = start_proxy(broker, faults).await;
    let topic = format!("e2e/tier/{id}");
    let received = raw::subscribe(broker, &format!("check-{id}"), &topic, 1).await;
    let flash = SharedFlash::new();
    let b = boot(&flash, proxy, id, persist).await;
    wait_connected(&b.connected).await;
    for i in 0..n {
        b.publish(&topic, i).await;
    }
    wait_for(&received, n as usize, Duration::from_secs(20)).await;
    b.wait_idle(Duration::from_secs(10)).await;
    b.outbox.flush().await.unwrap();
    let (stats, bytes) = b.end(&flash).await;
    let (first, dups) = analyse(&received.snapshot());
    assert_eq!(
        first,
        (0..n).collect::<Vec<_>>(),
        "{persist:?}: all delivered, in order"
    );
    assert!(
        dups.is_empty(),
        "{persist:?}: no duplicates on a healthy link: {dups:?}"
    );
    assert_eq!(stats.delivered, n);
    (bytes, stats)
}

#[test]
fn a_healthy_link_writes_no_message_to_flash() {
    let started = Instant::now();
    let broker = start_broker();
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            const N: u32 = 300;
            let (always, _) = healthy(broker.addr, Persist::Always, "tier-a-always", N).await;
            let (ram_first, stats) = healthy(broker.addr, RAM_FIRST, "tier-a-ram", N).await;
            // Every publish stayed in RAM until its PUBACK: nothing but the mount's records.
            assert_eq!(ram_first, 0, "RAM-first on a healthy link writes no message");
            assert!(always >= u64::from(N) * 40, "always-persist writes every record: {always}");
            eprintln!(
                "(a) healthy link, {N} QoS 1: delivered {} in order; flash bytes written: RAM-first {ram_first}, always-persist {always} ({:.1} B/message); {:?}",
                stats.delivered,
                always as f64 / f64::from(N),
                started.elapsed()
            );
        })
        .await
        .expect("scenario (a) timed out");
    });
}

#[test]
fn b_outage_mid_run_delivers_every_spilled_message_in_order() {
    let started = Instant::now();
    let broker = start_broker();
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let faults = Arc::new(Faults::default());
            let proxy = start_proxy(broker.addr, faults.clone()).await;
            let topic = "e2e/tier/b";
            let received = raw::subscribe(broker.addr, "check-tier-b", topic, 1).await;
            let flash = SharedFlash::new();
            let b = boot(&flash, proxy, "tier-b", RAM_FIRST).await;
            wait_connected(&b.connected).await;
            // Acknowledgements slow enough that RAM holds messages when the link goes.
            faults.latency_us.store(200_000, Ordering::Relaxed);
            for i in 0..100 {
                b.publish(topic, i).await;
            }
            let in_ram = b.outbox.with(|t| t.in_ram()).await.unwrap();
            faults.down.store(true, Ordering::Relaxed);
            tokio::time::timeout(Duration::from_secs(10), async {
                while b.connected.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("loss not seen");
            let (ram_after, spilled) = b
                .outbox
                .with(|t| (t.in_ram(), t.outbox().capacity().buffered))
                .await
                .unwrap();
            assert_eq!(ram_after, 0, "the loss spilled the RAM queue");
            assert!(spilled > 0, "something was waiting in RAM at the loss ({in_ram} just before)");
            let delivered_before = received.distinct();
            let mut to_flash = 0;
            for i in 100..150 {
                if let TierReceipt::Flash { .. } = b.publish(topic, i).await {
                    to_flash += 1;
                }
            }
            assert_eq!(to_flash, 50, "link down: publishes go straight to flash");
            faults.latency_us.store(0, Ordering::Relaxed);
            faults.down.store(false, Ordering::Relaxed);
            wait_for(&received, 150, Duration::from_secs(20)).await;
            b.wait_idle(Duration::from_secs(10)).await;
            b.outbox.flush().await.unwrap();
            let (stats, bytes) = b.end(&flash).await;
            let got = received.snapshot();
            let (first, dups) = analyse(&got);
            assert_eq!(first, (0..150).collect::<Vec<_>>(), "all delivered, in publish order");
            eprintln!(
                "(b) outage after 100 of 150: {in_ram} in RAM at the cut, {spilled} spilled, {to_flash} published to flash offline, {delivered_before} delivered before; after reconnect all 150 in order, {} duplicates, {} resent; flash bytes written {bytes}; {:?}",
                dups.len(),
                stats.resent,
                started.elapsed()
            );
        })
        .await
        .expect("scenario (b) timed out");
    });
}

#[test]
fn c_spill_all_then_reboot_delivers_everything_spilled() {
    let started = Instant::now();
    let broker = start_broker();
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let faults = Arc::new(Faults::default());
            let proxy = start_proxy(broker.addr, faults.clone()).await;
            let topic = "e2e/tier/c";
            let received = raw::subscribe(broker.addr, "check-tier-c", topic, 1).await;
            let flash = SharedFlash::new();
            let b = boot(&flash, proxy, "tier-c", RAM_FIRST).await;
            wait_connected(&b.connected).await;
            // Sent, but nothing comes back before the reboot.
            faults.latency_us.store(5_000_000, Ordering::Relaxed);
            for i in 0..12 {
                b.publish(topic, i).await;
            }
            let in_ram = b.outbox.with(|t| t.in_ram()).await.unwrap();
            assert_eq!(in_ram, 12, "all in RAM on an up link");
            let spilled = b.outbox.spill_all().await.unwrap();
            assert_eq!(spilled, 12);
            let (_, bytes1) = b.end(&flash).await;
            // Reboot: RAM gone, flash kept, the link healthy again.
            faults.latency_us.store(0, Ordering::Relaxed);
            faults.down.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            faults.down.store(false, Ordering::Relaxed);
            let b2 = boot(&flash, proxy, "tier-c", RAM_FIRST).await;
            let restored = b2.outbox.capacity().await.unwrap().buffered;
            assert_eq!(restored, 12, "everything spilled is on flash after the reboot");
            wait_for(&received, 12, Duration::from_secs(20)).await;
            b2.wait_idle(Duration::from_secs(10)).await;
            b2.outbox.flush().await.unwrap();
            let (stats, bytes2) = b2.end(&flash).await;
            let got = received.snapshot();
            let (first, dups) = analyse(&got);
            assert_eq!(first, (0..12).collect::<Vec<_>>(), "everything spilled delivered, in order");
            eprintln!(
                "(c) 12 in RAM, spill_all {spilled}, reboot: {restored} restored from flash, {} delivered in order ({} duplicates, {} sent by boot 2); flash bytes boot 1 {bytes1}, boot 2 {bytes2}; {:?}",
                first.len(),
                dups.len(),
                stats.sent,
                started.elapsed()
            );
        })
        .await
        .expect("scenario (c) timed out");
    });
}
