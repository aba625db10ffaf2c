//! Replay over a slow link: 1,000 messages buffered on (simulated) flash while offline are
//! replayed through a TCP proxy that adds 50 ms of one-way latency, with a window of 1 and of
//! 8 publishes in flight. Prints msgs/s and checks that the broker saw them in order.
//!
//! `cargo run --release --example replay_bench [-- MESSAGES [LATENCY_MS]]`
//!
//! The broker is rumqttd, in process, on 127.0.0.1.

#[path = "support/tcp.rs"]
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use critical_section as _;
use embassy_futures::select::select;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use mqtt_persist::adapter::SharedOutbox;
use mqtt_persist::adapter::mqttrust::{EpochNetwork, Link, MqttrustClient};
use mqtt_persist::flash::SimFlash;
use mqtt_persist::mqtt::{OutboxConfig, Publish};
use mqtt_persist::{Config, Store};
use support::{Faults, TokioNetwork, start_proxy};

type Sim = SimFlash<4096, 64, 4, 4>;

fn start_rumqttd() -> SocketAddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    support::start_rumqttd(addr);
    addr
}

/// Buffers `n` messages offline, then replays them with window `W`; returns msgs/s.
async fn run<const W: usize>(broker: SocketAddr, n: u32, latency_ms: u64) -> f64 {
    let topic = format!("bench/w{W}");
    let received =
        support::subscribe_readings(broker, &format!("bench-check-w{W}"), &topic, rumqttc::QoS::AtLeastOnce).await;
    let faults = Arc::new(Faults::default());
    faults.latency_us.store(latency_ms * 1000, Ordering::Relaxed);
    let proxy = start_proxy(broker, faults).await;

    let mut flash = Sim::boxed();
    let mut store: Store<&mut Sim, 64> = Store::mount(&mut *flash, Config::new(256))
        .await
        .map_err(|e| e.1)
        .unwrap();
    let id = format!("bench-w{W}");
    store.open(&id, "tcp://bench").await.unwrap();
    let outbox: SharedOutbox<NoopRawMutex, _, W, 256> =
        SharedOutbox::restore(store, OutboxConfig::new(n + 10)).await.unwrap();
    for i in 0..n {
        let text = i.to_string();
        outbox.publish(&Publish::new(&topic, text.as_bytes()), 0).await.unwrap();
    }

    let link = Link::new();
    let network = EpochNetwork::new(TokioNetwork, &link);
    let mut transport = mqttrust::transport::embedded_nal::NalTransport::new(&network, mqttrust::IpBroker::from(proxy));
    let mut state = Box::new(mqttrust::State::<NoopRawMutex, 4096, 4096>::new());
    let config = mqttrust::Config::builder()
        .client_id(id.as_str().try_into().unwrap())
        .backoff_algo(|_| Some(embassy_time::Duration::from_millis(100)))
        .build();
    let (mut stack, client) = mqttrust::new(&mut state, config);
    let adapter = MqttrustClient::new(&client, &link);
    // Time from the moment the link is up to the last acknowledgement.
    let stack_loop = async {
        loop {
            stack.run(&mut transport).await;
        }
    };
    let timed = async {
        client.wait_connected().await;
        let start = Instant::now();
        outbox.drain(&adapter, || 0, |_| {}, true).await.unwrap();
        start.elapsed()
    };
    let embassy_futures::select::Either::Second(elapsed) = select(stack_loop, timed).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().len() < n as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = received.lock().unwrap().clone();
    let mut seen = HashSet::new();
    let first: Vec<u32> = got.iter().copied().filter(|x| seen.insert(*x)).collect();
    assert_eq!(
        first,
        (0..n).collect::<Vec<_>>(),
        "W={W}: order not preserved or messages missing"
    );
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "window {W}: {n} messages in {:.2} s = {rate:.1} msgs/s ({} received, order preserved)",
        elapsed.as_secs_f64(),
        got.len()
    );
    rate
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let latency: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50);
    let broker = start_rumqttd();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("replaying {n} buffered messages through a proxy adding {latency} ms one-way latency");
        let w1 = run::<1>(broker, n, latency).await;
        let w8 = run::<8>(broker, n, latency).await;
        println!("window 8 / window 1 = {:.1}x", w8 / w1);
    });
}
