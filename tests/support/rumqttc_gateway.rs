//! The gateway of tests/e2e_rumqttc.rs: a simulated flash shared across boots, the broker
//! (mosquitto, or rumqttd in process; tests/support/e2e.rs), one boot of the device.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use mqtt_persist::adapter::rumqttc::{Driver, Error, Event, RumqttcOutbox, Settings, Stats};
use mqtt_persist::flash::{BlockingFlash, SimFlash, block_on};
use mqtt_persist::mqtt::{Dropped, OutboxConfig, OutboxError, Publish, QoS, Receipt};
use mqtt_persist::{Config, Store};

pub type Sim = SimFlash<4096, 64, 4, 4>;
pub const PAGES: usize = 64;
pub const W: usize = 8;
pub const BUF: usize = 256;

// ---------------------------------------------------------------- flash shared across boots

/// The simulated flash behind a mutex, so it outlives each boot and the test can cut and
/// restore its power; the store sees it through `BlockingFlash`.
#[derive(Clone)]
pub struct SharedFlash {
    pub sim: Arc<Mutex<Box<Sim>>>,
    /// This many reads from now on take 2 ms each (a slow flash).
    pub slow_reads: Arc<std::sync::atomic::AtomicU32>,
}

impl SharedFlash {
    pub fn new() -> Self {
        SharedFlash {
            sim: Arc::new(Mutex::new(Sim::boxed())),
            slow_reads: Arc::default(),
        }
    }
    pub fn sim(&self) -> std::sync::MutexGuard<'_, Box<Sim>> {
        self.sim.lock().unwrap()
    }
}

impl ErrorType for SharedFlash {
    type Error = <Sim as ErrorType>::Error;
}

impl ReadNorFlash for SharedFlash {
    const READ_SIZE: usize = <Sim as ReadNorFlash>::READ_SIZE;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let slow = self
            .slow_reads
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if slow.is_ok() {
            std::thread::sleep(Duration::from_millis(2));
        }
        ReadNorFlash::read(&mut **self.sim(), offset, bytes)
    }
    fn capacity(&self) -> usize {
        ReadNorFlash::capacity(&**self.sim())
    }
}

impl NorFlash for SharedFlash {
    const WRITE_SIZE: usize = <Sim as NorFlash>::WRITE_SIZE;
    const ERASE_SIZE: usize = <Sim as NorFlash>::ERASE_SIZE;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        NorFlash::erase(&mut **self.sim(), from, to)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        NorFlash::write(&mut **self.sim(), offset, bytes)
    }
}

pub type TestStore = Store<BlockingFlash<SharedFlash>, PAGES>;

pub async fn mount(flash: &SharedFlash, client_id: &str) -> TestStore {
    let (flash, id) = (flash.clone(), client_id.to_string());
    tokio::task::spawn_blocking(move || {
        let mut store = block_on(Store::mount(BlockingFlash::new(flash), Config::new(BUF)))
            .map_err(|e| e.1)
            .unwrap();
        block_on(store.open(&id, "tcp://e2e")).unwrap();
        store
    })
    .await
    .unwrap()
}

/// Waits (bounded) until every blocking outbox call of this boot has finished, and drops the
/// outbox: the next boot must not share the flash with a call still running.
pub async fn shut_down<const N: usize>(mut outbox: RumqttcOutbox<TestStore, N, BUF>) {
    let start = Instant::now();
    loop {
        match outbox.try_into_inner() {
            Ok(inner) => {
                drop(inner.into_store_unflushed());
                return;
            }
            Err(back) => outbox = back,
        }
        assert!(start.elapsed() < Duration::from_secs(5), "outbox still shared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------- broker

pub use crate::e2e::{Broker, analyse, now_ms, wait_flag, wait_for};
use crate::e2e::{BrokerKind, broker_kind};

/// `MQTT_BROKER=rumqttd`: run against rumqttd in process instead of mosquitto.
pub fn rumqttd() -> bool {
    broker_kind(BrokerKind::Mosquitto) == BrokerKind::Rumqttd
}

/// mosquitto, or rumqttd with `MQTT_BROKER=rumqttd`.
pub fn start_broker() -> Broker {
    crate::e2e::start_broker(broker_kind(BrokerKind::Mosquitto))
}

pub fn settings() -> Settings {
    Settings {
        ack_timeout: Duration::from_secs(10),
        max_client_errors: 5,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
    }
}

pub fn options(client_id: &str, addr: SocketAddr) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    o
}

// ---------------------------------------------------------------- device

#[derive(Default)]
pub struct Log {
    /// Times each sequence number went on the wire, and whether it ever went with DUP.
    pub sent: HashMap<u32, u32>,
    pub dup: HashSet<u32>,
    pub received: Vec<u32>,
    pub connects: u32,
}

impl Log {
    pub fn record(&mut self, e: &Event) {
        match *e {
            Event::Sent { sequence, dup, .. } => {
                *self.sent.entry(sequence).or_default() += 1;
                if dup {
                    self.dup.insert(sequence);
                }
            }
            Event::Received { sequence } => self.received.push(sequence),
            Event::Connected { .. } => self.connects += 1,
            _ => {}
        }
    }
    pub fn resent(&self) -> HashSet<u32> {
        self.sent
            .iter()
            .filter(|&(_, &n)| n > 1)
            .map(|(&s, _)| s)
            .chain(self.dup.iter().copied())
            .collect()
    }
}

#[derive(Default)]
pub struct Report {
    /// Readings whose `publish` returned Ok (durable).
    pub stored: Vec<u32>,
    /// Readings refused with `Full`.
    pub rejected: Vec<u32>,
    /// Sequence numbers dropped by the overflow policy.
    pub dropped: Vec<u32>,
    /// Sequence numbers sent more than once or with DUP.
    pub resent: HashSet<u32>,
    /// Whether the outbox was empty at the end.
    pub idle: bool,
    pub stats: Stats,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Drain {
    /// Publish (the driver trying to connect meanwhile), then stop: a reboot follows.
    No,
    /// Publish and drain concurrently, stop once everything is acknowledged.
    UntilIdle,
}

/// One boot of the gateway: mount, restore, spawn the driver, publish `readings` on `topic`
/// (payload = the reading, which must equal the sequence number the outbox gives it), drain
/// as asked. Everything is dropped at the end, as in a reboot; the flash stays.
#[allow(clippy::too_many_arguments)]
pub async fn device(
    flash: &SharedFlash,
    proxy: SocketAddr,
    client_id: &str,
    topic: &str,
    config: OutboxConfig,
    readings: std::ops::Range<u32>,
    drain: Drain,
    qos: QoS,
) -> Report {
    let store = mount(flash, client_id).await;
    let outbox: RumqttcOutbox<TestStore, W, BUF> = RumqttcOutbox::restore(store, config).await.unwrap();
    let (client, mut driver) = Driver::new(outbox.clone(), options(client_id, proxy), 16, settings()).unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let publishing_done = Arc::new(AtomicBool::new(false));
    let powered_off = Arc::new(AtomicBool::new(false));
    let drive = {
        let (log, publishing_done, powered_off) = (log.clone(), publishing_done.clone(), powered_off.clone());
        tokio::spawn(async move {
            let mut events = |e: Event| log.lock().unwrap().record(&e);
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let stop = async {
                    match drain {
                        Drain::No => wait_flag(&publishing_done).await,
                        Drain::UntilIdle => wait_flag(&powered_off).await,
                    }
                };
                let until_idle = drain == Drain::UntilIdle;
                // Read before the run: a run that starts after the last publish drains it.
                let done = publishing_done.load(Ordering::Relaxed);
                tokio::select! {
                    r = driver.run(now_ms, &mut events, until_idle) => match r {
                        Ok(()) => {}
                        // The power was cut: this boot is over.
                        Err(Error::Outbox(OutboxError::Store(_))) => return driver.stats(),
                        Err(e) => panic!("driver: {e}"),
                    },
                    () = stop => return driver.stats(),
                }
                if done {
                    return driver.stats();
                }
                assert!(Instant::now() < deadline, "drain did not finish");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut report = Report::default();
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
                report.stored.push(n);
                report.dropped.extend(dropped.iter().map(|d| match d {
                    Dropped::Overflow { sequence } => *sequence,
                    other => panic!("unexpected drop {other:?}"),
                }));
            }
            Ok(Receipt::NotPersisted) => unreachable!(),
            Err(Error::Outbox(OutboxError::Full { .. })) => report.rejected.push(n),
            Err(Error::Outbox(OutboxError::Store(_))) => {
                // The power was cut: this reading is not durable, and the boot is over.
                powered_off.store(true, Ordering::Relaxed);
                break;
            }
            Err(e) => panic!("publish: {e}"),
        }
    }
    publishing_done.store(true, Ordering::Relaxed);
    report.stats = drive.await.expect("driver task");
    drop(client);
    report.idle = outbox.is_idle().await.unwrap();
    report.resent = log.lock().unwrap().resent();
    shut_down(outbox).await;
    report
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
