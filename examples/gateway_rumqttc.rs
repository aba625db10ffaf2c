//! A Linux gateway on rumqttc 0.25 with its outbox in a file-backed flash image: publishes a
//! numbered reading every 100 ms (QoS 1). Every reading is on flash before it counts as
//! published; a `Driver` in its own tokio task sends them oldest first whenever the broker is
//! reachable, reconnecting by itself. Stop the broker for a while, or kill the gateway and start
//! it again with the same image: the readings published meanwhile arrive afterwards, in order.
//!
//! `cargo run --release --features rumqttc --example gateway_rumqttc -- 127.0.0.1:1883 [IMAGE] [CLIENT_ID] [COUNT]`
//!
//! With COUNT it stops publishing after COUNT readings, waits (at most 30 s) until everything
//! is acknowledged and exits. Watch with `mosquitto_sub -h 127.0.0.1 -t 'gateways/#' -q 1 -v`.
//!
//! Blocking file I/O: every outbox call runs on tokio's blocking pool (`spawn_blocking`), so
//! the runtime's workers never wait for the disk.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mqtt_persist::adapter::rumqttc::{Driver, Event, RumqttcOutbox, Settings};
use mqtt_persist::file_flash::FileFlash;
use mqtt_persist::flash::block_on;
use mqtt_persist::mqtt::{OutboxConfig, OverflowPolicy, Publish};
use mqtt_persist::{Config, Store};

/// 64 erase pages of 4 KiB.
type Flash = FileFlash<4096, 4, 4>;
const PAGES: usize = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let broker = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:1883".into());
    let image = args.get(2).cloned().unwrap_or_else(|| "gateway-rumqttc.img".into());
    let client_id = args.get(3).cloned().unwrap_or_else(|| "mqtt-persist-gateway".into());
    let count: Option<u64> = args.get(4).map(|c| c.parse()).transpose()?;
    let addr = broker
        .to_socket_addrs()?
        .next()
        .ok_or("broker address does not resolve")?;
    let topic = format!("gateways/{client_id}/reading");
    let boot = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let (id, uri) = (client_id.clone(), broker.clone());
        let store = tokio::task::spawn_blocking(move || {
            let flash = Flash::open_or_create(&image, PAGES).map_err(|e| e.to_string())?;
            let mut store: Store<Flash, PAGES> =
                block_on(Store::mount(flash, Config::new(512))).map_err(|(_, e)| e.to_string())?;
            block_on(store.open(&id, &uri)).map_err(|e| e.to_string())?;
            Ok::<_, String>(store)
        })
        .await??;
        let mut config = OutboxConfig::new(20_000);
        config.overflow = OverflowPolicy::DropOldest;
        let outbox: RumqttcOutbox<_, 16, 512> = RumqttcOutbox::restore(store, config).await?;
        println!(
            "boot {boot}: {} readings from earlier boots are waiting on flash",
            outbox.capacity().await?.buffered
        );

        let start = Instant::now();
        let now = move || start.elapsed().as_millis() as u64;
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        let (_client, mut driver) = Driver::new(outbox.clone(), options, 16, Settings::default())?;
        let delivered = Arc::new(AtomicU64::new(0));
        let counter = delivered.clone();
        let driving = tokio::spawn(async move {
            let events = move |e: Event| match e {
                Event::Delivered { .. } => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Event::Connected { session_present } => println!("connected (session present: {session_present})"),
                Event::ConnectionLost => println!("connection lost: unacknowledged readings are resent"),
                Event::Dropped(d) => println!("dropped {d:?}"),
                Event::ClientError { attempt, error } => println!("client error {attempt}: {error}"),
                _ => {}
            };
            driver.run(now, events, false).await
        });

        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for n in 0u64.. {
            if count.is_some_and(|c| n >= c) {
                break;
            }
            tick.tick().await;
            let payload = format!("{{\"boot\":{boot},\"n\":{n}}}");
            let report = |d| println!("limit reached: dropped the oldest reading ({d:?})");
            if let Err(e) = outbox
                .publish_with(&Publish::new(&topic, payload.as_bytes()), now(), report)
                .await
            {
                println!("reading {n} not stored: {e}");
            }
            if n % 50 == 0 {
                let c = outbox.capacity().await?;
                println!(
                    "reading {n}: buffered {}, in flight {}, delivered {}",
                    c.buffered,
                    c.in_flight,
                    delivered.load(Ordering::Relaxed)
                );
            }
            if driving.is_finished() {
                break;
            }
        }
        // COUNT readings published: wait (bounded) for the backlog to drain.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !outbox.is_idle().await? && Instant::now() < deadline && !driving.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if driving.is_finished() {
            driving.await??;
        }
        outbox.flush().await?;
        let c = outbox.capacity().await?;
        println!(
            "done: delivered {}, still buffered {}",
            delivered.load(Ordering::Relaxed),
            c.buffered
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
