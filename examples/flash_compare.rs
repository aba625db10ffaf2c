//! Deterministic flash comparison of mqtt-persist, sequential-storage 8 (queue and map, with
//! caches) and ekv 1 (one transaction per operation), exactly as `shared/BENCHMARK-MODEL.md`
//! defines it: one simulated NOR flash ([`SimFlash`], behind a counting wrapper), geometries
//! 64 x 4 KiB and 16 x 4 KiB, WRITE_SIZE 4, multiwrite and ECC mode, workloads (a) enqueue,
//! (d) reboot, (b) replay, (c) steady state, (e) out-of-order acks, 64 B and 512 B messages.
//!
//! `cargo run --release --example flash_compare` prints the tables, writes them to
//! `BENCHMARKS.md` and ends with one `target NAME: VALUE (goal G) met|missed` line per target.
//! Every number comes from operation counters, so two runs print the same thing (except the
//! host-CPU target, read from criterion's output of `cargo bench --bench host_cpu` if present).

// The ekv backend of this crate (`--features ekv`), compiled into the example so the
// comparison runs it without a feature flag. It names items through the crate root only.
#[path = "support/code_size.rs"]
mod code_size;
#[path = "../src/ekv_backend.rs"]
#[allow(dead_code)]
mod ekv_backend;
#[path = "support/put_latency.rs"]
mod put_latency;
#[path = "support/qemu_stack.rs"]
mod qemu_stack;
use mqtt_persist::{Error, Key, KeyCursor, Kind, Persistence, codec};

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;

use ekv::flash::PageID;
use embassy_sync_ekv::blocking_mutex::raw::NoopRawMutex;
use embedded_storage::nor_flash::{NorFlash as BNorFlash, ReadNorFlash as BReadNorFlash};
use embedded_storage_async::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, ReadNorFlash};
use mqtt_persist::flash::{SimFlash, SimFlashError, block_on};
use mqtt_persist::{Config, Store};
use sequential_storage::cache::key_pointers::ArrayKeyPointers;
use sequential_storage::cache::page_pointers::ArrayPagePointers;
use sequential_storage::cache::page_states::ArrayPageStates;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};
use sequential_storage::queue::{QueueConfig, QueueStorage};

const PAGE: usize = 4096;
const WS: usize = 4;
const TOPIC_LEN: usize = 32;
const TOPIC: &[u8; TOPIC_LEN] = b"factory/line-3/cell-7/telemetry/";
const ENQUEUE: u32 = 1_000;
const IN_FLIGHT: usize = 50;
const STEPS: u32 = 10_000;
const CAPACITY_CAP: u32 = 20_000;
type Sim<const P: usize> = SimFlash<PAGE, P, WS, WS>;

// ---------------------------------------------------------------- counting flash wrapper

/// Counters over a window of operations, with the device-time model of BENCHMARK-MODEL.md.
#[derive(Debug, Clone, Default)]
struct Tally {
    reads: u64,
    read_bytes: u64,
    writes: u64,
    write_bytes: u64,
    erases: u64,
    rewrites: u64,
    /// W25Q model, nanoseconds.
    w25q_ns: u64,
    /// nRF52840 model, nanoseconds.
    nrf_ns: u64,
    page_erases: Vec<u64>,
}

impl Tally {
    fn since(&self, before: &Tally) -> Tally {
        Tally {
            reads: self.reads - before.reads,
            read_bytes: self.read_bytes - before.read_bytes,
            writes: self.writes - before.writes,
            write_bytes: self.write_bytes - before.write_bytes,
            erases: self.erases - before.erases,
            rewrites: self.rewrites - before.rewrites,
            w25q_ns: self.w25q_ns - before.w25q_ns,
            nrf_ns: self.nrf_ns - before.nrf_ns,
            page_erases: self
                .page_erases
                .iter()
                .zip(&before.page_erases)
                .map(|(a, b)| a - b)
                .collect(),
        }
    }
}

fn w25q_read_ns(bytes: usize) -> u64 {
    200 + 20 * bytes as u64
}

/// W25Q program time of one write call: per 256-byte program page touched,
/// 1 us command + min(30 us + 2.5 us x (bytes - 1), 400 us).
fn w25q_program_ns(offset: usize, len: usize) -> u64 {
    let mut ns = 0;
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let chunk_end = end.min((pos / 256 + 1) * 256);
        let b = (chunk_end - pos) as u64;
        ns += 1_000 + (30_000 + 2_500 * (b - 1)).min(400_000);
        pos = chunk_end;
    }
    ns
}
const W25Q_ERASE_NS: u64 = 45_000_000;
const NRF_WORD_NS: u64 = 41_000;
const NRF_ERASE_NS: u64 = 85_000_000;
const NRF_READ_NS_PER_BYTE: u64 = 4;

struct MeterInner<const P: usize> {
    sim: Box<Sim<P>>,
    t: Tally,
    paused: bool,
}

/// A handle on one simulated flash that counts what reaches it; clones share the flash, so a
/// store can be dropped and mounted again on the same flash (a reboot).
#[derive(Clone)]
struct Meter<const P: usize>(Rc<RefCell<MeterInner<P>>>);

impl<const P: usize> Meter<P> {
    fn new(ecc: bool) -> Self {
        let mut sim = Sim::<P>::boxed();
        sim.set_ecc(ecc);
        Meter(Rc::new(RefCell::new(MeterInner {
            sim,
            t: Tally {
                page_erases: vec![0; P],
                ..Tally::default()
            },
            paused: false,
        })))
    }
    fn tally(&self) -> Tally {
        self.0.borrow().t.clone()
    }
    /// Operations while paused (setup, verification reads) are not counted.
    fn pause(&self, p: bool) {
        self.0.borrow_mut().paused = p;
    }
    fn do_read(&self, offset: u32, bytes: &mut [u8]) -> Result<(), SimFlashError> {
        let mut m = self.0.borrow_mut();
        BReadNorFlash::read(&mut *m.sim, offset, bytes)?;
        if !m.paused {
            m.t.reads += 1;
            m.t.read_bytes += bytes.len() as u64;
            m.t.w25q_ns += w25q_read_ns(bytes.len());
            m.t.nrf_ns += NRF_READ_NS_PER_BYTE * bytes.len() as u64;
        }
        Ok(())
    }
    fn do_write(&self, offset: u32, bytes: &[u8]) -> Result<(), SimFlashError> {
        let mut m = self.0.borrow_mut();
        let r = BNorFlash::write(&mut *m.sim, offset, bytes);
        let rewrites = m.sim.stats().rewrites;
        if !m.paused {
            m.t.writes += 1;
            m.t.write_bytes += bytes.len() as u64;
            m.t.w25q_ns += w25q_program_ns(offset as usize, bytes.len());
            m.t.nrf_ns += NRF_WORD_NS * bytes.len().div_ceil(4) as u64;
            m.t.rewrites = rewrites;
        }
        r
    }
    fn do_erase(&self, from: u32, to: u32) -> Result<(), SimFlashError> {
        let mut m = self.0.borrow_mut();
        BNorFlash::erase(&mut *m.sim, from, to)?;
        if !m.paused {
            for p in (from as usize / PAGE)..(to as usize / PAGE) {
                m.t.erases += 1;
                m.t.page_erases[p] += 1;
                m.t.w25q_ns += W25Q_ERASE_NS;
                m.t.nrf_ns += NRF_ERASE_NS;
            }
        }
        Ok(())
    }
}

impl<const P: usize> ErrorType for Meter<P> {
    type Error = SimFlashError;
}
impl<const P: usize> ReadNorFlash for Meter<P> {
    const READ_SIZE: usize = WS;
    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.do_read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        PAGE * P
    }
}
impl<const P: usize> NorFlash for Meter<P> {
    const WRITE_SIZE: usize = WS;
    const ERASE_SIZE: usize = PAGE;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.do_erase(from, to)
    }
    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.do_write(offset, bytes)
    }
}
/// Promised unconditionally; in ECC mode the simulator refuses the second write, which is how
/// the benchmark finds out which peers need multiwrite flash.
impl<const P: usize> MultiwriteNorFlash for Meter<P> {}

impl<const P: usize> ekv::flash::Flash for Meter<P> {
    type Error = SimFlashError;
    fn page_count(&self) -> usize {
        P
    }
    async fn erase(&mut self, page_id: PageID) -> Result<(), Self::Error> {
        let p = page_id.index() as u32;
        self.do_erase(p * PAGE as u32, (p + 1) * PAGE as u32)
    }
    async fn read(&mut self, page_id: PageID, offset: usize, data: &mut [u8]) -> Result<(), Self::Error> {
        self.do_read((page_id.index() * PAGE + offset) as u32, data)
    }
    async fn write(&mut self, page_id: PageID, offset: usize, data: &[u8]) -> Result<(), Self::Error> {
        self.do_write((page_id.index() * PAGE + offset) as u32, data)
    }
}

// ---------------------------------------------------------------- messages

/// Message `seq` of `size` bytes: the 32-byte topic, the sequence number, a pattern.
fn message(seq: u32, size: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(size);
    m.extend_from_slice(TOPIC);
    m.extend_from_slice(&seq.to_le_bytes());
    while m.len() < size {
        let i = m.len() as u32;
        m.push((seq.wrapping_mul(31).wrapping_add(i.wrapping_mul(7))) as u8);
    }
    m
}

fn check(seq: u32, size: usize, got: &[u8]) {
    assert!(
        got == message(seq, size).as_slice(),
        "message {seq} ({size} B) read back wrong"
    );
}

fn seq_of(msg: &[u8]) -> u32 {
    u32::from_le_bytes(msg[TOPIC_LEN..TOPIC_LEN + 4].try_into().unwrap())
}

// ---------------------------------------------------------------- the stores under test

type R<T> = Result<T, String>;

/// What a workload needs from a store. Every method checks what it reads.
trait Subject<const P: usize>: Sized {
    /// Can remove an arbitrary key (not only the oldest).
    const KEYED: bool;
    async fn create(meter: Meter<P>, size: usize) -> R<Self>;
    /// `Ok(false)` when the store is full.
    async fn put(&mut self, seq: u32, msg: &[u8]) -> R<bool>;
    /// Remove the in-flight message `seq` (for the queue: the oldest, which must be `seq`).
    async fn ack(&mut self, seq: u32, size: usize) -> R<()>;
    /// Read the message `seq` without removing it (verification; keyed stores only).
    async fn get(&mut self, seq: u32, size: usize) -> R<()>;
    /// Read the oldest message; returns its sequence number.
    async fn oldest(&mut self, size: usize, first: u32) -> R<Option<u32>>;
    /// Read every message in order; returns their sequence numbers.
    async fn scan(&mut self, size: usize, first: u32) -> R<Vec<u32>>;
    /// Replay: read the oldest and remove it, until empty; returns the sequence numbers.
    async fn replay(&mut self, size: usize, first: u32) -> R<Vec<u32>>;
    /// Make pending work durable (deferred removals).
    async fn flush(&mut self) -> R<()> {
        Ok(())
    }
    /// Forget every RAM state and mount again on the same flash.
    async fn reboot(&mut self) -> R<()>;
    /// Bytes of RAM the store keeps (struct, caches), without the flash handle.
    fn ram(&self) -> usize;
    /// Bytes of the largest operation future (put, get, remove, iterate), not polled.
    fn largest_future(&mut self, size: usize) -> usize;
}

fn e<E: core::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

// ---- mqtt-persist

struct Ours<const P: usize, const DURABLE: bool> {
    store: Option<Store<Meter<P>, P>>,
    meter: Meter<P>,
    size: usize,
}

impl<const P: usize, const DURABLE: bool> Ours<P, DURABLE> {
    fn s(&mut self) -> &mut Store<Meter<P>, P> {
        self.store.as_mut().unwrap()
    }
    async fn mount(meter: Meter<P>, size: usize) -> R<Store<Meter<P>, P>> {
        let mut s = Store::mount(meter, Config::new(size)).await.map_err(|(_, x)| e(x))?;
        s.open("bench-client", "tcp://broker:1883").await.map_err(e)?;
        Ok(s)
    }
}

impl<const P: usize, const DURABLE: bool> Subject<P> for Ours<P, DURABLE> {
    const KEYED: bool = true;
    async fn create(meter: Meter<P>, size: usize) -> R<Self> {
        let store = Some(Self::mount(meter.clone(), size).await?);
        Ok(Ours { store, meter, size })
    }
    async fn put(&mut self, seq: u32, msg: &[u8]) -> R<bool> {
        match self
            .s()
            .put(Key::command(seq), &[&msg[..TOPIC_LEN], &msg[TOPIC_LEN..]])
            .await
        {
            Ok(()) => Ok(true),
            Err(Error::Full) => Ok(false),
            Err(x) => Err(e(x)),
        }
    }
    async fn ack(&mut self, seq: u32, _size: usize) -> R<()> {
        if DURABLE {
            self.s().remove(Key::command(seq)).await.map_err(e)
        } else {
            self.s().remove_deferred(Key::command(seq)).await.map_err(e)
        }
    }
    async fn get(&mut self, seq: u32, size: usize) -> R<()> {
        let mut buf = vec![0u8; size];
        let got = self.s().get(Key::command(seq), &mut buf).await.map_err(e)?;
        check(seq, size, got);
        Ok(())
    }
    async fn oldest(&mut self, size: usize, _first: u32) -> R<Option<u32>> {
        let mut keys = [Key::sent(0); 1];
        let n = self.s().keys(&mut KeyCursor::default(), &mut keys).await.map_err(e)?;
        if n == 0 {
            return Ok(None);
        }
        self.get(keys[0].id(), size).await?;
        Ok(Some(keys[0].id()))
    }
    async fn scan(&mut self, size: usize, _first: u32) -> R<Vec<u32>> {
        let mut out = Vec::new();
        let mut cursor = KeyCursor::default();
        let mut keys = [Key::sent(0); 32];
        loop {
            let n = self.s().keys(&mut cursor, &mut keys).await.map_err(e)?;
            if n == 0 {
                return Ok(out);
            }
            for k in &keys[..n] {
                self.get(k.id(), size).await?;
                out.push(k.id());
            }
        }
    }
    async fn replay(&mut self, size: usize, _first: u32) -> R<Vec<u32>> {
        let mut out = Vec::new();
        let mut cursor = KeyCursor::default();
        let mut keys = [Key::sent(0); 32];
        loop {
            let n = self.s().keys(&mut cursor, &mut keys).await.map_err(e)?;
            if n == 0 {
                self.flush().await?;
                return Ok(out);
            }
            for k in &keys[..n] {
                self.get(k.id(), size).await?;
                self.ack(k.id(), size).await?;
                out.push(k.id());
            }
        }
    }
    async fn flush(&mut self) -> R<()> {
        self.s().flush().await.map_err(e)
    }
    async fn reboot(&mut self) -> R<()> {
        drop(self.store.take());
        self.store = Some(Self::mount(self.meter.clone(), self.size).await?);
        Ok(())
    }
    fn largest_future(&mut self, size: usize) -> usize {
        let mut buf = vec![0u8; size];
        let mut keys = [Key::sent(0); 32];
        let mut cursor = KeyCursor::default();
        let s = self.s();
        let a = size_of_val(&s.put(Key::command(0), &[b"x"]));
        let b = size_of_val(&s.get(Key::command(0), &mut buf));
        let c = size_of_val(&s.remove(Key::command(0)));
        let d = size_of_val(&s.remove_deferred(Key::command(0)));
        let e = size_of_val(&s.keys(&mut cursor, &mut keys));
        a.max(b).max(c).max(d).max(e)
    }
    fn ram(&self) -> usize {
        let s = self.store.as_ref().unwrap();
        size_of_val(s) - size_of_val(s.flash())
    }
}

// ---- mqtt-persist's ekv backend, through the Persistence trait

type EkvDb<const P: usize> = ekv::Database<Meter<P>, NoopRawMutex>;

async fn ekv_db<const P: usize>(meter: Meter<P>, format: bool) -> R<&'static EkvDb<P>> {
    // Leaked: the Persistence backend borrows the database; a benchmark run makes a few dozen.
    let db: &'static EkvDb<P> = Box::leak(Box::new(ekv::Database::new(meter, ekv::Config::default())));
    if format {
        db.format().await.map_err(e)?;
    } else {
        db.mount().await.map_err(e)?;
    }
    Ok(db)
}

struct Backend<const P: usize> {
    p: ekv_backend::EkvPersistence<'static, Meter<P>, NoopRawMutex, 512>,
    meter: Meter<P>,
}

impl<const P: usize> Backend<P> {
    async fn fresh(db: &'static EkvDb<P>) -> R<ekv_backend::EkvPersistence<'static, Meter<P>, NoopRawMutex, 512>> {
        let mut p = ekv_backend::EkvPersistence::new(db);
        p.open("bench-client", "tcp://broker:1883").await.map_err(e)?;
        Ok(p)
    }
    async fn keys_all(&mut self) -> R<Vec<u32>> {
        self.p.rewind_keys();
        let mut out = Vec::new();
        let mut keys = [Key::sent(0); 32];
        loop {
            let n = self.p.keys(&mut KeyCursor::default(), &mut keys).await.map_err(e)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend(keys[..n].iter().map(|k| k.id()));
        }
    }
}

impl<const P: usize> Subject<P> for Backend<P> {
    const KEYED: bool = true;
    async fn create(meter: Meter<P>, _size: usize) -> R<Self> {
        let db = ekv_db(meter.clone(), true).await?;
        Ok(Backend {
            p: Self::fresh(db).await?,
            meter,
        })
    }
    async fn put(&mut self, seq: u32, msg: &[u8]) -> R<bool> {
        match self
            .p
            .put(Key::command(seq), &[&msg[..TOPIC_LEN], &msg[TOPIC_LEN..]])
            .await
        {
            Ok(()) => Ok(true),
            Err(Error::Full) => Ok(false),
            Err(x) => Err(e(x)),
        }
    }
    async fn ack(&mut self, seq: u32, _size: usize) -> R<()> {
        self.p.remove_deferred(Key::command(seq)).await.map_err(e)
    }
    async fn get(&mut self, seq: u32, size: usize) -> R<()> {
        let mut buf = vec![0u8; size];
        let got = self.p.get(Key::command(seq), &mut buf).await.map_err(e)?;
        check(seq, size, got);
        Ok(())
    }
    async fn oldest(&mut self, size: usize, _first: u32) -> R<Option<u32>> {
        self.p.rewind_keys();
        let mut keys = [Key::sent(0); 1];
        let n = self.p.keys(&mut KeyCursor::default(), &mut keys).await.map_err(e)?;
        self.p.rewind_keys();
        if n == 0 {
            return Ok(None);
        }
        self.get(keys[0].id(), size).await?;
        Ok(Some(keys[0].id()))
    }
    async fn scan(&mut self, size: usize, _first: u32) -> R<Vec<u32>> {
        let ids = self.keys_all().await?;
        for &id in &ids {
            self.get(id, size).await?;
        }
        Ok(ids)
    }
    async fn replay(&mut self, size: usize, _first: u32) -> R<Vec<u32>> {
        let mut out = Vec::new();
        let mut keys = [Key::sent(0); 32];
        self.p.rewind_keys();
        loop {
            let n = self.p.keys(&mut KeyCursor::default(), &mut keys).await.map_err(e)?;
            if n == 0 {
                return Ok(out);
            }
            for k in &keys[..n] {
                self.get(k.id(), size).await?;
                self.ack(k.id(), size).await?;
                out.push(k.id());
            }
        }
    }
    async fn reboot(&mut self) -> R<()> {
        let db = ekv_db(self.meter.clone(), false).await?;
        self.p = Self::fresh(db).await?;
        Ok(())
    }
    fn largest_future(&mut self, size: usize) -> usize {
        let mut buf = vec![0u8; size];
        let mut keys = [Key::sent(0); 32];
        let mut cursor = KeyCursor::default();
        let a = size_of_val(&self.p.put(Key::command(0), &[b"x"]));
        let b = size_of_val(&self.p.get(Key::command(0), &mut buf));
        let c = size_of_val(&self.p.remove(Key::command(0)));
        let e = size_of_val(&self.p.keys(&mut cursor, &mut keys));
        a.max(b).max(c).max(e)
    }
    fn ram(&self) -> usize {
        size_of::<EkvDb<P>>() + size_of_val(&self.p) - size_of::<Meter<P>>()
    }
}

// ---- ekv directly, one transaction per operation

struct Ekv<const P: usize> {
    db: &'static EkvDb<P>,
    meter: Meter<P>,
}

impl<const P: usize> Ekv<P> {
    async fn first(&self, size: usize) -> R<Option<u32>> {
        let rtx = self.db.read_transaction().await;
        let mut cur = rtx.read_all().await.map_err(e)?;
        let mut k = [0u8; 4];
        let mut v = vec![0u8; size];
        match cur.next(&mut k, &mut v).await.map_err(e)? {
            None => Ok(None),
            Some((4, n)) => {
                let seq = u32::from_be_bytes(k);
                check(seq, size, &v[..n]);
                Ok(Some(seq))
            }
            Some(_) => Err("foreign key".into()),
        }
    }
}

impl<const P: usize> Subject<P> for Ekv<P> {
    const KEYED: bool = true;
    async fn create(meter: Meter<P>, _size: usize) -> R<Self> {
        Ok(Ekv {
            db: ekv_db(meter.clone(), true).await?,
            meter,
        })
    }
    async fn put(&mut self, seq: u32, msg: &[u8]) -> R<bool> {
        let mut wtx = self.db.write_transaction().await;
        match wtx.write(&seq.to_be_bytes(), msg).await {
            Ok(()) => {}
            Err(ekv::WriteError::Full) => return Ok(false),
            Err(x) => return Err(e(x)),
        }
        wtx.commit().await.map_err(e)?;
        Ok(true)
    }
    async fn ack(&mut self, seq: u32, _size: usize) -> R<()> {
        let mut wtx = self.db.write_transaction().await;
        wtx.delete(&seq.to_be_bytes()).await.map_err(e)?;
        wtx.commit().await.map_err(e)
    }
    async fn get(&mut self, seq: u32, size: usize) -> R<()> {
        let rtx = self.db.read_transaction().await;
        let mut v = vec![0u8; size];
        let n = rtx.read(&seq.to_be_bytes(), &mut v).await.map_err(e)?;
        check(seq, size, &v[..n]);
        Ok(())
    }
    async fn oldest(&mut self, size: usize, _first: u32) -> R<Option<u32>> {
        self.first(size).await
    }
    async fn scan(&mut self, size: usize, _first: u32) -> R<Vec<u32>> {
        let rtx = self.db.read_transaction().await;
        let mut cur = rtx.read_all().await.map_err(e)?;
        let mut k = [0u8; 4];
        let mut v = vec![0u8; size];
        let mut out = Vec::new();
        while let Some((_, n)) = cur.next(&mut k, &mut v).await.map_err(e)? {
            let seq = u32::from_be_bytes(k);
            check(seq, size, &v[..n]);
            out.push(seq);
        }
        Ok(out)
    }
    async fn replay(&mut self, size: usize, _first: u32) -> R<Vec<u32>> {
        let mut out = Vec::new();
        while let Some(seq) = self.first(size).await? {
            self.ack(seq, size).await?;
            out.push(seq);
        }
        Ok(out)
    }
    async fn reboot(&mut self) -> R<()> {
        self.db = ekv_db(self.meter.clone(), false).await?;
        Ok(())
    }
    fn largest_future(&mut self, size: usize) -> usize {
        // The sum of what an operation keeps alive at once: the transaction and its step.
        let v = vec![0u8; size];
        let mut w2 = block_on(self.db.write_transaction());
        let a = size_of_val(&self.db.write_transaction()) + size_of_val(&w2.write(&[0; 4], &v));
        // `commit` consumes the transaction, so it ends here and the read below can start.
        let b = size_of_val(&w2.commit());
        let r = block_on(self.db.read_transaction());
        let mut vb = vec![0u8; size];
        let c = size_of_val(&r.read(&[0; 4], &mut vb)) + size_of_val(&r.read_all());
        a.max(b).max(c)
    }
    fn ram(&self) -> usize {
        size_of::<EkvDb<P>>() - size_of::<Meter<P>>()
    }
}

// ---- sequential-storage queue, page-state and page-pointer caches

type QCache<const P: usize> = Cache<ArrayPageStates<P>, ArrayPagePointers<P>, Uncached>;

struct Queue<const P: usize> {
    q: QueueStorage<Meter<P>, QCache<P>>,
}

fn queue_new<const P: usize>(meter: Meter<P>) -> QueueStorage<Meter<P>, QCache<P>> {
    let cache = Cache::new(ArrayPageStates::<P>::new(), ArrayPagePointers::<P>::new(), Uncached);
    QueueStorage::new(meter, QueueConfig::new(0..(P * PAGE) as u32), cache)
}

impl<const P: usize> Subject<P> for Queue<P> {
    const KEYED: bool = false;
    async fn create(meter: Meter<P>, _size: usize) -> R<Self> {
        let mut q = queue_new(meter);
        q.erase_all().await.map_err(e)?;
        Ok(Queue { q })
    }
    async fn put(&mut self, _seq: u32, msg: &[u8]) -> R<bool> {
        match self.q.push(msg, false).await {
            Ok(()) => Ok(true),
            Err(sequential_storage::Error::FullStorage) => Ok(false),
            Err(x) => Err(e(x)),
        }
    }
    async fn ack(&mut self, seq: u32, size: usize) -> R<()> {
        let mut buf = vec![0u8; size + 8];
        let got = self.q.pop(&mut buf).await.map_err(e)?.ok_or("queue empty")?;
        assert_eq!(seq_of(got), seq, "queue popped out of order");
        check(seq, size, got);
        Ok(())
    }
    async fn get(&mut self, _seq: u32, _size: usize) -> R<()> {
        Err("not keyed".into())
    }
    async fn oldest(&mut self, size: usize, _first: u32) -> R<Option<u32>> {
        let mut buf = vec![0u8; size + 8];
        match self.q.peek(&mut buf).await.map_err(e)? {
            None => Ok(None),
            Some(got) => {
                let seq = seq_of(got);
                check(seq, size, got);
                Ok(Some(seq))
            }
        }
    }
    async fn scan(&mut self, size: usize, _first: u32) -> R<Vec<u32>> {
        let mut buf = vec![0u8; size + 8];
        let mut out = Vec::new();
        let mut it = self.q.iter().await.map_err(e)?;
        while let Some(entry) = it.next(&mut buf).await.map_err(e)? {
            let entry = entry.into_buf();
            let seq = seq_of(entry);
            check(seq, size, entry);
            out.push(seq);
        }
        Ok(out)
    }
    async fn replay(&mut self, size: usize, _first: u32) -> R<Vec<u32>> {
        let mut buf = vec![0u8; size + 8];
        let mut out = Vec::new();
        while let Some(got) = self.q.pop(&mut buf).await.map_err(e)? {
            let seq = seq_of(got);
            check(seq, size, got);
            out.push(seq);
        }
        Ok(out)
    }
    async fn reboot(&mut self) -> R<()> {
        let meter = self.q.flash().clone();
        self.q = queue_new(meter);
        Ok(())
    }
    fn largest_future(&mut self, size: usize) -> usize {
        let mut buf = vec![0u8; size + 8];
        let m = vec![0u8; size];
        let a = size_of_val(&self.q.push(&m, false));
        let b = size_of_val(&self.q.pop(&mut buf));
        let c = size_of_val(&self.q.peek(&mut buf));
        a.max(b).max(c)
    }
    fn ram(&self) -> usize {
        size_of::<QCache<P>>()
    }
}

// ---- sequential-storage map, page-state, page-pointer and key-pointer caches

const KEY_CACHE: usize = 64;
type MCache<const P: usize> = Cache<ArrayPageStates<P>, ArrayPagePointers<P>, ArrayKeyPointers<u32, KEY_CACHE>, u32>;

struct Map<const P: usize> {
    m: MapStorage<u32, Meter<P>, MCache<P>>,
}

fn map_new<const P: usize>(meter: Meter<P>) -> MapStorage<u32, Meter<P>, MCache<P>> {
    let cache = Cache::new(
        ArrayPageStates::<P>::new(),
        ArrayPagePointers::<P>::new(),
        ArrayKeyPointers::<u32, KEY_CACHE>::new(),
    );
    MapStorage::new(meter, MapConfig::new(0..(P * PAGE) as u32), cache)
}

impl<const P: usize> Subject<P> for Map<P> {
    const KEYED: bool = true;
    async fn create(meter: Meter<P>, _size: usize) -> R<Self> {
        let mut m = map_new(meter);
        m.erase_all().await.map_err(e)?;
        Ok(Map { m })
    }
    async fn put(&mut self, seq: u32, msg: &[u8]) -> R<bool> {
        let mut buf = vec![0u8; msg.len() + 16];
        match self.m.store_item(&mut buf, &seq, &msg).await {
            Ok(()) => Ok(true),
            Err(sequential_storage::Error::FullStorage) => Ok(false),
            Err(x) => Err(e(x)),
        }
    }
    async fn ack(&mut self, seq: u32, size: usize) -> R<()> {
        let mut buf = vec![0u8; size + 16];
        self.m.remove_item(&mut buf, &seq).await.map_err(e)
    }
    async fn get(&mut self, seq: u32, size: usize) -> R<()> {
        let mut buf = vec![0u8; size + 16];
        let got: &[u8] = self.m.fetch_item(&mut buf, &seq).await.map_err(e)?.ok_or("missing")?;
        check(seq, size, got);
        Ok(())
    }
    async fn oldest(&mut self, size: usize, first: u32) -> R<Option<u32>> {
        // The map has no order: the application knows its oldest sequence number.
        let mut buf = vec![0u8; size + 16];
        match self.m.fetch_item::<&[u8]>(&mut buf, &first).await.map_err(e)? {
            None => Ok(None),
            Some(got) => {
                check(first, size, got);
                Ok(Some(first))
            }
        }
    }
    async fn scan(&mut self, size: usize, _first: u32) -> R<Vec<u32>> {
        let mut buf = vec![0u8; size + 16];
        let mut out = Vec::new();
        let mut it = self.m.fetch_all_items(&mut buf).await.map_err(e)?;
        let mut vbuf = vec![0u8; size + 16];
        while let Some((seq, v)) = it.next::<&[u8]>(&mut vbuf).await.map_err(e)? {
            check(seq, size, v);
            out.push(seq);
        }
        // Flash order, not insertion order (it wraps once the map reclaimed a page): the
        // application sorts by its sequence numbers. Each key must appear once.
        out.sort_unstable();
        Ok(out)
    }
    async fn replay(&mut self, size: usize, first: u32) -> R<Vec<u32>> {
        // Oldest by sequence number (the application's counter), then remove it.
        let mut out = Vec::new();
        let mut seq = first;
        while self.oldest(size, seq).await?.is_some() {
            self.ack(seq, size).await?;
            out.push(seq);
            seq += 1;
        }
        Ok(out)
    }
    async fn reboot(&mut self) -> R<()> {
        let meter = self.m.flash().clone();
        self.m = map_new(meter);
        Ok(())
    }
    fn largest_future(&mut self, size: usize) -> usize {
        let mut buf = vec![0u8; size + 16];
        let m = vec![0u8; size];
        let v: &[u8] = &m;
        let a = size_of_val(&self.m.store_item(&mut buf, &0, &v));
        let b = size_of_val(&self.m.fetch_item::<&[u8]>(&mut buf, &0));
        let c = size_of_val(&self.m.remove_item(&mut buf, &0));
        let d = size_of_val(&self.m.fetch_all_items(&mut buf));
        a.max(b).max(c).max(d)
    }
    fn ram(&self) -> usize {
        size_of::<MCache<P>>()
    }
}

// ---------------------------------------------------------------- workloads

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Enqueue,
    RebootFirst,
    RebootScan,
    Replay,
    Steady,
    OutOfOrder,
}

impl Workload {
    const ALL: [Workload; 6] = [
        Workload::Enqueue,
        Workload::RebootFirst,
        Workload::RebootScan,
        Workload::Replay,
        Workload::Steady,
        Workload::OutOfOrder,
    ];
    fn label(self) -> &'static str {
        match self {
            Workload::Enqueue => "(a) enqueue",
            Workload::RebootFirst => "(d) reboot: mount + oldest",
            Workload::RebootScan => "(d) reboot: full scan",
            Workload::Replay => "(b) replay",
            Workload::Steady => "(c) steady state",
            Workload::OutOfOrder => "(e) out-of-order acks",
        }
    }
}

/// One measured window.
#[derive(Debug, Clone)]
struct Measure {
    /// Messages (or steps) in the window.
    msgs: u64,
    t: Tally,
}

#[derive(Debug, Clone)]
struct Row {
    store: &'static str,
    pages: usize,
    ecc: bool,
    size: usize,
    work: Workload,
    result: Result<Measure, String>,
    capacity: Result<u32, String>,
    ram: usize,
    future: usize,
}

fn measure<const P: usize, T>(meter: &Meter<P>, f: impl std::future::Future<Output = R<(u64, T)>>) -> R<(Measure, T)> {
    let before = meter.tally();
    let (msgs, out) = block_on(f)?;
    Ok((
        Measure {
            msgs,
            t: meter.tally().since(&before),
        },
        out,
    ))
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Fills a fresh store until it reports full.
fn capacity<const P: usize, S: Subject<P>>(ecc: bool, size: usize) -> R<u32> {
    let meter = Meter::<P>::new(ecc);
    meter.pause(true);
    let mut s = block_on(S::create(meter, size))?;
    let mut n = 0;
    while n < CAPACITY_CAP {
        if !block_on(s.put(n, &message(n, size)))? {
            return Ok(n);
        }
        n += 1;
    }
    Ok(n)
}

/// Steady state or out-of-order acks on a fresh flash: 50 in flight, a warm-up until every
/// page was erased about once (so wear is in its steady regime), then 10,000 counted steps.
fn steady<const P: usize, S: Subject<P>>(ecc: bool, size: usize, random: bool) -> R<Measure> {
    if random && !S::KEYED {
        return Err("n/a: removes only the oldest".into());
    }
    let meter = Meter::<P>::new(ecc);
    meter.pause(true);
    let mut s = block_on(S::create(meter.clone(), size))?;
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut inflight: Vec<u32> = Vec::new();
    let mut next = 0u32;
    let step = |s: &mut S, inflight: &mut Vec<u32>, next: &mut u32, rng: &mut Rng| -> R<()> {
        if !block_on(s.put(*next, &message(*next, size)))? {
            return Err(format!("full with {} in flight", inflight.len()));
        }
        inflight.push(*next);
        *next += 1;
        let i = if random { rng.below(inflight.len()) } else { 0 };
        let seq = inflight.remove(i);
        if S::KEYED {
            // Verification read, not counted.
            meter.pause(true);
            block_on(s.get(seq, size))?;
            meter.pause(false);
        }
        block_on(s.ack(seq, size))
    };
    for _ in 0..IN_FLIGHT {
        if !block_on(s.put(next, &message(next, size)))? {
            return Err("full while filling".into());
        }
        inflight.push(next);
        next += 1;
    }
    // Warm-up, paused except for erase counting: run until every page saw an erase.
    meter.pause(false);
    let start = meter.tally();
    let mut warm = 0;
    while meter.tally().since(&start).page_erases.contains(&0) && warm < 4 * STEPS {
        step(&mut s, &mut inflight, &mut next, &mut rng)?;
        warm += 1;
    }
    let before = meter.tally();
    for _ in 0..STEPS {
        step(&mut s, &mut inflight, &mut next, &mut rng)?;
    }
    block_on(s.flush())?;
    let t = meter.tally().since(&before);
    // Everything still in flight is there, in order, with its content.
    meter.pause(true);
    let left = block_on(s.scan(size, inflight[0]))?;
    let mut want = inflight.clone();
    want.sort_unstable();
    if S::KEYED {
        let mut got = left.clone();
        got.sort_unstable();
        assert_eq!(got, want, "in-flight set after steady state");
    } else {
        assert_eq!(left, want, "queue content after steady state");
    }
    Ok(Measure { msgs: STEPS as u64, t })
}

/// (a) enqueue, (d) reboot, (b) replay on one flash, in that order.
fn offline<const P: usize, S: Subject<P>>(ecc: bool, size: usize) -> Vec<(Workload, R<Measure>)> {
    let mut out = Vec::new();
    let meter = Meter::<P>::new(ecc);
    meter.pause(true);
    let mut s = match block_on(S::create(meter.clone(), size)) {
        Ok(s) => s,
        Err(x) => {
            for w in [
                Workload::Enqueue,
                Workload::RebootFirst,
                Workload::RebootScan,
                Workload::Replay,
            ] {
                out.push((w, Err(x.clone())));
            }
            return out;
        }
    };
    meter.pause(false);
    // (a)
    let a = measure(&meter, async {
        let mut n = 0;
        while n < ENQUEUE {
            if !s.put(n, &message(n, size)).await? {
                break;
            }
            n += 1;
        }
        s.flush().await?;
        Ok((n as u64, n))
    });
    let stored = match a {
        Ok((m, n)) => {
            out.push((Workload::Enqueue, Ok(m)));
            n
        }
        Err(x) => {
            out.push((Workload::Enqueue, Err(x)));
            return out;
        }
    };
    // (d) mount + oldest
    let d1 = measure(&meter, async {
        s.reboot().await?;
        let first = s.oldest(size, 0).await?;
        if first != Some(0) {
            return Err(format!("oldest after reboot is {first:?}"));
        }
        Ok((1, ()))
    });
    out.push((Workload::RebootFirst, d1.map(|x| x.0)));
    // (d) full scan
    let d2 = measure(&meter, async {
        let seqs = s.scan(size, 0).await?;
        let want: Vec<u32> = (0..stored).collect();
        assert_eq!(seqs, want, "scan after reboot: content or order");
        Ok((stored as u64, ()))
    });
    out.push((Workload::RebootScan, d2.map(|x| x.0)));
    // (b)
    let b = measure(&meter, async {
        let seqs = s.replay(size, 0).await?;
        let want: Vec<u32> = (0..stored).collect();
        assert_eq!(seqs, want, "replay: content or order");
        Ok((stored as u64, ()))
    });
    // Every acknowledged message must be gone (for the map: `oldest` looks up the next number).
    meter.pause(true);
    let left = if S::KEYED {
        block_on(s.scan(size, 0)).map(|v| v.len())
    } else {
        block_on(s.oldest(size, stored)).map(|o| o.map_or(0, |_| 1))
    };
    match left {
        _ if b.is_err() => out.push((Workload::Replay, b.map(|x| x.0))),
        Ok(0) => out.push((Workload::Replay, b.map(|x| x.0))),
        Ok(n) => out.push((
            Workload::Replay,
            Err(format!(
                "every delete returned Ok, yet {n} removed messages are back after replay"
            )),
        )),
        Err(x) => out.push((Workload::Replay, Err(x))),
    }
    out
}

fn run_store<const P: usize, S: Subject<P>>(name: &'static str, ecc: bool, size: usize, rows: &mut Vec<Row>) {
    eprintln!(
        "  {name}, {P} pages, {}, {size} B",
        if ecc { "ECC" } else { "multiwrite" }
    );
    let cap = capacity::<P, S>(ecc, size);
    let ram = {
        let meter = Meter::<P>::new(ecc);
        meter.pause(true);
        block_on(S::create(meter, size)).map(|s| s.ram()).unwrap_or(0)
    };
    let future = {
        let meter = Meter::<P>::new(ecc);
        meter.pause(true);
        block_on(S::create(meter, size))
            .map(|mut s| s.largest_future(size))
            .unwrap_or(0)
    };
    let mut results = offline::<P, S>(ecc, size);
    results.push((Workload::Steady, steady::<P, S>(ecc, size, false)));
    results.push((Workload::OutOfOrder, steady::<P, S>(ecc, size, true)));
    for (work, result) in results {
        rows.push(Row {
            store: name,
            pages: P,
            ecc,
            size,
            work,
            result,
            capacity: cap.clone(),
            ram,
            future,
        });
    }
}

const US: &str = "mqtt-persist (remove_deferred)";
const US_DURABLE: &str = "mqtt-persist (durable remove)";
const US_EKV: &str = "mqtt-persist ekv backend";
const SS_QUEUE: &str = "sequential-storage 8 queue";
const SS_MAP: &str = "sequential-storage 8 map";
const EKV: &str = "ekv 1 (1 tx/op)";

fn run_geometry<const P: usize>(rows: &mut Vec<Row>) {
    for ecc in [false, true] {
        for size in [64, 512] {
            run_store::<P, Ours<P, false>>(US, ecc, size, rows);
            run_store::<P, Ours<P, true>>(US_DURABLE, ecc, size, rows);
            run_store::<P, Queue<P>>(SS_QUEUE, ecc, size, rows);
            run_store::<P, Map<P>>(SS_MAP, ecc, size, rows);
            if P <= ekv::config::MAX_PAGE_COUNT {
                run_store::<P, Ekv<P>>(EKV, ecc, size, rows);
                run_store::<P, Backend<P>>(US_EKV, ecc, size, rows);
            }
        }
    }
}

// ---------------------------------------------------------------- physical limit

/// The physical limit of a workload on a flash model, msgs/s: each message written once as
/// payload + a 4-byte header (the smallest that detects a torn write: a CRC), records packed
/// into pages (a record never crosses a page), one write call each, each page erased once per
/// page-full; reading workloads read each record once in one call; removal costs nothing.
fn limit(size: usize, work: Workload) -> (f64, f64) {
    let rec = (size + 4).div_ceil(WS) * WS;
    let per_page = PAGE / rec;
    let n = per_page * 16;
    match work {
        Workload::Replay | Workload::RebootScan | Workload::RebootFirst => {
            let w = w25q_read_ns(rec) as f64;
            let r = NRF_READ_NS_PER_BYTE as f64 * rec as f64;
            (1e9 / w, 1e9 / r)
        }
        _ => {
            let mut w = 0u64;
            for i in 0..n {
                let off = (i / per_page) * PAGE + (i % per_page) * rec;
                w += w25q_program_ns(off, rec);
            }
            let pages = (n / per_page) as u64;
            w += pages * W25Q_ERASE_NS;
            let r = n as u64 * NRF_WORD_NS * (rec / 4) as u64 + pages * NRF_ERASE_NS;
            (n as f64 * 1e9 / w as f64, n as f64 * 1e9 / r as f64)
        }
    }
}

// ---------------------------------------------------------------- report

fn per_sec(msgs: u64, ns: u64) -> f64 {
    if ns == 0 {
        f64::INFINITY
    } else {
        msgs as f64 * 1e9 / ns as f64
    }
}

fn fmt_rate(x: f64) -> String {
    if x.is_infinite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn table(rows: &[Row], pages: usize, ecc: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n### {pages} x 4 KiB, WRITE_SIZE 4, {} mode\n",
        if ecc { "ECC" } else { "multiwrite" }
    );
    let _ = writeln!(
        s,
        "| store | workload | size | msgs | B written/msg | WA | erases/1k | B read/op | reads/op | writes/op | capacity | max erases/page | W25Q msgs/s | nRF msgs/s | W25Q limit | share |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for work in Workload::ALL {
        for size in [64, 512] {
            for r in rows
                .iter()
                .filter(|r| r.pages == pages && r.ecc == ecc && r.work == work && r.size == size)
            {
                let cap = match &r.capacity {
                    Ok(c) if *c >= CAPACITY_CAP => format!(">= {c}"),
                    Ok(c) => c.to_string(),
                    Err(_) => "-".into(),
                };
                match &r.result {
                    Err(x) => {
                        let _ = writeln!(
                            s,
                            "| {} | {} | {} | fails: {} | | | | | | | {} | | | | | |",
                            r.store,
                            work.label(),
                            size,
                            x.replace('|', "/"),
                            cap
                        );
                    }
                    Ok(m) => {
                        let n = m.msgs.max(1) as f64;
                        let t = &m.t;
                        let (lw, _) = limit(size, work);
                        let w25q = per_sec(m.msgs, t.w25q_ns);
                        let nrf = per_sec(m.msgs, t.nrf_ns);
                        let rw = if t.rewrites > 0 { " (rewrites!)" } else { "" };
                        let _ = writeln!(
                            s,
                            "| {} | {} | {} | {} | {:.1}{} | {:.2} | {:.1} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
                            r.store,
                            work.label(),
                            size,
                            m.msgs,
                            t.write_bytes as f64 / n,
                            rw,
                            t.write_bytes as f64 / (n * size as f64),
                            t.erases as f64 * 1000.0 / n,
                            t.read_bytes as f64 / n,
                            t.reads as f64 / n,
                            t.writes as f64 / n,
                            cap,
                            t.page_erases.iter().max().copied().unwrap_or(0),
                            fmt_rate(w25q),
                            fmt_rate(nrf),
                            fmt_rate(lw),
                            if w25q.is_finite() {
                                format!("{:.0} %", 100.0 * w25q / lw)
                            } else {
                                "-".into()
                            },
                        );
                    }
                }
            }
        }
    }
    s
}

fn find<'a>(rows: &'a [Row], store: &str, pages: usize, ecc: bool, size: usize, work: Workload) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.store == store && r.pages == pages && r.ecc == ecc && r.size == size && r.work == work)
}

/// Mean ns per iteration from criterion's output, if `cargo bench --bench host_cpu` ran.
fn criterion_ns(group: &str, id: &str) -> Option<f64> {
    let path = format!("target/criterion/{group}/{id}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    // The slope (what criterion prints as "time") when it was estimated, else the mean.
    let at = text.find("\"slope\":{").or_else(|| text.find("\"mean\""))?;
    let rest = &text[at..];
    let pe = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let num: String = rest[pe..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == '-' || *c == '+')
        .collect();
    num.parse().ok()
}

/// `.text` and RAM figures written by `scripts/code_size.sh`, if it ran.
fn code_size(key: &str) -> Option<u64> {
    code_size::figure(key)
}

/// Host CPU per steady-state step, ours against the sequential-storage queue (its fastest
/// peer): the two run interleaved, 31 rounds of 2,000 steps each, and the fastest round of each
/// counts, which filters out other processes on a shared machine better than a mean does.
/// 64 x 4 KiB multiwrite (the queue needs it), 64 B messages, 50 in flight. Returns ns/step.
fn host_cpu_race() -> (f64, f64) {
    use std::time::Instant;
    const ROUNDS: usize = 31;
    const N: u32 = 2_000;
    let msgs: Vec<Vec<u8>> = (0..1024).map(|s| message(s, 64)).collect();
    let msg = |seq: u32| &msgs[(seq % 1024) as usize][..];

    let mut f1 = Sim::<64>::boxed();
    let mut store: Store<_, 64> = block_on(Store::mount(&mut *f1, Config::new(64)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(store.open("bench", "tcp://broker:1883")).unwrap();
    let mut f2 = Sim::<64>::boxed();
    let cache = Cache::new(ArrayPageStates::<64>::new(), ArrayPagePointers::<64>::new(), Uncached);
    let mut q = QueueStorage::new(&mut *f2, QueueConfig::new(0..(64 * PAGE) as u32), cache);
    for s in 0..IN_FLIGHT as u32 {
        block_on(store.put(Key::command(s), &[&msg(s)[..TOPIC_LEN], &msg(s)[TOPIC_LEN..]])).unwrap();
        block_on(q.push(msg(s), false)).unwrap();
    }
    let (mut next1, mut next2) = (IN_FLIGHT as u32, IN_FLIGHT as u32);
    let mut buf = [0u8; 72];
    let (mut best1, mut best2) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..N {
            let m = msg(next1);
            block_on(store.put(Key::command(next1), &[&m[..TOPIC_LEN], &m[TOPIC_LEN..]])).unwrap();
            block_on(store.remove_deferred(Key::command(next1 - IN_FLIGHT as u32))).unwrap();
            next1 += 1;
        }
        best1 = best1.min(t.elapsed().as_nanos() as f64 / N as f64);
        let t = Instant::now();
        for _ in 0..N {
            block_on(q.push(msg(next2), false)).unwrap();
            std::hint::black_box(block_on(q.pop(&mut buf)).unwrap());
            next2 += 1;
        }
        best2 = best2.min(t.elapsed().as_nanos() as f64 / N as f64);
    }
    (best1, best2)
}

fn main() {
    if std::env::args().any(|a| a == "put-latency") {
        // Only the put-latency workload: its section and targets, BENCHMARKS.md untouched.
        let runs = put_latency::runs();
        println!("{}", put_latency::section(&runs));
        for (name, value, goal, met) in put_latency::targets(&runs) {
            let verdict = if met == Some(true) { "met" } else { "missed" };
            println!("target {name}: {value} (goal {goal}) {verdict}");
        }
        return;
    }
    let mut rows = Vec::new();
    eprintln!("running (deterministic; about a minute in release mode)");
    run_geometry::<64>(&mut rows);
    run_geometry::<16>(&mut rows);

    let mut md = String::new();
    md.push_str(
        "# Benchmarks\n\n\
Generated by `cargo run --release --example flash_compare` (deterministic: every figure comes from\n\
flash operation counters on the simulated NOR flash; see `shared/BENCHMARK-MODEL.md` for the\n\
definition of the workloads, the flash models and the physical limit). Do not edit by hand.\n\n\
- **mqtt-persist (remove_deferred)** acknowledges with `remove_deferred`: QoS 1 semantics, the\n\
  removal is batched (up to 32 per record) and durable at `flush`/`close` or when compaction\n\
  reclaims the page; after a power cut an acknowledged message may come back and be resent, which\n\
  at-least-once delivery allows. Each window ends with a `flush`, counted.\n\
- **mqtt-persist (durable remove)** uses `remove`: durable when it returns (one 8-byte tombstone).\n\
- **mqtt-persist ekv backend** is this crate's `Persistence` over an `ekv::Database` (feature `ekv`).\n\
- **sequential-storage 8 queue**: `ArrayPageStates` + `ArrayPagePointers` caches; pop zeroes the\n\
  item's CRC in place (needs multiwrite flash). Removes only the oldest item.\n\
- **sequential-storage 8 map**: `u32` keys, `&[u8]` values, page-state, page-pointer and a\n\
  64-entry key-pointer cache; `remove_item` zeroes a CRC in place (needs multiwrite flash). It has\n\
  no order, so (b) and (d) look the oldest up by the sequence number the application keeps.\n\
- **ekv 1**: `crc` feature, one write transaction per put and per delete; 4-byte big-endian keys.\n\n\
Columns: *WA* = bytes written / message bytes; *capacity* = messages a fresh store takes before it\n\
reports full; *op* = one message (a, b, d scan) or one step = put + ack (c, e) or the whole\n\
mount + read oldest (d); *max erases/page* is within the window; *W25Q/nRF msgs/s* = messages per\n\
second of modeled device time (reads, programs, erases; no CPU); *W25Q limit* = the physical limit\n\
of the workload (payload + 4-byte CRC header, packed, erases amortized, removal free) and *share*\n\
= the store's fraction of it ((a) starts on erased flash and erases nothing, so it can exceed the\n\
limit, which charges every message its share of an erase). (c) and (e) run on a fresh flash with 50 in flight and a warm-up\n\
until every page was erased once, then 10,000 counted steps. Every message read is checked for\n\
content and order (verification reads in (c) and (e) are not counted). `fails: ...` is the error\n\
the store returned; in ECC mode that is how the stores that rewrite a word show up.\n",
    );
    for pages in [64, 16] {
        for ecc in [false, true] {
            md.push_str(&table(&rows, pages, ecc));
        }
    }

    // RAM
    md.push_str(
        "\n### RAM (host, x86_64): the store struct and caches without the flash, and the largest operation future\n\n\
| store | 64 pages: struct | 64 pages: largest future | 16 pages: struct | 16 pages: largest future |\n|---|---|---|---|---|\n",
    );
    for store in [US, SS_QUEUE, SS_MAP, EKV, US_EKV] {
        let get = |p, f: fn(&Row) -> usize| {
            find(&rows, store, p, true, 512, Workload::Enqueue).map_or("-".into(), |r| f(r).to_string())
        };
        let _ = writeln!(
            md,
            "| {store} | {} | {} | {} | {} |",
            get(64, |r| r.ram),
            get(64, |r| r.future),
            get(16, |r| r.ram),
            get(16, |r| r.future)
        );
    }
    md.push_str("\n(ekv: the transaction future plus the step it is awaiting; 512 B messages.)\n");

    // Code size and static RAM on thumbv7em (scripts/code_size.sh), host CPU (criterion).
    md.push_str("\n### Code size and static RAM (thumbv7em-none-eabihf, opt-level s, LTO; `scripts/code_size.sh`)\n\n");
    if code_size("mqtt_persist_text").is_some() {
        md.push_str("Beyond a baseline program with the store calls removed; the program mounts, opens an identity,\ncalls put, get, remove and iterates (keys) once (the outbox program: restore, publish,\nnext_transmit, on_puback; the mqttrust one adds `SharedOutbox::drain` through `MqttrustClient`).\n.text B is the Berkeley text column (.text + .rodata). RAM = the store struct and caches in a\nstatic; operation futures live on the stack and are not included.\n\n| store | .text B | static RAM B |\n|---|---|---|\n");
        for (name, key) in [
            ("mqtt-persist", "mqtt_persist"),
            ("mqtt-persist outbox (with the store)", "outbox"),
            ("mqtt-persist mqttrust adapter (with outbox, store)", "mqttrust"),
            (SS_QUEUE, "ss_queue"),
            (SS_MAP, "ss_map"),
            ("ekv 1", "ekv"),
        ] {
            let v = |k: &str| code_size(&format!("{key}_{k}")).map_or("-".into(), |x| x.to_string());
            let _ = writeln!(md, "| {name} | {} | {} |", v("text"), v("ram"));
        }
    } else {
        md.push_str("Not measured in this run: run `scripts/code_size.sh` first.\n");
    }
    md.push_str(
        "\n### Host CPU per steady-state step (criterion, `cargo bench --bench host_cpu`; 64 x 4 KiB multiwrite)\n\n",
    );
    let ids = [
        "mqtt-persist",
        "sequential-storage queue",
        "sequential-storage map",
        "ekv",
    ];
    if criterion_ns("steady_64B", "mqtt-persist").is_some() {
        md.push_str("Wall time on the machine that ran the bench (noisy; not deterministic like the rest).\n\n| store | 64 B step | 512 B step |\n|---|---|---|\n");
        for id in ids {
            let v = |g: &str| criterion_ns(g, id).map_or("-".into(), |ns| format!("{:.2} us", ns / 1000.0));
            let _ = writeln!(md, "| {id} | {} | {} |", v("steady_64B"), v("steady_512B"));
        }
    } else {
        md.push_str("Not measured in this run: run `cargo bench --bench host_cpu` first.\n");
    }

    md.push_str(&qemu_stack::section());
    let latency = put_latency::runs();
    md.push_str(&put_latency::section(&latency));

    // Targets
    let mut targets = Vec::new();
    let mut target = |name: &str, value: String, goal: &str, met: Option<bool>| {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "not measured",
        };
        targets.push(format!("target {name}: {value} (goal {goal}) {verdict}"));
    };
    let main = find(&rows, US, 64, true, 64, Workload::Steady).and_then(|r| r.result.clone().ok());
    if let Some(m) = &main {
        let n = m.msgs as f64;
        let wa = m.t.write_bytes as f64 / (n * 64.0);
        target("write amplification", format!("{wa:.3}"), "<= 1.15", Some(wa <= 1.15));
        let er = m.t.erases as f64 * 1000.0 / n;
        target("erases per 1,000", format!("{er:.1}"), "<= 18", Some(er <= 18.0));
        let rd = m.t.read_bytes as f64 / n;
        target(
            "read per operation",
            format!("{rd:.0} B"),
            "<= 100 B",
            Some(rd <= 100.0),
        );
        let w = per_sec(m.msgs, m.t.w25q_ns);
        let (lw, _) = limit(64, Workload::Steady);
        target(
            "W25Q throughput",
            format!("{w:.0} msgs/s = {:.1} % of {lw:.0}", 100.0 * w / lw),
            ">= 95 %",
            Some(w >= 0.95 * lw),
        );
        if let Some(Ok(o)) = find(&rows, US, 64, true, 64, Workload::OutOfOrder).map(|r| r.result.clone()) {
            let ratio = o.t.w25q_ns as f64 / m.t.w25q_ns as f64;
            target(
                "out-of-order acks",
                format!("{ratio:.3} x in-order (modeled W25Q time per step)"),
                "<= 1.1 x",
                Some(ratio <= 1.1),
            );
        }
    } else {
        target("steady state", "failed".into(), "runs", Some(false));
    }
    if let Some(Ok(c)) = find(&rows, US, 64, true, 512, Workload::Steady).map(|r| r.capacity.clone()) {
        target("capacity at 512 B", format!("{c} messages"), ">= 480", Some(c >= 480));
    }
    if let Some(Ok(m)) = find(&rows, US, 64, true, 64, Workload::RebootFirst).map(|r| r.result.clone()) {
        target(
            "reboot: mount + first message read",
            format!("{} B in {} reads", m.t.read_bytes, m.t.reads),
            "<= 1024 B",
            Some(m.t.read_bytes <= 1024),
        );
    }
    for (name, value, goal, met) in code_size::targets() {
        target(&name, value, &goal, met);
    }
    let us_row = find(&rows, US, 64, true, 512, Workload::Enqueue);
    let ram = us_row.map_or(0, |r| r.ram);
    let fut = us_row.map_or(0, |r| r.future);
    let thumb = code_size("mqtt_persist_ram").map_or(String::new(), |t| format!(" (struct on thumbv7em: {t} B)"));
    target(
        "RAM",
        format!(
            "struct {ram} B + largest operation future {fut} B = {} B on x86_64{thumb}; the struct alone {}",
            ram + fut,
            if ram <= 1536 { "meets it" } else { "misses it too" }
        ),
        "<= 1536 B",
        Some(ram + fut <= 1536),
    );
    let (ours_ns, queue_ns) = host_cpu_race();
    let crit = match (
        criterion_ns("steady_64B", "mqtt-persist"),
        criterion_ns("steady_64B", "sequential-storage queue"),
    ) {
        (Some(us), Some(q)) => format!("; criterion's last run: {:.0} vs {:.0}", 1e9 / us, 1e9 / q),
        _ => String::new(),
    };
    target(
        "host CPU steps/s",
        format!(
            "{:.0} vs sequential-storage queue {:.0} (fastest of 31 interleaved rounds, 64 B steady state, multiwrite; wall time, not deterministic{crit})",
            1e9 / ours_ns,
            1e9 / queue_ns
        ),
        ">= sequential-storage queue",
        Some(ours_ns <= queue_ns),
    );

    for (name, value, goal, met) in qemu_stack::targets() {
        target(&name, value, goal, met);
    }
    for (name, value, goal, met) in put_latency::targets(&latency) {
        target(&name, value, &goal, met);
    }

    md.push_str("\n### Targets (64 x 4 KiB, WRITE_SIZE 4, ECC mode, 64 B, steady state unless stated)\n\n```text\n");
    for t in &targets {
        md.push_str(t);
        md.push('\n');
    }
    md.push_str("```\n");
    std::fs::write("BENCHMARKS.md", &md).expect("write BENCHMARKS.md");
    println!("{md}");
    println!("wrote BENCHMARKS.md");
    for t in &targets {
        println!("{t}");
    }
    let _ = (Kind::Command, codec::PAGE_HEADER_LEN);
}
