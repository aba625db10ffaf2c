//! Flash cost of the RAM-first tier: the same publish stream through a `TieredOutbox` in
//! `Persist::Always` and in `Persist::RamFirst` mode, on a healthy link (every PUBACK within
//! 20..100 ms) and on a link that is down 50 % of the time (5 s up, 5 s down). Prints flash
//! bytes written per message and erases per 1,000 messages (SimFlash counters, 64 x 4 KiB,
//! WRITE_SIZE 4, docs/BENCHMARK-MODEL flash model), and checks that every message reached the
//! broker, first receipts in publish order, and that during an outage nothing stayed in RAM.
//!
//! `cargo run --release --example tier_bench [-- MESSAGES]`
//!
//! Simulated time in 5 ms ticks; one publish every 20 ms; window W = 16; RAM queue R = 32;
//! messages of 64 B (a 32-byte topic and a 32-byte payload). Acknowledgement latencies come
//! from a fixed-seed generator, so the figures are the same on every run.

use mqtt_persist::flash::{FlashStats, SimFlash, block_on};
use mqtt_persist::mqtt::{OutboxConfig, Persist, Publish, TierReceipt, TieredOutbox, Transmit};
use mqtt_persist::{Config, Store};

type Sim = SimFlash<4096, 64, 4, 4>;
const W: usize = 16;
const R: usize = 32;
const BUF: usize = 256;
const TICK_MS: u64 = 5;
const PUBLISH_EVERY_MS: u64 = 20;
const TOPIC: &str = "plant/line-3/cell-07/temperature"; // 32 bytes

#[derive(Clone, Copy)]
enum LinkModel {
    Healthy,
    /// Up for `period` ms, then down for `period` ms, starting up.
    HalfDown {
        period: u64,
    },
}

impl LinkModel {
    fn up(self, t: u64) -> bool {
        match self {
            LinkModel::Healthy => true,
            LinkModel::HalfDown { period } => (t / period).is_multiple_of(2),
        }
    }
}

struct Outcome {
    stats: FlashStats,
    ram_receipts: u32,
    spilled_at_outage: u32,
}

/// xorshift64*: fixed-seed ack latencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn latency(&mut self) -> u64 {
        20 + self.next() % 81
    }
}

fn run(n: u32, persist: Persist, link: LinkModel) -> Outcome {
    let mut flash = Sim::boxed();
    let mut store: Store<&mut Sim, 64> = block_on(Store::mount(&mut *flash, Config::new(BUF)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(store.open("bench-tier", "tcp://bench")).unwrap();
    let mut tier: TieredOutbox<_, W, BUF, R> =
        block_on(TieredOutbox::restore(store, OutboxConfig::new(20_000), persist)).unwrap();
    let stats_before = tier.outbox().store().flash().stats();

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut acks: Vec<(u64, u16)> = Vec::new(); // (due, packet id) on the current connection
    let mut first_receipt: Vec<u32> = Vec::new();
    let mut received = vec![false; n as usize];
    let mut buf = [0u8; BUF];
    let mut up = false;
    let mut published = 0u32;
    let mut ram_receipts = 0u32;
    let mut spilled_at_outage = 0u32;
    let mut t = 0u64;
    loop {
        let now_up = link.up(t) || published == n; // after the last publish: up until drained
        if now_up && !up {
            tier.on_connected();
        } else if !now_up && up {
            acks.clear();
            spilled_at_outage += block_on(tier.on_connection_lost(|d| panic!("dropped {d:?}"))).unwrap();
            assert_eq!(tier.in_ram(), 0, "link down: nothing may stay in RAM only");
        }
        up = now_up;
        if up {
            let mut i = 0;
            while i < acks.len() {
                if acks[i].0 <= t {
                    let (_, pid) = acks.swap_remove(i);
                    assert!(block_on(tier.on_puback(pid)).unwrap().is_some(), "ack for pid {pid}");
                } else {
                    i += 1;
                }
            }
        }
        if published < n && t.is_multiple_of(PUBLISH_EVERY_MS) {
            let payload = format!("{{\"n\":{published:08},\"celsius\":21.5}}   ");
            assert_eq!(payload.len(), 32);
            let receipt = block_on(tier.publish(&Publish::new(TOPIC, payload.as_bytes()), t)).unwrap();
            match receipt {
                TierReceipt::Ram { .. } => ram_receipts += 1,
                TierReceipt::Flash { receipt, .. } => {
                    assert!(matches!(receipt, mqtt_persist::mqtt::Receipt::Stored { .. }))
                }
            }
            if !up {
                assert_eq!(tier.in_ram(), 0, "link down: the publish must be on flash");
            }
            published += 1;
        }
        block_on(tier.poll(t, |d| panic!("dropped {d:?}"))).unwrap();
        if up {
            while let Some(tx) = block_on(tier.next_transmit(t, &mut buf, |d| panic!("dropped {d:?}"))).unwrap() {
                let Transmit::Publish(p) = tx else {
                    panic!("no QoS 2 here")
                };
                let text = core::str::from_utf8(p.payload).unwrap();
                let id: u32 = text[5..13].parse().unwrap();
                if !received[id as usize] {
                    received[id as usize] = true;
                    first_receipt.push(id);
                }
                acks.push((t + rng.latency(), p.packet_id));
            }
        }
        if published == n && tier.is_idle() {
            break;
        }
        t += TICK_MS;
        assert!(t < u64::from(n) * PUBLISH_EVERY_MS * 4 + 60_000, "did not drain");
    }
    assert_eq!(first_receipt, (0..n).collect::<Vec<_>>(), "order or completeness");
    let store = block_on(tier.into_outbox().into_store()).unwrap();
    let after = store.flash().stats();
    Outcome {
        stats: FlashStats {
            write_bytes: after.write_bytes - stats_before.write_bytes,
            erases: after.erases - stats_before.erases,
            writes: after.writes - stats_before.writes,
            ..after
        },
        ram_receipts,
        spilled_at_outage,
    }
}

fn report(name: &str, n: u32, o: &Outcome) -> f64 {
    let per_msg = o.stats.write_bytes as f64 / f64::from(n);
    println!(
        "  {name:<34} {per_msg:>7.1} B/msg written, {:>6.1} erases per 1,000 messages, {:>5} of {n} kept in RAM at publish, {} spilled at outages",
        o.stats.erases as f64 * 1000.0 / f64::from(n),
        o.ram_receipts,
        o.spilled_at_outage,
    );
    per_msg
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    println!(
        "tier_bench: {n} messages of 64 B (32-byte topic), one per {PUBLISH_EVERY_MS} ms, W = {W}, RAM queue R = {R}, \
         64 x 4 KiB SimFlash (WRITE_SIZE 4)"
    );
    let ram_first = Persist::RamFirst { spill_after_ms: 1000 };
    let ram_first_short = Persist::RamFirst { spill_after_ms: 60 };
    println!("healthy link (every PUBACK 20..100 ms after the publish is sent):");
    let always = report("always-persist", n, &run(n, Persist::Always, LinkModel::Healthy));
    let tier = report(
        "ram-first, spill after 1000 ms",
        n,
        &run(n, ram_first, LinkModel::Healthy),
    );
    report(
        "ram-first, spill after 60 ms",
        n,
        &run(n, ram_first_short, LinkModel::Healthy),
    );
    println!("link down 50 % of the time (5 s up, 5 s down):");
    let half = LinkModel::HalfDown { period: 5000 };
    report("always-persist", n, &run(n, Persist::Always, half));
    report("ram-first, spill after 1000 ms", n, &run(n, ram_first, half));
    println!(
        "tier flash bytes: {tier:.1} of {always:.1} B per message ({:.1} %)",
        tier / always * 100.0
    );
}
