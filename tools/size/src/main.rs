//! A program that exercises one store (put, get, remove, keys) on a dummy memory-mapped flash,
//! so `size` can tell how much `.text` and `.bss` the store adds over the baseline (the same
//! program with the store calls removed). Built by `scripts/code_size.sh`.
#![no_std]
#![no_main]

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embedded_storage_async::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, NorFlashErrorKind, ReadNorFlash};

const PAGE: usize = 4096;
const PAGES: usize = 64;
/// Where the dummy flash is mapped; volatile accesses keep the optimizer from seeing through.
const BASE: usize = 0x0800_0000;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The dummy executor: polls with a no-op waker until ready.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A dummy flash: volatile byte accesses to a fixed address range.
struct Flash;

#[derive(Debug)]
struct FlashError;

impl embedded_storage_async::nor_flash::NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}

impl ErrorType for Flash {
    type Error = FlashError;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = 4;
    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        for (i, b) in bytes.iter_mut().enumerate() {
            // Safety: the dummy flash range is memory-mapped on the imagined target.
            *b = unsafe { core::ptr::read_volatile((BASE + offset as usize + i) as *const u8) };
        }
        Ok(())
    }
    fn capacity(&self) -> usize {
        PAGE * PAGES
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        for a in from..to {
            // Safety: as for `read`.
            unsafe { core::ptr::write_volatile((BASE + a as usize) as *mut u8, 0xFF) };
        }
        Ok(())
    }
    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        for (i, b) in bytes.iter().enumerate() {
            // Safety: as for `read`.
            unsafe { core::ptr::write_volatile((BASE + offset as usize + i) as *mut u8, *b) };
        }
        Ok(())
    }
}

impl MultiwriteNorFlash for Flash {}

#[cfg(feature = "ekv")]
impl ekv::flash::Flash for Flash {
    type Error = FlashError;
    fn page_count(&self) -> usize {
        PAGES
    }
    async fn erase(&mut self, page_id: ekv::flash::PageID) -> Result<(), FlashError> {
        let p = (page_id.index() * PAGE) as u32;
        NorFlash::erase(self, p, p + PAGE as u32).await
    }
    async fn read(&mut self, page_id: ekv::flash::PageID, offset: usize, data: &mut [u8]) -> Result<(), FlashError> {
        ReadNorFlash::read(self, (page_id.index() * PAGE + offset) as u32, data).await
    }
    async fn write(&mut self, page_id: ekv::flash::PageID, offset: usize, data: &[u8]) -> Result<(), FlashError> {
        NorFlash::write(self, (page_id.index() * PAGE + offset) as u32, data).await
    }
}

/// Inputs the optimizer cannot know: read from the dummy flash's last word.
fn input() -> u32 {
    // Safety: as for `Flash::read`.
    unsafe { core::ptr::read_volatile((BASE + PAGE * PAGES - 4) as *const u32) }
}

fn output(x: usize) {
    // Safety: as for `Flash::write`.
    unsafe { core::ptr::write_volatile((BASE + PAGE * PAGES - 8) as *mut usize, x) };
}

/// The store lives in a static, so its RAM shows up in `.bss`.
#[allow(dead_code)]
struct Slot<T>(core::cell::UnsafeCell<core::mem::MaybeUninit<T>>);
// Safety: single-threaded program.
unsafe impl<T> Sync for Slot<T> {}
#[allow(dead_code)]
impl<T> Slot<T> {
    const fn new() -> Self {
        Slot(core::cell::UnsafeCell::new(core::mem::MaybeUninit::uninit()))
    }
    #[allow(clippy::mut_from_ref)]
    fn put(&self, v: T) -> &mut T {
        // Safety: called once, before any other access.
        unsafe { (*self.0.get()).write(v) }
    }
}

#[cfg(feature = "baseline")]
fn run() {
    let mut f = Flash;
    let mut buf = [0u8; 64];
    let n = input();
    block_on(async {
        let _ = NorFlash::erase(&mut f, 0, PAGE as u32).await;
        let _ = NorFlash::write(&mut f, n & !3, &buf[..8]).await;
        let _ = ReadNorFlash::read(&mut f, n & !3, &mut buf).await;
    });
    output(buf[3] as usize);
}

#[cfg(feature = "mqtt-persist")]
fn run() {
    use mqtt_persist::{Config, Key, KeyCursor, Store};
    static STORE: Slot<Store<Flash, PAGES>> = Slot::new();
    let n = input();
    let Ok(s) = block_on(Store::mount(Flash, Config::new(512))) else { return };
    let s = STORE.put(s);
    let mut buf = [0u8; 64];
    let mut keys = [Key::sent(0); 8];
    block_on(async {
        let _ = s.open("dev", "tcp://broker").await;
        let _ = s.put(Key::command(n), &[&buf[..32], &buf[32..]]).await;
        let got = s.get(Key::command(n), &mut buf).await.map(|v| v.len()).unwrap_or(0);
        output(got);
        let _ = s.remove(Key::command(n)).await;
        let k = s.keys(&mut KeyCursor::default(), &mut keys).await.unwrap_or(0);
        output(k);
    });
}

/// The outbox over the store: mount and open as above, then restore, publish, next_transmit
/// and on_puback, the calls a device's MQTT loop makes. Reported beyond the baseline (it
/// includes the store code the outbox calls) and beyond the store program.
#[cfg(feature = "outbox")]
fn run() {
    use mqtt_persist::mqtt::{Outbox, OutboxConfig, Publish, Transmit};
    use mqtt_persist::{Config, Store};
    type Ob = Outbox<Store<Flash, PAGES>, 4, 128>;
    static OUTBOX: Slot<Ob> = Slot::new();
    let n = input();
    let Ok(mut s) = block_on(Store::mount(Flash, Config::new(512))) else { return };
    block_on(async {
        if s.open("dev", "tcp://broker").await.is_err() {
            return;
        }
        let Ok(ob) = Ob::restore(s, OutboxConfig::new(32)).await else { return };
        let ob = OUTBOX.put(ob);
        let payload = n.to_le_bytes();
        let _ = ob.publish(&Publish::new("dev/t", &payload), u64::from(n)).await;
        let mut tx = [0u8; 128];
        let pid = match ob.next_transmit(u64::from(n), &mut tx, |_| output(0)).await {
            Ok(Some(Transmit::Publish(p))) => p.packet_id,
            _ => 0,
        };
        output(ob.on_puback(pid).await.ok().flatten().unwrap_or(0) as usize);
    });
}

/// A dummy time driver (mqttrust's client keeps time with embassy-time).
#[cfg(feature = "mqttrust")]
struct NoTime;
#[cfg(feature = "mqttrust")]
impl embassy_time_driver::Driver for NoTime {
    fn now(&self) -> u64 {
        input() as u64
    }
    fn schedule_wake(&self, _at: u64, waker: &core::task::Waker) {
        waker.wake_by_ref();
    }
}
#[cfg(feature = "mqttrust")]
embassy_time_driver::time_driver_impl!(static DRIVER: NoTime = NoTime);

/// The mqttrust adapter: the outbox restored into a `SharedOutbox`, one publish, and `drain`
/// through `MqttrustClient` on an mqttrust client (its network stack is not part of the
/// program). Reported beyond the outbox program.
#[cfg(feature = "mqttrust")]
fn run() {
    use embassy_sync_08::blocking_mutex::raw::NoopRawMutex;
    use mqtt_persist::adapter::SharedOutbox;
    use mqtt_persist::adapter::mqttrust::{Link, MqttrustClient};
    use mqtt_persist::mqtt::{OutboxConfig, Publish};
    use mqtt_persist::{Config, Store};
    type Ob = SharedOutbox<NoopRawMutex, Store<Flash, PAGES>, 4, 128>;
    static OUTBOX: Slot<Ob> = Slot::new();
    static STATE: Slot<mqttrust::State<NoopRawMutex, 1024, 1024>> = Slot::new();
    static LINK: Slot<Link> = Slot::new();
    let n = input();
    let Ok(mut s) = block_on(Store::mount(Flash, Config::new(512))) else { return };
    block_on(async {
        if s.open("dev", "tcp://broker").await.is_err() {
            return;
        }
        let Ok(ob) = Ob::restore(s, OutboxConfig::new(32)).await else { return };
        let ob = OUTBOX.put(ob);
        let payload = n.to_le_bytes();
        let _ = ob.publish(&Publish::new("dev/t", &payload), u64::from(n)).await;
        let state = STATE.put(mqttrust::State::new());
        let link = LINK.put(Link::new());
        let config = mqttrust::Config::builder().client_id("dev".try_into().unwrap_or_default()).build();
        let (_stack, client) = mqttrust::new(state, config);
        let adapter = MqttrustClient::new(&client, link);
        let r = ob.drain(&adapter, || u64::from(input()), |_| output(1), true).await;
        output(r.is_ok() as usize);
    });
}

#[cfg(feature = "ss-queue")]
fn run() {
    use sequential_storage::cache::page_pointers::ArrayPagePointers;
    use sequential_storage::cache::page_states::ArrayPageStates;
    use sequential_storage::cache::{Cache, Uncached};
    use sequential_storage::queue::{QueueConfig, QueueStorage};
    type Q = QueueStorage<Flash, Cache<ArrayPageStates<PAGES>, ArrayPagePointers<PAGES>, Uncached>>;
    static STORE: Slot<Q> = Slot::new();
    let n = input();
    let cache = Cache::new(ArrayPageStates::new(), ArrayPagePointers::new(), Uncached);
    let q = STORE.put(QueueStorage::new(Flash, QueueConfig::new(0..(PAGE * PAGES) as u32), cache));
    let mut buf = [0u8; 64];
    buf[0] = n as u8;
    block_on(async {
        let _ = q.push(&buf, false).await;
        let got = q.peek(&mut buf).await.ok().flatten().map(|v| v.len()).unwrap_or(0);
        output(got);
        let got = q.pop(&mut buf).await.ok().flatten().map(|v| v.len()).unwrap_or(0);
        output(got);
        if let Ok(mut it) = q.iter().await {
            while let Ok(Some(e)) = it.next(&mut buf).await {
                output(e.len());
            }
        }
    });
}

#[cfg(feature = "ss-map")]
fn run() {
    use sequential_storage::cache::key_pointers::ArrayKeyPointers;
    use sequential_storage::cache::page_pointers::ArrayPagePointers;
    use sequential_storage::cache::page_states::ArrayPageStates;
    use sequential_storage::cache::Cache;
    use sequential_storage::map::{MapConfig, MapStorage};
    type C = Cache<ArrayPageStates<PAGES>, ArrayPagePointers<PAGES>, ArrayKeyPointers<u32, 64>, u32>;
    static STORE: Slot<MapStorage<u32, Flash, C>> = Slot::new();
    let n = input();
    let cache = Cache::new(ArrayPageStates::new(), ArrayPagePointers::new(), ArrayKeyPointers::new());
    let m = STORE.put(MapStorage::new(Flash, MapConfig::new(0..(PAGE * PAGES) as u32), cache));
    let mut buf = [0u8; 80];
    let val = [n as u8; 64];
    block_on(async {
        let _ = m.store_item(&mut buf, &n, &&val[..]).await;
        let got = m.fetch_item::<&[u8]>(&mut buf, &n).await.ok().flatten().map(|v| v.len()).unwrap_or(0);
        output(got);
        let _ = m.remove_item(&mut buf, &n).await;
        if let Ok(mut it) = m.fetch_all_items(&mut buf).await {
            let mut vb = [0u8; 80];
            while let Ok(Some((k, v))) = it.next::<&[u8]>(&mut vb).await {
                output(k as usize + v.len());
            }
        }
    });
}

#[cfg(feature = "ekv")]
fn run() {
    use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    static DB: Slot<ekv::Database<Flash, NoopRawMutex>> = Slot::new();
    let n = input();
    let db = DB.put(ekv::Database::new(Flash, ekv::Config::default()));
    let mut buf = [0u8; 64];
    block_on(async {
        if db.mount().await.is_err() {
            let _ = db.format().await;
        }
        let key = n.to_be_bytes();
        let mut w = db.write_transaction().await;
        let _ = w.write(&key, &buf).await;
        let _ = w.commit().await;
        {
            let r = db.read_transaction().await;
            output(r.read(&key, &mut buf).await.unwrap_or(0));
        }
        let mut w = db.write_transaction().await;
        let _ = w.delete(&key).await;
        let _ = w.commit().await;
        let r = db.read_transaction().await;
        if let Ok(mut c) = r.read_all().await {
            let mut k = [0u8; 4];
            while let Ok(Some((kl, vl))) = c.next(&mut k, &mut buf).await {
                output(kl + vl);
            }
        }
    });
}

/// Entry point (the reset handler on a real part).
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    run();
    loop {}
}
