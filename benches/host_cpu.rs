//! Host CPU time of the benchmark workloads (shared/BENCHMARK-MODEL.md), for this crate and the
//! fastest configuration of each peer, on the RAM-backed `SimFlash` (64 x 4 KiB, WRITE_SIZE 4,
//! multiwrite mode so every peer runs), and of the on-flash codec.
//!
//! `cargo bench --bench host_cpu`; `cargo run --release --example flash_compare` afterwards reads
//! the steady-state figures from `target/criterion` for its host-CPU target line.
//!
//! The MQTT packet format is being built on another branch (`src/mqtt` does not exist here yet):
//! the encode/decode bench of persisted packets is pending; the codec bench covers the record
//! tag and page header.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ekv::flash::PageID;
use embassy_sync_ekv::blocking_mutex::raw::NoopRawMutex;
use embedded_storage::nor_flash::{NorFlash as BNorFlash, ReadNorFlash as BReadNorFlash};
use mqtt_persist::codec::{PageHeader, RecordType, Tag};
use mqtt_persist::flash::{SimFlash, SimFlashError, block_on};
use mqtt_persist::{Config, Key, Kind, Store};
use sequential_storage::cache::key_pointers::ArrayKeyPointers;
use sequential_storage::cache::page_pointers::ArrayPagePointers;
use sequential_storage::cache::page_states::ArrayPageStates;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};
use sequential_storage::queue::{QueueConfig, QueueStorage};

const P: usize = 64;
const PAGE: usize = 4096;
type Sim = SimFlash<PAGE, P, 4, 4>;
const IN_FLIGHT: u32 = 50;
const TOPIC: &[u8; 32] = b"factory/line-3/cell-7/telemetry/";

fn message(seq: u32, size: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(size);
    m.extend_from_slice(TOPIC);
    m.extend_from_slice(&seq.to_le_bytes());
    while m.len() < size {
        m.push((seq.wrapping_mul(31) as usize + m.len() * 7) as u8);
    }
    m
}

/// ekv's own flash trait over the simulator (a local type, for the orphan rule).
struct EkvFlash(Box<Sim>);

impl ekv::flash::Flash for EkvFlash {
    type Error = SimFlashError;
    fn page_count(&self) -> usize {
        P
    }
    async fn erase(&mut self, page_id: PageID) -> Result<(), Self::Error> {
        let p = (page_id.index() * PAGE) as u32;
        BNorFlash::erase(&mut *self.0, p, p + PAGE as u32)
    }
    async fn read(&mut self, page_id: PageID, offset: usize, data: &mut [u8]) -> Result<(), Self::Error> {
        BReadNorFlash::read(&mut *self.0, (page_id.index() * PAGE + offset) as u32, data)
    }
    async fn write(&mut self, page_id: PageID, offset: usize, data: &[u8]) -> Result<(), Self::Error> {
        BNorFlash::write(&mut *self.0, (page_id.index() * PAGE + offset) as u32, data)
    }
}

/// One steady-state step per iteration: put the newest message, acknowledge the oldest.
fn steady(c: &mut Criterion, size: usize) {
    let mut g = c.benchmark_group(format!("steady_{size}B"));
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let msgs: Vec<Vec<u8>> = (0..1024).map(|s| message(s, size)).collect();
    let msg = |seq: u32| &msgs[(seq % 1024) as usize][..];

    g.bench_function(BenchmarkId::from_parameter("mqtt-persist"), |b| {
        let mut flash = Sim::boxed();
        let mut store: Store<_, P> = block_on(Store::mount(&mut *flash, Config::new(size))).unwrap();
        block_on(store.open("bench", "tcp://broker:1883")).unwrap();
        for s in 0..IN_FLIGHT {
            block_on(store.put(Key::command(s), &[&msg(s)[..32], &msg(s)[32..]])).unwrap();
        }
        let mut next = IN_FLIGHT;
        b.iter(|| {
            let m = msg(next);
            block_on(store.put(Key::command(next), &[&m[..32], &m[32..]])).unwrap();
            block_on(store.remove_deferred(Key::command(next - IN_FLIGHT))).unwrap();
            next += 1;
        });
    });

    g.bench_function(BenchmarkId::from_parameter("sequential-storage queue"), |b| {
        let mut flash = Sim::boxed();
        let cache = Cache::new(ArrayPageStates::<P>::new(), ArrayPagePointers::<P>::new(), Uncached);
        let mut q = QueueStorage::new(&mut *flash, QueueConfig::new(0..(P * PAGE) as u32), cache);
        for s in 0..IN_FLIGHT {
            block_on(q.push(msg(s), false)).unwrap();
        }
        let mut next = IN_FLIGHT;
        let mut buf = vec![0u8; size + 8];
        b.iter(|| {
            block_on(q.push(msg(next), false)).unwrap();
            black_box(block_on(q.pop(&mut buf)).unwrap());
            next += 1;
        });
    });

    g.bench_function(BenchmarkId::from_parameter("sequential-storage map"), |b| {
        let mut flash = Sim::boxed();
        let cache = Cache::new(
            ArrayPageStates::<P>::new(),
            ArrayPagePointers::<P>::new(),
            ArrayKeyPointers::<u32, 64>::new(),
        );
        let mut m = MapStorage::new(&mut *flash, MapConfig::new(0..(P * PAGE) as u32), cache);
        let mut buf = vec![0u8; size + 16];
        for s in 0..IN_FLIGHT {
            block_on(m.store_item(&mut buf, &s, &msg(s))).unwrap();
        }
        let mut next = IN_FLIGHT;
        b.iter(|| {
            block_on(m.store_item(&mut buf, &next, &msg(next))).unwrap();
            block_on(m.remove_item(&mut buf, &(next - IN_FLIGHT))).unwrap();
            next += 1;
        });
    });

    g.bench_function(BenchmarkId::from_parameter("ekv"), |b| {
        let db = ekv::Database::<_, NoopRawMutex>::new(EkvFlash(Sim::boxed()), ekv::Config::default());
        block_on(db.format()).unwrap();
        let put = |seq: u32| {
            block_on(async {
                let mut w = db.write_transaction().await;
                w.write(&seq.to_be_bytes(), msg(seq)).await.unwrap();
                w.commit().await.unwrap();
            })
        };
        for s in 0..IN_FLIGHT {
            put(s);
        }
        let mut next = IN_FLIGHT;
        b.iter(|| {
            put(next);
            block_on(async {
                let mut w = db.write_transaction().await;
                w.delete(&(next - IN_FLIGHT).to_be_bytes()).await.unwrap();
                w.commit().await.unwrap();
            });
            next += 1;
        });
    });
    g.finish();
}

fn steady_64(c: &mut Criterion) {
    steady(c, 64);
}

fn steady_512(c: &mut Criterion) {
    steady(c, 512);
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let tag = Tag::new(RecordType::Put(Kind::Command), false, 64, 0x1234);
    g.bench_function("tag encode+decode", |b| {
        b.iter(|| Tag::decode(black_box(black_box(tag).encode())).unwrap())
    });
    let h = PageHeader {
        seq: 17,
        tail_seq: 3,
        erase_count: 9,
        namespace: 0x0123_4567_89AB_CDEF,
        id_high: 0,
        prev_torn: false,
    };
    g.bench_function("page header encode", |b| b.iter(|| black_box(black_box(h).encode())));
    let bytes = h.encode();
    g.bench_function("page header decode", |b| {
        b.iter(|| PageHeader::decode(black_box(&bytes)))
    });
    g.finish();
}

/// The `crc` crate's table variants for CRC-32C over record-sized buffers (docs/DESIGN.md
/// section 25 chose `Table<1>`; the thumbv7em sizes and cycle estimates are there). Host
/// figures: they rank the variants but do not give the target's ratios.
/// `cargo bench --bench host_cpu -- crc_variants`.
fn crc_variants(c: &mut Criterion) {
    use crc::{CRC_32_ISCSI, Crc, Table};
    static T0: Crc<u32, Table<0>> = Crc::<u32, Table<0>>::new(&CRC_32_ISCSI);
    static T1: Crc<u32, Table<1>> = Crc::<u32, Table<1>>::new(&CRC_32_ISCSI);
    static T16: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);
    let mut g = c.benchmark_group("crc_variants");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for len in [64usize, 512, 2047] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        g.bench_with_input(BenchmarkId::new("NoTable", len), &data, |b, d| {
            b.iter(|| T0.checksum(black_box(d)))
        });
        g.bench_with_input(BenchmarkId::new("Table<1>", len), &data, |b, d| {
            b.iter(|| T1.checksum(black_box(d)))
        });
        g.bench_with_input(BenchmarkId::new("Table<16>", len), &data, |b, d| {
            b.iter(|| T16.checksum(black_box(d)))
        });
        // What the store uses: the raw-state update behind the fragment reader.
        g.bench_with_input(BenchmarkId::new("crc_update (store)", len), &data, |b, d| {
            b.iter(|| {
                mqtt_persist::codec::crc_final(mqtt_persist::codec::crc_update(
                    mqtt_persist::codec::CRC_INIT,
                    black_box(d),
                ))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, steady_64, steady_512, codec, crc_variants);
criterion_main!(benches);
