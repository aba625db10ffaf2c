//! A device on minimq 0.13, `no_std`: every reading is stored on a NOR flash partition by
//! mqtt-persist before it counts as published, and [`Driver`] sends the stored readings to the
//! broker, oldest first, `W` in flight, over the board's TCP stack. A reboot or power cut loses
//! no reading whose `publish` returned `Ok` (QoS 1: at least once; see the module docs of
//! `mqtt_persist::adapter::minimq`).
//!
//! It builds for thumbv7em-none-eabihf (.ci/run) but does not run as is. [`board`] is the
//! rust-mqtt example's stand-in for a HAL (examples/rust_mqtt_device/src/board.rs: a NOR flash
//! driver implementing `embedded-storage-async`, a TCP stack implementing `embedded-nal-async`'s
//! `TcpConnect` such as embassy-net's `TcpClient`, whose sockets must be cancel-safe, a
//! millisecond clock and a timer) and [`time`] stands in for the HAL's `embassy-time` driver;
//! replace both with yours, and the busy-polling `block_on` with your executor (e.g. an
//! `embassy_executor` task).
#![no_std]
#![no_main]

#[path = "../../rust_mqtt_device/src/board.rs"]
mod board;
mod time;

use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use embassy_futures::join::join;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use mqtt_persist::adapter::SharedOutbox;
use mqtt_persist::adapter::minimq::{Driver, Event, Settings};
use mqtt_persist::mqtt::{OutboxConfig, OverflowPolicy, Publish, QoS};
use mqtt_persist::{Config, Store};

/// The store's erase pages: 64 of 4 KiB (`board::Flash`).
const PAGES: usize = 64;
/// Messages in flight (minimq retains at most 8).
const W: usize = 8;
/// The largest record (topic, payload and header), and the outbox's transmit buffer.
const BUF: usize = 256;
/// minimq's receive buffer (CONNACK, acknowledgements) and transmit buffer (the CONNECT
/// workspace and up to `W` retained publishes).
const RX: usize = 256;
const TX: usize = 2048;

const CLIENT_ID: &str = "sensor-17";
const TOPIC: &str = "devices/sensor-17/reading";
const BROKER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 1883));

/// The reading as decimal text, into `buf`.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

async fn device() {
    // Mount the partition (a blank or damaged one is formatted) and bind it to this client.
    let mut store: Store<board::Flash, PAGES> = match Store::mount(board::Flash, Config::new(BUF)).await {
        Ok(store) => store,
        Err((_flash, _error)) => board::halt(),
    };
    if store.open(CLIENT_ID, "tcp://192.168.1.10:1883").await.is_err() {
        board::halt();
    }
    // At most 2,000 readings wait for the broker; then the oldest make room.
    let mut config = OutboxConfig::new(2000);
    config.overflow = OverflowPolicy::DropOldest;
    // Readings from before a reboot come back with the outbox.
    let Ok(outbox) = SharedOutbox::<NoopRawMutex, _, W, BUF>::restore(store, config).await else {
        board::halt()
    };

    let network = board::Network;
    let (mut rx, mut tx) = ([0u8; RX], [0u8; TX]);
    let mut driver = Driver::new(&network, BROKER, CLIENT_ID, &mut rx, &mut tx, Settings::default());

    let sampling = async {
        loop {
            board::after_ms(1000).await;
            let mut text = [0u8; 10];
            let mut msg = Publish::new(TOPIC, decimal(board::read_sensor(), &mut text));
            msg.qos = QoS::AtLeastOnce;
            // `Ok`: on flash, delivered at least once from now on, whatever happens.
            if outbox.publish(&msg, board::now_ms()).await.is_err() {
                board::report_flash_error();
            }
        }
    };
    let driving = async {
        loop {
            // Connects (a fresh minimq session each time), reconnects with back-off, and sends
            // whatever is stored; returns only on a flash error or a client error that persists
            // over `max_client_errors` connections.
            let events = |e: Event| board::led(matches!(e, Event::Connected | Event::Delivered { .. }));
            let backoff = |failures: u32| board::after_ms(250 * u64::from(failures.min(40)));
            let _error = driver.run(&outbox, board::now_ms, events, false, backoff).await;
            board::after_ms(10_000).await;
        }
    };
    join(sampling, driving).await;
}

/// The reset handler (with cortex-m-rt: `#[entry]`).
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    embassy_futures::block_on(device());
    board::halt()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    board::halt()
}
