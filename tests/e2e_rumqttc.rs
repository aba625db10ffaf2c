//! End to end for `adapter::rumqttc` against mosquitto on 127.0.0.1: a gateway (rumqttc 0.25
//! driven by `Driver`, the outbox on a simulated NOR flash, every outbox call on tokio's
//! blocking pool) talks to the broker through a fault-injecting TCP proxy; a checking
//! subscriber written here over raw TCP (tests/support/raw_mqtt.rs, not rumqttc) connects
//! straight to the broker. The gateway (one boot of the device) is in
//! tests/support/rumqttc_gateway.rs.
//!
//! Each test starts its own mosquitto (free port, config in a temp dir, listener on
//! 127.0.0.1; `apt-get install -y mosquitto`). `MQTT_BROKER=rumqttd` runs (a) to (d) against
//! rumqttd in process instead. Every wait is bounded; a scenario that stalls fails on its
//! hard timeout. The driver runs in a `tokio::spawn`ed task on a multi-threaded runtime.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/rumqttc_gateway.rs"]
mod gateway;
#[path = "support/raw_mqtt.rs"]
mod raw;
#[path = "../examples/support/tcp.rs"]
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway::*;
use mqtt_persist::adapter::rumqttc::{Driver, Error, Event, RumqttcOutbox, Settings};
use mqtt_persist::mqtt::{OutboxConfig, OverflowPolicy, Publish, QoS};
use support::{Faults, start_proxy};

// ---------------------------------------------------------------- scenarios

#[test]
fn a_offline_500_then_reboot_delivers_all_in_order() {
    let started = Instant::now();
    let broker = start_broker();
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let faults = Arc::new(Faults::default());
            faults.down.store(true, Ordering::Relaxed);
            let proxy = start_proxy(broker.addr, faults.clone()).await;
            let received = raw::subscribe(broker.addr, "check-a", "e2e/a", 1).await;
            let flash = SharedFlash::new();
            let cfg = OutboxConfig::new(1000);
            let boot1 = device(&flash, proxy, "dev-a", "e2e/a", cfg, 0..500, Drain::No, QoS::AtLeastOnce).await;
            assert_eq!(boot1.stored.len(), 500, "all 500 persisted while the broker is unreachable");
            assert_eq!(boot1.stats.connects, 0);
            assert!(boot1.stats.connection_losses > 0, "the driver kept trying");
            assert!(received.snapshot().is_empty());
            // Reboot: store, outbox and client dropped, flash kept; the broker is reachable.
            faults.down.store(false, Ordering::Relaxed);
            let boot2 = device(&flash, proxy, "dev-a", "e2e/a", cfg, 0..0, Drain::UntilIdle, QoS::AtLeastOnce).await;
            assert!(boot2.idle);
            assert_eq!(boot2.stats.delivered, 500);
            wait_for(&received, 500, Duration::from_secs(20)).await;
            let got = received.snapshot();
            let (first, dups) = analyse(&got);
            assert_eq!(first, (0..500).collect::<Vec<_>>(), "first occurrences in publish order");
            assert!(dups.is_subset(&boot2.resent), "duplicates only of resent messages: {dups:?}");
            eprintln!(
                "(a) 500 offline + reboot: {} received, {} duplicates, {} resent (DUP: the first W after the reboot), {:?}",
                got.len(),
                got.len() - 500,
                boot2.resent.len(),
                started.elapsed()
            );
        })
        .await
        .expect("scenario (a) timed out");
    });
}

#[test]
fn b_connection_resets_every_50_messages_lose_nothing() {
    let started = Instant::now();
    let broker = start_broker();
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(90), async {
            let faults = Arc::new(Faults::default());
            // A publish of "e2e/b" with a reading is 13..15 bytes on the wire.
            faults.reset_after_bytes.store(50 * 14, Ordering::Relaxed);
            let proxy = start_proxy(broker.addr, faults.clone()).await;
            // A recording tap in front of it: what the device put on each connection.
            let tap = raw::start_cut_proxy(proxy, 0, 0).await;
            let received = raw::subscribe(broker.addr, "check-b", "e2e/b", 1).await;
            let flash = SharedFlash::new();
            let boot = device(
                &flash,
                tap.addr,
                "dev-b",
                "e2e/b",
                OutboxConfig::new(5000),
                0..2000,
                Drain::UntilIdle,
                QoS::AtLeastOnce,
            )
            .await;
            assert!(boot.idle, "everything acknowledged");
            let resets = faults.resets.load(Ordering::Relaxed);
            assert!(resets >= 20, "the proxy reset the connection ({resets} times)");
            assert!(boot.stats.connects as u64 > resets / 2, "{:?}", boot.stats);
            wait_for(&received, 2000, Duration::from_secs(20)).await;
            let got = received.snapshot();
            let (first, dups) = analyse(&got);
            assert_eq!(first, (0..2000).collect::<Vec<_>>(), "none lost, first occurrences in order");
            assert!(dups.is_subset(&boot.resent), "duplicates only of resent messages: {dups:?}");
            // One source of replay: rumqttc's own `pending` replay would put a message on a
            // connection a second time (its old packet id beside the outbox's resend).
            let wire = tap.publishes.lock().unwrap().clone();
            let mut per_connection = HashSet::new();
            for (conn, payload) in &wire {
                assert!(
                    per_connection.insert((*conn, payload.clone())),
                    "reading {} sent twice on connection {conn}",
                    String::from_utf8_lossy(payload)
                );
            }
            let on_wire = wire.len();
            assert!(on_wire >= 2000 && on_wire <= 2000 + resets as usize * W, "{on_wire} publishes on the wire");
            eprintln!(
                "(b) {on_wire} publishes on the wire, none twice on one connection"
            );
            eprintln!(
                "(b) 2,000 with a reset every ~50: {resets} resets, {} connects, {} received, {} duplicates, {} resent, {:?}",
                boot.stats.connects,
                got.len(),
                got.len() - 2000,
                boot.resent.len(),
                started.elapsed()
            );
        })
        .await
        .expect("scenario (b) timed out");
    });
}

#[test]
fn c_overflow_policies_apply_exactly() {
    let started = Instant::now();
    let broker = start_broker();
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            for (policy, topic) in [
                (OverflowPolicy::RejectNewest, "e2e/c1"),
                (OverflowPolicy::DropOldest, "e2e/c2"),
            ] {
                let faults = Arc::new(Faults::default());
                faults.down.store(true, Ordering::Relaxed);
                let proxy = start_proxy(broker.addr, faults.clone()).await;
                let id = topic.replace('/', "-");
                let received = raw::subscribe(broker.addr, &format!("check-{id}"), topic, 1).await;
                let flash = SharedFlash::new();
                let mut config = OutboxConfig::new(100);
                config.overflow = policy;
                let dev = format!("dev-{id}");
                let offline = device(&flash, proxy, &dev, topic, config, 0..150, Drain::No, QoS::AtLeastOnce).await;
                let expect: Vec<u32> = match policy {
                    OverflowPolicy::RejectNewest => {
                        assert_eq!(offline.rejected, (100..150).collect::<Vec<_>>());
                        assert!(offline.dropped.is_empty());
                        (0..100).collect()
                    }
                    OverflowPolicy::DropOldest => {
                        assert!(offline.rejected.is_empty());
                        assert_eq!(offline.dropped, (0..50).collect::<Vec<_>>(), "dropped ones reported");
                        (50..150).collect()
                    }
                };
                faults.down.store(false, Ordering::Relaxed);
                let online = device(
                    &flash,
                    proxy,
                    &dev,
                    topic,
                    config,
                    0..0,
                    Drain::UntilIdle,
                    QoS::AtLeastOnce,
                )
                .await;
                assert!(online.idle);
                assert_eq!(online.stats.delivered, 100);
                wait_for(&received, 100, Duration::from_secs(20)).await;
                let got = received.snapshot();
                let (first, _) = analyse(&got);
                assert_eq!(first, expect, "{policy:?}: exactly the kept ones, in order");
                eprintln!(
                    "(c) {policy:?}, 150 into 100: {} received ({} distinct)",
                    got.len(),
                    first.len()
                );
            }
            eprintln!("(c) overflow, both policies: {:?}", started.elapsed());
        })
        .await
        .expect("scenario (c) timed out");
    });
}

#[test]
fn d_power_cut_mid_burst_loses_no_acknowledged_publish() {
    let started = Instant::now();
    let broker = start_broker();
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let faults = Arc::new(Faults::default());
            let proxy = start_proxy(broker.addr, faults.clone()).await;
            let received = raw::subscribe(broker.addr, "check-d", "e2e/d", 1).await;
            let flash = SharedFlash::new();
            {
                let mut sim = flash.sim();
                sim.set_ecc(true);
                // Cut during the burst: a put is one or two flash writes.
                sim.cut_power_at_op(Some(300));
            }
            let cfg = OutboxConfig::new(1000);
            let boot1 = device(&flash, proxy, "dev-d", "e2e/d", cfg, 0..400, Drain::UntilIdle, QoS::AtLeastOnce).await;
            assert!(!flash.sim().is_powered(), "the power cut happened during the burst");
            assert!(
                boot1.stored.len() < 400 && !boot1.stored.is_empty(),
                "{}",
                boot1.stored.len()
            );
            flash.sim().restore_power();
            let boot2 = device(&flash, proxy, "dev-d", "e2e/d", cfg, 0..0, Drain::UntilIdle, QoS::AtLeastOnce).await;
            assert!(boot2.idle);
            wait_for(&received, boot1.stored.len(), Duration::from_secs(20)).await;
            let got = received.snapshot();
            let (first, _) = analyse(&got);
            let delivered: HashSet<u32> = first.iter().copied().collect();
            let missing: Vec<u32> = boot1.stored.iter().copied().filter(|n| !delivered.contains(n)).collect();
            assert!(missing.is_empty(), "acknowledged publishes lost: {missing:?}");
            assert!(first.windows(2).all(|w| w[0] < w[1]), "first occurrences in publish order");
            eprintln!(
                "(d) power cut after {} durable publishes ({} delivered before the cut): all delivered, {} received, {} duplicates, {:?}",
                boot1.stored.len(),
                boot1.stats.delivered,
                got.len(),
                got.len() - first.len(),
                started.elapsed()
            );
        })
        .await
        .expect("scenario (d) timed out");
    });
}

#[test]
fn e_qos2_reboot_between_pubrec_and_pubcomp_delivers_once() {
    if rumqttd() {
        // rumqttd 0.20 forgets an inbound QoS 2 message held for PUBREL when the connection
        // drops and closes the connection on the resumed PUBREL (see tests/broker_e2e.rs):
        // the scenario needs a broker that keeps the session.
        eprintln!("(e) skipped on rumqttd: it keeps no QoS 2 session state across a reconnect");
        return;
    }
    let started = Instant::now();
    let broker = start_broker();
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let received = raw::subscribe(broker.addr, "check-e", "e2e/e", 2).await;
            // rumqttc answers each PUBREC with PUBREL by itself. The proxy drops the sixth
            // PUBREL (that of reading 5), closes the connection and stays down: the broker
            // holds reading 5 unreleased, the device has just stored its PUBREL state.
            let proxy = raw::start_cut_proxy(broker.addr, 6, 6).await;
            let flash = SharedFlash::new();
            let config = OutboxConfig::new(100);
            let (cut_seen, boot1_log) = {
                let outbox: RumqttcOutbox<TestStore, 1, BUF> =
                    RumqttcOutbox::restore(mount(&flash, "dev-e").await, config).await.unwrap();
                for n in 0..10u32 {
                    let text = n.to_string();
                    let mut msg = Publish::new("e2e/e", text.as_bytes());
                    msg.qos = QoS::ExactlyOnce;
                    outbox.publish(&msg, 0).await.unwrap();
                }
                let (client, mut driver) =
                    Driver::new(outbox.clone(), options("dev-e", proxy.addr), 16, settings()).unwrap();
                let log = Arc::new(Mutex::new(Log::default()));
                let lost_after_5 = Arc::new(AtomicBool::new(false));
                let task = {
                    let (log, lost_after_5) = (log.clone(), lost_after_5.clone());
                    tokio::spawn(async move {
                        let mut events = |e: Event| {
                            let mut l = log.lock().unwrap();
                            l.record(&e);
                            if e == Event::ConnectionLost && l.received.contains(&5) {
                                lost_after_5.store(true, Ordering::Relaxed);
                            }
                        };
                        tokio::select! {
                            r = driver.run(now_ms, &mut events, false) => panic!("driver ended: {r:?}"),
                            () = wait_flag(&lost_after_5) => {}
                        }
                    })
                };
                // Reboot once the PUBREL state of reading 5 is durable and the link is gone.
                task.await.unwrap();
                drop(client);
                let received = log.lock().unwrap().received.clone();
                let out = (proxy.down.load(Ordering::Relaxed), received);
                shut_down(outbox).await;
                out
            };
            assert!(cut_seen, "the proxy cut at the sixth PUBREL");
            assert_eq!(boot1_log, (0..6).collect::<Vec<_>>(), "PUBREC for readings 0..=5");
            wait_for(&received, 5, Duration::from_secs(5)).await;
            assert_eq!(received.snapshot(), (0..5).collect::<Vec<_>>(), "reading 5 is held by the broker");

            // Boot 2: the PUBREL state comes back and goes first, with the same packet id.
            proxy.down.store(false, Ordering::Relaxed);
            let outbox: RumqttcOutbox<TestStore, 1, BUF> =
                RumqttcOutbox::restore(mount(&flash, "dev-e").await, config).await.unwrap();
            let c = outbox.capacity().await.unwrap();
            assert_eq!((c.pubrel_pending, c.buffered), (1, 4), "one PUBREL owed, readings 6..9 queued");
            let (client, mut driver) = Driver::new(outbox.clone(), options("dev-e", proxy.addr), 16, settings()).unwrap();
            let mut delivered = Vec::new();
            let mut sent = Vec::new();
            let mut session_present = None;
            driver
                .run(
                    now_ms,
                    |e| match e {
                        Event::Delivered { sequence } => delivered.push(sequence),
                        Event::Sent { sequence, .. } => sent.push(sequence),
                        Event::Connected { session_present: p } => session_present = Some(p),
                        _ => {}
                    },
                    true,
                )
                .await
                .unwrap();
            drop((client, driver));
            assert_eq!(session_present, Some(true), "the broker kept the session");
            assert_eq!(delivered, (5..10).collect::<Vec<_>>(), "PUBCOMP for 5 (lone PUBREL), then 6..9");
            assert_eq!(sent, (6..10).collect::<Vec<_>>(), "nothing PUBREC'd is published again");
            shut_down(outbox).await;
            wait_for(&received, 10, Duration::from_secs(10)).await;
            let got = received.snapshot();
            assert_eq!(got, (0..10).collect::<Vec<_>>(), "each delivered exactly once, in order");
            eprintln!(
                "(e) QoS 2 reboot between PUBREC and PUBCOMP: {} delivered, once each, reading 5 released by the lone PUBREL after the reboot, {:?}",
                got.len(),
                started.elapsed()
            );
        })
        .await
        .expect("scenario (e) timed out");
    });
}

// ---------------------------------------------------------------- error paths (stand-in broker)

/// One message queued on a fresh flash, and a driver for `addr`.
async fn one_message(
    client_id: &str,
    addr: SocketAddr,
    payload: &[u8],
    settings: Settings,
    tune: impl FnOnce(&mut rumqttc::MqttOptions),
) -> (
    RumqttcOutbox<TestStore, W, BUF>,
    Driver<TestStore, W, BUF>,
    rumqttc::AsyncClient,
) {
    let flash = SharedFlash::new();
    let outbox: RumqttcOutbox<TestStore, W, BUF> =
        RumqttcOutbox::restore(mount(&flash, client_id).await, OutboxConfig::new(10))
            .await
            .unwrap();
    outbox.publish(&Publish::new("e2e/f", payload), 0).await.unwrap();
    let mut opts = options(client_id, addr);
    tune(&mut opts);
    let (client, driver) = Driver::new(outbox.clone(), opts, 16, settings).unwrap();
    (outbox, driver, client)
}

#[test]
fn f_a_refused_connection_is_retried_with_backoff_then_a_typed_error() {
    runtime().block_on(async {
        // CONNACK return code 5: not authorized. Not a connection loss: no endless retry.
        let fake = raw::start_fake_broker(5, true).await;
        let mut s = settings();
        s.max_client_errors = 4;
        s.backoff_min = Duration::from_millis(20);
        let (outbox, mut driver, _client) = one_message("dev-f", fake.addr, b"1", s, |_| {}).await;
        let mut attempts = Vec::new();
        let started = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            driver.run(
                now_ms,
                |e| {
                    if let Event::ClientError { attempt, .. } = e {
                        attempts.push(attempt);
                    }
                },
                false,
            ),
        )
        .await
        .expect("the driver must give up, not spin");
        let elapsed = started.elapsed();
        match result {
            Err(Error::Client { error, attempts: 4 })
                if matches!(
                    *error,
                    rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::NotAuthorized)
                ) => {}
            other => panic!("expected a typed client error after 4 attempts: {other:?}"),
        }
        assert_eq!(attempts, [1, 2, 3, 4]);
        assert_eq!(fake.connects.load(Ordering::Relaxed), 4, "one connection per attempt");
        assert!(
            elapsed >= Duration::from_millis(20 + 40 + 80),
            "backoff between attempts: {elapsed:?}"
        );
        assert_eq!(
            outbox.capacity().await.unwrap().buffered,
            1,
            "the message is still on flash"
        );
        eprintln!("(f) refused connection: 4 attempts, typed error after {elapsed:?}");
    });
}

#[test]
fn g_a_message_rumqttc_refuses_to_send_ends_in_a_typed_error_and_stays_queued() {
    runtime().block_on(async {
        let fake = raw::start_fake_broker(0, true).await;
        let mut s = settings();
        s.max_client_errors = 3;
        // rumqttc refuses to encode a packet above its outgoing limit: each connection fails
        // on the same message at the head of the queue.
        let (outbox, mut driver, _client) = one_message("dev-g", fake.addr, &[b'7'; 200], s, |o| {
            o.set_max_packet_size(10 * 1024, 100);
        })
        .await;
        let result = tokio::time::timeout(Duration::from_secs(10), driver.run(now_ms, |_| {}, false))
            .await
            .expect("the driver must give up, not spin");
        match result {
            Err(Error::Client { error, attempts: 3 })
                if matches!(
                    *error,
                    rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                        rumqttc::Error::OutgoingPacketTooLarge { max: 100, .. },
                    ))
                ) => {}
            other => panic!("expected OutgoingPacketTooLarge after 3 attempts: {other:?}"),
        }
        assert_eq!(fake.connects.load(Ordering::Relaxed), 3);
        assert!(fake.publishes.lock().unwrap().is_empty(), "nothing reached the broker");
        assert_eq!(
            outbox.capacity().await.unwrap().buffered,
            1,
            "the message is still on flash"
        );
        eprintln!("(g) packet too large: typed error after 3 connections, message kept");
    });
}

#[test]
fn h_an_unacknowledged_publish_times_out_and_is_resent_with_dup() {
    runtime().block_on(async {
        // The stand-in broker never answers PUBLISH (but answers PINGREQ).
        let fake = raw::start_fake_broker(0, false).await;
        let mut s = settings();
        s.ack_timeout = Duration::from_millis(300);
        let (outbox, mut driver, _client) = one_message("dev-h", fake.addr, b"42", s, |o| {
            o.set_keep_alive(Duration::from_secs(1));
        })
        .await;
        let mut timeouts = Vec::new();
        let resent = async {
            while fake.publishes.lock().unwrap().len() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                r = driver.run(now_ms, |e| if let Event::AckTimeout { sequence } = e { timeouts.push(sequence) }, false) => panic!("driver ended: {r:?}"),
                () = resent => {}
            }
        })
        .await
        .expect("no resend after the acknowledgement timeout");
        let log = fake.publishes.lock().unwrap().clone();
        assert_eq!(timeouts, [Some(0)]);
        assert_eq!(log[0].0 + 1, log[1].0, "resent on the next connection");
        assert_eq!((log[0].1 & 0x08, log[1].1 & 0x08), (0, 0x08), "first without DUP, then with");
        assert_eq!((&log[0].2[..], &log[1].2[..]), (&b"42"[..], &b"42"[..]));
        assert_eq!(driver.stats().ack_timeouts, 1);
        assert_eq!(outbox.capacity().await.unwrap().buffered, 1);
        eprintln!("(h) ack timeout: resent with DUP on a new connection after {:?}", started.elapsed());
    });
}

#[test]
fn i_a_run_cancelled_every_10_ms_loses_nothing_and_keeps_order() {
    let started = Instant::now();
    let broker = start_broker();
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let received = raw::subscribe(broker.addr, "check-i", "e2e/i", 1).await;
            let flash = SharedFlash::new();
            let outbox: RumqttcOutbox<TestStore, W, BUF> =
                RumqttcOutbox::restore(mount(&flash, "dev-i").await, OutboxConfig::new(1000))
                    .await
                    .unwrap();
            for n in 0..800u32 {
                let text = n.to_string();
                outbox
                    .publish(&Publish::new("e2e/i", text.as_bytes()), 0)
                    .await
                    .unwrap();
            }
            let (_client, mut driver) =
                Driver::new(outbox.clone(), options("dev-i", broker.addr), 16, settings()).unwrap();
            let mut log = Log::default();
            let mut cancelled = 0;
            loop {
                // Cancelled wherever it is: in a poll, a fill, an acknowledgement, a backoff.
                let run = driver.run(now_ms, |e| log.record(&e), true);
                match tokio::time::timeout(Duration::from_millis(10), run).await {
                    Ok(r) => break r.unwrap(),
                    Err(_) => cancelled += 1,
                }
                assert!(cancelled < 1000, "no progress");
            }
            assert!(cancelled >= 3, "the run was cancelled mid-drain ({cancelled} times)");
            assert!(outbox.is_idle().await.unwrap());
            wait_for(&received, 800, Duration::from_secs(10)).await;
            let got = received.snapshot();
            let (first, dups) = analyse(&got);
            assert_eq!(
                first,
                (0..800).collect::<Vec<_>>(),
                "none lost, first occurrences in order"
            );
            assert!(
                dups.is_subset(&log.resent()),
                "duplicates only of resent messages: {dups:?}"
            );
            drop(driver);
            shut_down(outbox).await;
            eprintln!(
                "(i) 800 with the run cancelled {cancelled} times: {} received, {} duplicates, {} reconnects, {:?}",
                got.len(),
                got.len() - 800,
                log.connects,
                started.elapsed()
            );
        })
        .await
        .expect("scenario (i) timed out");
    });
}

#[test]
fn j_a_run_cancelled_while_handing_packets_to_rumqttc_does_not_stall() {
    let broker = start_broker();
    runtime().block_on(async {
        let received = raw::subscribe(broker.addr, "check-j", "e2e/j", 1).await;
        let flash = SharedFlash::new();
        let outbox: RumqttcOutbox<TestStore, W, BUF> =
            RumqttcOutbox::restore(mount(&flash, "dev-j").await, OutboxConfig::new(100))
                .await
                .unwrap();
        for n in 0..20u32 {
            let text = n.to_string();
            outbox
                .publish(&Publish::new("e2e/j", text.as_bytes()), 0)
                .await
                .unwrap();
        }
        let (_client, mut driver) = Driver::new(outbox.clone(), options("dev-j", broker.addr), 16, settings()).unwrap();
        // The first hand-out after the CONNACK reads a slow flash (over 25 ms), so the first
        // run is cancelled inside it: the outbox has handed packets out that never reached
        // rumqttc. The next run must notice and start over, not wait for their PUBACKs.
        flash.slow_reads.store(40, Ordering::Relaxed);
        let started = Instant::now();
        let mut cancelled = 0;
        loop {
            match tokio::time::timeout(Duration::from_millis(25), driver.run(now_ms, |_| {}, true)).await {
                Ok(r) => break r.unwrap(),
                Err(_) => cancelled += 1,
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "stalled: handed-out packets never sent ({cancelled} runs cancelled)"
            );
        }
        assert!(cancelled >= 1);
        wait_for(&received, 20, Duration::from_secs(5)).await;
        let (first, _) = analyse(&received.snapshot());
        assert_eq!(first, (0..20).collect::<Vec<_>>());
        drop(driver);
        shut_down(outbox).await;
        eprintln!(
            "(j) run cancelled inside a hand-out ({cancelled} cancellations): 20/20 delivered, {:?}",
            started.elapsed()
        );
    });
}
