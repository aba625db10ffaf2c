//! Put latency with and without idle-time maintenance (`Store::maintain`, DESIGN.md section
//! 23), for `flash_compare`: workload (c) of `shared/BENCHMARK-MODEL.md` (64 B messages, 50 in
//! flight, in-order acks, a warm-up until every page was erased once, then 10,000 counted
//! steps), with the modeled device time of every single `put` recorded; reported as maximum,
//! 99th percentile and median, on 64 x 4 KiB (W25Q model) and on 8 x 128 KiB with WRITE_SIZE
//! 32 (STM32H7 model). "With maintain" calls `maintain()` until it returns `Idle` before every
//! put (the idle time between publishes); its device time is reported separately.
//!
//! `cargo run --release --example flash_compare -- put-latency` runs only this part and prints
//! its section and targets without writing BENCHMARKS.md.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;

use embedded_storage::nor_flash::{NorFlash as BNorFlash, ReadNorFlash as BReadNorFlash};
use embedded_storage_async::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use mqtt_persist::flash::{SimFlash, SimFlashError, block_on};
use mqtt_persist::{Config, Key, Maintenance, Store};

const MSG: usize = 64;
const IN_FLIGHT: u32 = 50;
const STEPS: u32 = 10_000;

/// A flash device's timing model.
#[derive(Clone, Copy)]
struct Device {
    name: &'static str,
    geometry: &'static str,
    read_ns: fn(usize) -> u64,
    /// Program time of one write call at (offset, len).
    program_ns: fn(usize, usize) -> u64,
    erase_ns: u64,
    page: usize,
}

impl Device {
    /// The time to program one whole erase page, the budget a put may use.
    fn page_program_ns(&self) -> u64 {
        (self.program_ns)(0, self.page)
    }
}

/// W25Q-class SPI NOR (BENCHMARK-MODEL.md): read 0.2 us + 20 ns/byte; program 1 us + min(30 us
/// + 2.5 us x (bytes - 1), 400 us) per 256-byte program page touched; 45 ms per 4 KiB erase.
const W25Q: Device = Device {
    name: "W25Q",
    geometry: "64x4KiB",
    read_ns: |b| 200 + 20 * b as u64,
    program_ns: |offset, len| {
        let (mut ns, mut pos, end) = (0, offset, offset + len);
        while pos < end {
            let chunk_end = end.min((pos / 256 + 1) * 256);
            ns += 1_000 + (30_000 + 2_500 * (chunk_end - pos - 1) as u64).min(400_000);
            pos = chunk_end;
        }
        ns
    },
    erase_ns: 45_000_000,
    page: 4096,
};

/// STM32H7-like internal flash (BENCHMARK-MODEL.md): 60 us per 32-byte flash word programmed,
/// about 2 s per 128 KiB sector erase; reads over the AXI bus taken as 2 ns per byte (an
/// assumption of this model: they are negligible next to programs either way).
const H7: Device = Device {
    name: "STM32H7",
    geometry: "8x128KiB",
    read_ns: |b| 2 * b as u64,
    program_ns: |_, len| 60_000 * len.div_ceil(32) as u64,
    erase_ns: 2_000_000_000,
    page: 128 * 1024,
};

struct Inner<const PAGE: usize, const N: usize, const WS: usize> {
    sim: Box<SimFlash<PAGE, N, WS, WS>>,
    dev: Device,
    ns: u64,
    erases: u64,
    paused: bool,
}

/// A simulated flash that adds up modeled device time; clones share it.
#[derive(Clone)]
struct Meter<const PAGE: usize, const N: usize, const WS: usize>(Rc<RefCell<Inner<PAGE, N, WS>>>);

impl<const PAGE: usize, const N: usize, const WS: usize> Meter<PAGE, N, WS> {
    fn new(dev: Device) -> Self {
        let mut sim = SimFlash::<PAGE, N, WS, WS>::boxed();
        // Both modeled parts are ECC flash (STM32H7) or used as such (W25Q: ECC mode is the
        // stricter of the two, and this crate's headline configuration).
        sim.set_ecc(true);
        Meter(Rc::new(RefCell::new(Inner {
            sim,
            dev,
            ns: 0,
            erases: 0,
            paused: false,
        })))
    }
    fn now(&self) -> (u64, u64) {
        let m = self.0.borrow();
        (m.ns, m.erases)
    }
    fn pause(&self, p: bool) {
        self.0.borrow_mut().paused = p;
    }
}

impl<const PAGE: usize, const N: usize, const WS: usize> ErrorType for Meter<PAGE, N, WS> {
    type Error = SimFlashError;
}

impl<const PAGE: usize, const N: usize, const WS: usize> ReadNorFlash for Meter<PAGE, N, WS> {
    const READ_SIZE: usize = WS;
    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let mut m = self.0.borrow_mut();
        BReadNorFlash::read(&mut *m.sim, offset, bytes)?;
        if !m.paused {
            m.ns += (m.dev.read_ns)(bytes.len());
        }
        Ok(())
    }
    fn capacity(&self) -> usize {
        PAGE * N
    }
}

impl<const PAGE: usize, const N: usize, const WS: usize> NorFlash for Meter<PAGE, N, WS> {
    const WRITE_SIZE: usize = WS;
    const ERASE_SIZE: usize = PAGE;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let mut m = self.0.borrow_mut();
        BNorFlash::erase(&mut *m.sim, from, to)?;
        if !m.paused {
            let pages = ((to - from) as usize / PAGE) as u64;
            m.erases += pages;
            m.ns += pages * m.dev.erase_ns;
        }
        Ok(())
    }
    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let mut m = self.0.borrow_mut();
        let r = BNorFlash::write(&mut *m.sim, offset, bytes);
        if !m.paused {
            m.ns += (m.dev.program_ns)(offset as usize, bytes.len());
        }
        r
    }
}

/// One run's figures.
pub struct Run {
    device: &'static str,
    geometry: &'static str,
    ack: &'static str,
    maintain: bool,
    worst_ns: u64,
    p99_ns: u64,
    median_ns: u64,
    /// Puts that erased, and the most pages one put erased.
    puts_erasing: u32,
    max_put_erases: u64,
    erases_per_1000: f64,
    /// Modeled device time of the maintenance per step (mean).
    maintain_ns_per_step: f64,
    /// Device time of all puts, acks and maintenance per step (mean).
    total_ns_per_step: f64,
    budget_ns: u64,
}

fn message(seq: u32) -> Vec<u8> {
    (0..MSG as u32)
        .map(|i| {
            if i < 4 {
                seq.to_le_bytes()[i as usize]
            } else {
                (seq.wrapping_mul(31) ^ i.wrapping_mul(7)) as u8
            }
        })
        .collect()
}

fn run<const PAGE: usize, const N: usize, const WS: usize>(dev: Device, durable: bool, maintain: bool) -> Run {
    let meter = Meter::<PAGE, N, WS>::new(dev);
    let mut s: Store<Meter<PAGE, N, WS>, N> = block_on(Store::mount(meter.clone(), Config::new(MSG)))
        .map_err(|e| e.1)
        .expect("mount");
    block_on(s.open("bench-client", "tcp://broker:1883")).expect("open");
    let mut inflight = std::collections::VecDeque::new();
    let mut next = 0u32;
    let mut step = |s: &mut Store<Meter<PAGE, N, WS>, N>, record: Option<&mut Vec<(u64, u64)>>, mns: &mut u64| {
        if maintain {
            let before = meter.now().0;
            for _ in 0..Store::<Meter<PAGE, N, WS>, N>::maintain_bound() {
                if block_on(s.maintain()).expect("maintain") == Maintenance::Idle {
                    break;
                }
            }
            *mns += meter.now().0 - before;
        }
        let (t0, e0) = meter.now();
        block_on(s.put(Key::command(next), &[&message(next)])).expect("put");
        let (t1, e1) = meter.now();
        if let Some(r) = record {
            r.push((t1 - t0, e1 - e0));
        }
        inflight.push_back(next);
        next += 1;
        if inflight.len() > IN_FLIGHT as usize {
            let seq = inflight.pop_front().unwrap();
            meter.pause(true);
            let mut buf = [0u8; MSG];
            assert_eq!(
                block_on(s.get(Key::command(seq), &mut buf)).expect("get"),
                &message(seq)[..]
            );
            meter.pause(false);
            if durable {
                block_on(s.remove(Key::command(seq))).expect("remove");
            } else {
                block_on(s.remove_deferred(Key::command(seq))).expect("remove_deferred");
            }
        }
    };
    let mut mns = 0u64;
    // Warm-up until every page was erased once.
    let mut warm = 0;
    while (0..N).any(|p| meter.0.borrow().sim.page_erases(p) == 0) && warm < 4 * STEPS {
        step(&mut s, None, &mut mns);
        warm += 1;
    }
    let (t0, e0) = meter.now();
    let mut lat = Vec::with_capacity(STEPS as usize);
    mns = 0;
    for _ in 0..STEPS {
        step(&mut s, Some(&mut lat), &mut mns);
    }
    let (t1, e1) = meter.now();
    let mut times: Vec<u64> = lat.iter().map(|l| l.0).collect();
    times.sort_unstable();
    let pct = |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    Run {
        device: dev.name,
        geometry: dev.geometry,
        ack: if durable { "remove" } else { "remove_deferred" },
        maintain,
        worst_ns: *times.last().unwrap(),
        p99_ns: pct(0.99),
        median_ns: pct(0.5),
        puts_erasing: lat.iter().filter(|l| l.1 > 0).count() as u32,
        max_put_erases: lat.iter().map(|l| l.1).max().unwrap_or(0),
        erases_per_1000: (e1 - e0) as f64 * 1000.0 / STEPS as f64,
        maintain_ns_per_step: mns as f64 / STEPS as f64,
        total_ns_per_step: (t1 - t0) as f64 / STEPS as f64,
        budget_ns: dev.page_program_ns(),
    }
}

/// Every run: both devices, both acknowledgement modes, without and with maintenance.
pub fn runs() -> Vec<Run> {
    let mut out = Vec::new();
    for durable in [true, false] {
        for maintain in [false, true] {
            out.push(run::<4096, 64, 4>(W25Q, durable, maintain));
            out.push(run::<{ 128 * 1024 }, 8, 32>(H7, durable, maintain));
        }
    }
    out
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

/// The BENCHMARKS.md section.
pub fn section(runs: &[Run]) -> String {
    let mut md = String::from(
        "\n### Put latency with and without idle-time maintenance (modeled device time of each `put`)\n\n\
Workload (c): 64 B messages, 50 in flight, in-order acks, warm-up until every page was erased once,\n\
then 10,000 counted steps; ECC mode. *with maintain*: `Store::maintain()` called until it returns\n\
`Idle` before every put (idle time between publishes; DESIGN.md section 23). W25Q model on 64 x 4 KiB\n\
(45 ms per erase); STM32H7 model on 8 x 128 KiB, WRITE_SIZE 32 (2 s per erase, 60 us per 32 B\n\
word, reads 2 ns/B). *maintain/step* and *all/step* are mean device time per step (put + ack +\n\
maintenance): maintenance moves the erases out of the puts, it does not make them free.\n\n\
| device | ack | maintain | worst put | p99 put | median put | puts that erased | erases/1k | maintain/step | all/step |\n\
|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let _ = writeln!(
            md,
            "| {} {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} |",
            r.device,
            r.geometry,
            r.ack,
            if r.maintain { "yes" } else { "no" },
            ms(r.worst_ns),
            ms(r.p99_ns),
            ms(r.median_ns),
            r.puts_erasing,
            r.erases_per_1000,
            ms(r.maintain_ns_per_step as u64),
            ms(r.total_ns_per_step as u64),
        );
    }
    md
}

/// `(name, value, goal, met)` per device and acknowledgement mode: with maintenance the worst
/// put erases nothing and takes at most the time to program one erase page; the figures
/// without maintenance are given beside for comparison.
pub fn targets(runs: &[Run]) -> Vec<(String, String, String, Option<bool>)> {
    let mut out = Vec::new();
    for r in runs.iter().filter(|r| r.maintain) {
        let without = runs
            .iter()
            .find(|w| !w.maintain && w.device == r.device && w.ack == r.ack);
        let met = r.max_put_erases == 0 && r.worst_ns <= r.budget_ns;
        let mut value = format!(
            "{} (p99 {}, {} puts erased)",
            ms(r.worst_ns),
            ms(r.p99_ns),
            r.puts_erasing
        );
        if let Some(w) = without {
            let _ = write!(
                value,
                "; without maintain: worst {}, p99 {}, {} puts erased",
                ms(w.worst_ns),
                ms(w.p99_ns),
                w.puts_erasing
            );
        }
        out.push((
            format!("put worst with maintain, {} {} ({})", r.geometry, r.device, r.ack),
            value,
            format!("no erase, <= 1 page program budget = {}", ms(r.budget_ns)),
            Some(met),
        ));
    }
    out
}
