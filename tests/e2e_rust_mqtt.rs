//! End to end for `adapter::rust_mqtt` against mosquitto on 127.0.0.1 (started by the test):
//! a device (rust-mqtt 0.6 through the outbox, on a simulated NOR flash) talks to the broker
//! through the fault-injecting proxy; the checking subscriber is the raw MQTT 3.1.1 one in
//! tests/support/raw_mqtt.rs. Scenarios (a) and (b) only so far. Every wait is bounded.

#[path = "support/raw_mqtt.rs"]
mod raw;
#[path = "../examples/support/tcp.rs"]
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use critical_section as _;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use mqtt_persist::adapter::SharedOutbox;
use mqtt_persist::adapter::rust_mqtt::{Driver, Event, Settings, Stats};
use mqtt_persist::flash::SimFlash;
use mqtt_persist::mqtt::{OutboxConfig, Publish, QoS, Receipt};
use mqtt_persist::{Config, Store};
use support::{Faults, TokioNetwork, start_proxy};

type Sim = SimFlash<4096, 64, 4, 4>;
const W: usize = 8;
const BUF: usize = 256;

struct Broker {
    addr: SocketAddr,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_broker() -> Broker {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = std::env::temp_dir().join(format!("mqtt-persist-rust-mqtt-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 100000\nmax_inflight_messages 100\nlog_dest none\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto cannot be started (apt-get install -y mosquitto)");
    let broker = Broker { addr, child, dir };
    support::wait_accepting(addr);
    broker
}

fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

fn analyse(received: &[u32]) -> (Vec<u32>, HashSet<u32>) {
    let mut seen = HashSet::new();
    let (mut first, mut dups) = (Vec::new(), HashSet::new());
    for &n in received {
        if seen.insert(n) {
            first.push(n);
        } else {
            dups.insert(n);
        }
    }
    (first, dups)
}

async fn wait_for(received: &raw::Received, want: usize, limit: Duration) {
    let start = Instant::now();
    while received.distinct() < want && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// One boot: mount, restore, publish `readings`, then drain until idle (`drain`) or stop.
async fn device(
    flash: &mut Sim,
    proxy: SocketAddr,
    id: &str,
    topic: &str,
    readings: std::ops::Range<u32>,
    drain: bool,
) -> (Vec<u32>, HashSet<u32>, Stats, bool) {
    let mut store: Store<&mut Sim, 64> = Store::mount(flash, Config::new(BUF)).await.map_err(|e| e.1).unwrap();
    store.open(id, "tcp://e2e").await.unwrap();
    let outbox: SharedOutbox<NoopRawMutex, _, W, BUF> =
        SharedOutbox::restore(store, OutboxConfig::new(5000)).await.unwrap();
    let mut stored = Vec::new();
    for n in readings {
        let text = n.to_string();
        let mut msg = Publish::new(topic, text.as_bytes());
        msg.qos = QoS::AtLeastOnce;
        match outbox.publish(&msg, now_ms()).await.unwrap() {
            Receipt::Stored { sequence, .. } => assert_eq!(sequence, n),
            Receipt::NotPersisted => unreachable!(),
        }
        stored.push(n);
    }
    let network = TokioNetwork;
    let mut driver = Driver::new(&network, proxy, id, Settings::default());
    let mut resent = HashSet::new();
    if drain {
        let run = driver.run(
            &outbox,
            now_ms,
            |e| {
                if let Event::Sent { sequence, dup: true } = e {
                    resent.insert(sequence);
                }
            },
            true,
            |_| tokio::time::sleep(Duration::from_millis(20)),
        );
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("drain timed out")
            .unwrap();
    }
    let idle = outbox.lock().await.is_idle();
    (stored, resent, driver.stats(), idle)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_offline_500_then_reboot_delivers_all_in_order() {
    let started = Instant::now();
    let broker = start_broker();
    runtime().block_on(async {
        let faults = Arc::new(Faults::default());
        let proxy = start_proxy(broker.addr, faults.clone()).await;
        let received = raw::subscribe(broker.addr, "check-a", "e2e/a", 1).await;
        let mut flash = Sim::boxed();
        let (stored, _, _, _) = device(&mut flash, proxy, "dev-a", "e2e/a", 0..500, false).await;
        assert_eq!(stored.len(), 500);
        assert!(received.snapshot().is_empty());
        let (_, resent, stats, idle) = device(&mut flash, proxy, "dev-a", "e2e/a", 0..0, true).await;
        assert!(idle);
        assert_eq!(stats.delivered, 500);
        wait_for(&received, 500, Duration::from_secs(20)).await;
        let got = received.snapshot();
        let (first, dups) = analyse(&got);
        assert_eq!(
            first,
            (0..500).collect::<Vec<_>>(),
            "first occurrences in publish order"
        );
        assert!(dups.is_subset(&resent), "duplicates only of resent messages: {dups:?}");
        eprintln!(
            "(a) rust-mqtt, 500 offline + reboot: {} received, {} duplicates, {:?}",
            got.len(),
            got.len() - 500,
            started.elapsed()
        );
    });
}

#[test]
fn b_connection_resets_every_50_messages_lose_nothing() {
    let started = Instant::now();
    let broker = start_broker();
    runtime().block_on(async {
        let faults = Arc::new(Faults::default());
        faults.reset_after_bytes.store(50 * 16, Ordering::Relaxed);
        let proxy = start_proxy(broker.addr, faults.clone()).await;
        let received = raw::subscribe(broker.addr, "check-b", "e2e/b", 1).await;
        let mut flash = Sim::boxed();
        let (_, resent, stats, idle) = device(&mut flash, proxy, "dev-b", "e2e/b", 0..2000, true).await;
        assert!(idle);
        let resets = faults.resets.load(Ordering::Relaxed);
        assert!(resets >= 20, "the proxy reset the connection ({resets} times)");
        wait_for(&received, 2000, Duration::from_secs(20)).await;
        let got = received.snapshot();
        let (first, dups) = analyse(&got);
        assert_eq!(first, (0..2000).collect::<Vec<_>>(), "none lost, in order");
        assert!(dups.is_subset(&resent), "duplicates only of resent messages: {dups:?}");
        eprintln!(
            "(b) rust-mqtt, 2,000 with a reset every ~50: {resets} resets, {} connects, {} received, {} duplicates, {} resent, {:?}",
            stats.connects,
            got.len(),
            got.len() - 2000,
            resent.len(),
            started.elapsed()
        );
    });
}
