//! Helpers shared by the end-to-end tests (tests/broker_e2e.rs, tests/e2e_rumqttc.rs,
//! tests/e2e_rust_mqtt.rs, tests/e2e_minimq.rs): the broker (a mosquitto process, or rumqttd in process), waiting
//! for the checking subscriber, analysing what it received, a millisecond clock.
//!
//! A test file that uses it also declares `mod raw` (tests/support/raw_mqtt.rs) and
//! `mod support` (examples/support/tcp.rs).
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::raw::Received;

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// A `mosquitto` process (`apt-get install -y mosquitto`).
    Mosquitto,
    /// rumqttd 0.20 in this process (MQTT 3.1.1 only).
    Rumqttd,
}

/// `MQTT_BROKER` (`mosquitto` or `rumqttd`), or `default` if it is unset or anything else.
pub fn broker_kind(default: BrokerKind) -> BrokerKind {
    match std::env::var("MQTT_BROKER").as_deref() {
        Ok("mosquitto") => BrokerKind::Mosquitto,
        Ok("rumqttd") => BrokerKind::Rumqttd,
        _ => default,
    }
}

/// A running broker; a mosquitto process is killed and its temp dir removed on drop.
pub struct Broker {
    pub addr: SocketAddr,
    pub kind: BrokerKind,
    child: Option<std::process::Child>,
    dir: Option<std::path::PathBuf>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts a broker of `kind` on a free port of 127.0.0.1 and returns once it accepts
/// connections (bounded: 10 s). mosquitto: config in a temp dir, no persistence, queues and
/// in-flight windows large enough for the scenarios.
pub fn start_broker(kind: BrokerKind) -> Broker {
    start_broker_with_acl(kind, None)
}

/// [`start_broker`]; for mosquitto with `acl`, the text of an ACL file (anonymous clients get
/// the `topic` lines before any `user` line).
pub fn start_broker_with_acl(kind: BrokerKind, acl: Option<&str>) -> Broker {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    if kind == BrokerKind::Rumqttd {
        crate::support::start_rumqttd(addr);
        return Broker {
            addr,
            kind,
            child: None,
            dir: None,
        };
    }
    let dir = std::env::temp_dir().join(format!("mqtt-persist-e2e-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("mosquitto.conf");
    let mut text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
         max_queued_messages 100000\nmax_inflight_messages 100\nlog_dest none\n"
    );
    if let Some(acl) = acl {
        let file = dir.join("acl");
        std::fs::write(&file, acl).unwrap();
        text.push_str(&format!("acl_file {}\n", file.display()));
    }
    std::fs::write(&conf, text).unwrap();
    let child = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto cannot be started (apt-get install -y mosquitto)");
    let broker = Broker {
        addr,
        kind,
        child: Some(child),
        dir: Some(dir),
    };
    crate::support::wait_accepting(addr);
    broker
}

/// Waits (bounded) until `want` distinct readings arrived, then a little longer for stray
/// duplicates.
pub async fn wait_for(received: &Received, want: usize, limit: Duration) {
    let start = Instant::now();
    while received.distinct() < want && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// First occurrences in order, and the readings seen more than once.
pub fn analyse(received: &[u32]) -> (Vec<u32>, HashSet<u32>) {
    let mut seen = HashSet::new();
    let mut first = Vec::new();
    let mut dups = HashSet::new();
    for &n in received {
        if seen.insert(n) {
            first.push(n);
        } else {
            dups.insert(n);
        }
    }
    (first, dups)
}

/// Milliseconds since the first call (the outbox's clock in the tests).
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Returns once `flag` is set (polled every 5 ms).
pub async fn wait_flag(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
