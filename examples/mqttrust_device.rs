//! A "device" on mqttrust 1.0 over TCP with a file-backed flash image: publishes a numbered
//! reading every 100 ms (QoS 1) to the broker given on the command line. Every reading is on
//! flash before it counts as published, and is drained oldest first whenever the client is
//! connected, so broker restarts and restarts of the device itself (kill it, start it again)
//! lose nothing.
//!
//! `cargo run --release --example mqttrust_device -- 127.0.0.1:1883 [IMAGE] [CLIENT_ID]`
//!
//! Watch with `mosquitto_sub -h 127.0.0.1 -t 'devices/#' -q 1 -v -c -i watcher` (a persistent
//! session, so the broker keeps what arrives while the watcher is away). Each reading prints
//! the message number it is stored under, and each acknowledgement that number.

#[path = "support/tcp.rs"]
mod support;

use std::cell::Cell;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use critical_section as _;
use embassy_futures::join::join;
use embassy_futures::select::select;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use mqtt_persist::adapter::mqttrust::{EpochNetwork, Link, MqttrustClient};
use mqtt_persist::adapter::{Event, SharedOutbox};
use mqtt_persist::file_flash::FileFlash;
use mqtt_persist::mqtt::{Dropped, OutboxConfig, OutboxError, OverflowPolicy, Publish, Receipt};
use mqtt_persist::{Config, Store};
use support::TokioNetwork;

/// 64 erase pages of 4 KiB: a typical SPI NOR partition.
type Flash = FileFlash<4096, 4, 4>;
const PAGES: usize = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let broker = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:1883");
    let image = args.get(2).map(String::as_str).unwrap_or("mqttrust-device.img");
    let client_id = args.get(3).map(String::as_str).unwrap_or("mqtt-persist-device");
    let addr = broker
        .to_socket_addrs()?
        .next()
        .ok_or("broker address does not resolve")?;
    let topic = format!("devices/{client_id}/reading");
    // Readings are numbered per boot: the boot id is the start time in seconds.
    let boot = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();

    let flash = Flash::open_or_create(image, PAGES)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut store: Store<Flash, PAGES> = Store::mount(flash, Config::new(256)).await.map_err(|(_, e)| e)?;
        store.open(client_id, broker).await?;
        // Drop-oldest applies to the count, to the byte budget (none here) and to a full
        // flash alike: once the 256 KiB image is full, each new reading drops the oldest.
        let mut config = OutboxConfig::new(20_000);
        config.overflow = OverflowPolicy::DropOldest;
        let outbox: SharedOutbox<NoopRawMutex, _, 8, 256> = SharedOutbox::restore(store, config).await?;
        {
            let o = outbox.lock().await;
            let waiting = o.capacity().buffered;
            let maybe = o.restored_maybe_sent();
            // The oldest `maybe` may have reached the broker already: in flight at the last
            // shutdown, or acknowledged with their removal deferred (a power cut loses those
            // removals). They are sent again; the rest were never sent.
            println!(
                "boot {boot}: {waiting} readings from earlier boots are waiting on flash: \
                 up to {maybe} (the oldest) may already have been delivered, {} certainly not",
                waiting - maybe
            );
        }

        let link = Link::new();
        let network = EpochNetwork::new(TokioNetwork, &link);
        let mut transport =
            mqttrust::transport::embedded_nal::NalTransport::new(&network, mqttrust::IpBroker::from(addr));
        let mut state = Box::new(mqttrust::State::<NoopRawMutex, 4096, 4096>::new());
        let mqtt_config = mqttrust::Config::builder()
            .client_id(client_id.try_into().map_err(|_| "client id too long")?)
            .keepalive_interval(embassy_time::Duration::from_secs(30))
            .backoff_algo(|attempt| Some(embassy_time::Duration::from_millis(250 * (attempt as u64 + 1).min(8))))
            .build();
        let (mut stack, client) = mqttrust::new(&mut state, mqtt_config);
        let adapter = MqttrustClient::new(&client, &link);
        let start = Instant::now();
        let now = || start.elapsed().as_millis() as u64;
        let delivered = Cell::new(0u64);

        let stack_loop = async {
            loop {
                stack.run(&mut transport).await;
            }
        };
        let publisher = async {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for n in 0u64.. {
                tick.tick().await;
                let payload = format!("{{\"boot\":{boot},\"n\":{n}}}");
                let report = |d: Dropped| println!("outbox full: dropped the oldest reading ({d:?})");
                match outbox
                    .publish_with(&Publish::new(&topic, payload.as_bytes()), now(), report)
                    .await
                {
                    Ok(Receipt::Stored { sequence, .. }) => println!("reading {n}: on flash as message {sequence}"),
                    Ok(r) => println!("reading {n}: {r:?}"),
                    // Under drop-oldest only when nothing is left to drop; the limit says which.
                    Err(OutboxError::Full { limit }) => println!("reading {n} not stored: {limit}"),
                    Err(e) => println!("reading {n} not stored: {e}"),
                }
                if n % 50 == 0 {
                    let c = outbox.lock().await.capacity();
                    println!(
                        "status after reading {n}: connected {}, buffered {}, in flight {}, acknowledged {}",
                        link.is_up(),
                        c.buffered,
                        c.in_flight,
                        delivered.get()
                    );
                }
            }
        };
        let drainer = async {
            let events = |e: Event| match e {
                Event::Delivered { sequence } => {
                    delivered.set(delivered.get() + 1);
                    // PUBACK received: removed from the outbox (the removal is written to flash
                    // in batches; until then a power cut brings the message back, sent as DUP).
                    println!("message {sequence}: acknowledged by the broker");
                }
                Event::Resending => println!("connection changed: resending unacknowledged readings"),
                Event::Dropped(d) => println!("dropped {d:?}"),
            };
            outbox.drain(&adapter, now, events, false).await
        };
        let (_, result) = join(select(stack_loop, publisher), drainer).await;
        result.map_err(|e| format!("{e}"))?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
