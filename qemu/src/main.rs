//! The store on the real instruction set, under `qemu-system-arm` (see Cargo.toml): functional
//! checks (mount, put/get/remove/keys/clear, a power-cut sweep, the outbox publish-restore
//! cycle), then the peak stack of every operation, the struct and future sizes, and the same
//! for sequential-storage, printed over semihosting. A failed check panics, which exits QEMU
//! with a failure; a missed size target is only reported.
#![no_std]
#![no_main]

mod checks;
mod ss;
mod stack;

use core::mem::MaybeUninit;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use mqtt_persist::flash::SimFlash;
use mqtt_persist::mqtt::outbox::Outbox;
use mqtt_persist::{Blocking, Store};
use panic_semihosting as _;

/// The Cortex-M0 run: 8 pages of 512 bytes (8 of 256 leave no room once the store's reserves
/// are kept; 4 of 512 hold less than 200 bytes). The simulated flash takes twice its size in
/// RAM (data and word states).
#[cfg(microbit)]
mod geometry {
    pub const PAGE: usize = 512;
    pub const PAGES: usize = 8;
    pub const MAX_VALUE: usize = 64;
    /// Rounds of the churn workload: about 8 times the flash written.
    pub const CHURN_ROUNDS: u32 = 80;
    pub const MACHINE: &str = "m0";
    pub const NAME: &str = "micro:bit, Cortex-M0, thumbv6m-none-eabi";
}

/// The MPS2 board has RAM to spare: 16 pages of 4 KiB, as on a typical STM32 partition.
#[cfg(not(microbit))]
mod geometry {
    pub const PAGE: usize = 4096;
    pub const PAGES: usize = 16;
    pub const MAX_VALUE: usize = 512;
    /// Rounds of the churn workload: about 4 times the flash written.
    pub const CHURN_ROUNDS: u32 = 200;
    pub const MACHINE: &str = "m4";
    pub const NAME: &str = "MPS2 AN386, Cortex-M4F, thumbv7em-none-eabihf";
}
pub use geometry::*;

/// Word-programmable NOR (4-byte writes, as on the nRF51 and many parts).
pub type Sim = SimFlash<PAGE, PAGES, 4, 4>;
/// The store under test: it borrows the flash, as firmware does with its HAL driver.
pub type St<'f> = Store<&'f mut Sim, PAGES>;
/// The blocking facade every measured store operation goes through.
pub type Db<'f> = Blocking<St<'f>>;
/// Outbox window and largest encoded record.
pub const W: usize = 4;
pub const BUF: usize = 128;
pub type Ob<'f> = Outbox<St<'f>, W, BUF>;

/// Goals of issue 10, point 1.
const GOAL_STACK: usize = 1536;
const GOAL_FUTURE: usize = 1024;

/// The operations measured, in print order.
#[derive(Clone, Copy)]
pub enum Op {
    Mount,
    Put,
    Get,
    Remove,
    RemoveDeferred,
    Flush,
    Keys,
    Clear,
    Contains,
    Restore,
    Publish,
    NextTransmit,
    Puback,
    SsQueuePush,
    SsQueuePeek,
    SsQueuePop,
    SsMapStore,
    SsMapFetch,
    SsMapRemove,
}

const OPS: usize = 19;
const NAMES: [&str; OPS] = [
    "mount",
    "put",
    "get",
    "remove",
    "remove_deferred",
    "flush",
    "keys",
    "clear",
    "contains",
    "outbox_restore",
    "outbox_publish",
    "outbox_next_transmit",
    "outbox_puback",
    "ss_queue_push",
    "ss_queue_peek",
    "ss_queue_pop",
    "ss_map_store_item",
    "ss_map_fetch_item",
    "ss_map_remove_item",
];
/// The store's own operations (the goals apply to these and the outbox's).
const OURS: usize = 13;

/// Peak stack per operation over every measured call, and how many calls were measured.
pub struct Meter {
    peak: [usize; OPS],
    calls: [u32; OPS],
}

impl Meter {
    /// Runs `f` (one operation through the blocking facade) with its stack measured.
    pub fn run<R>(&mut self, op: Op, f: impl FnOnce() -> R) -> R {
        let (r, used) = stack::peak(f);
        let i = op as usize;
        self.peak[i] = self.peak[i].max(used);
        self.calls[i] += 1;
        r
    }
}

/// The simulated flash: a static, built in place (on the MPS2 it is 128 KiB, more than any
/// stack frame should hold).
static mut FLASH: MaybeUninit<Sim> = MaybeUninit::uninit();

/// Erases the flash and resets the simulator (power on, no cut armed, counters at zero).
pub fn reset(flash: &mut Sim) -> &mut Sim {
    // Safety: `Sim` has no destructor and `new_in_place` initialises every field, so
    // re-initialising a live value through a `MaybeUninit` view of it is sound.
    let slot = unsafe { &mut *(flash as *mut Sim).cast::<MaybeUninit<Sim>>() };
    SimFlash::new_in_place(slot)
}

fn verdict(value: usize, goal: usize) -> &'static str {
    if value <= goal { "met" } else { "missed" }
}

#[entry]
fn main() -> ! {
    let slot: *mut MaybeUninit<Sim> = &raw mut FLASH;
    // Safety: the only reference to FLASH, taken once.
    let flash: &'static mut Sim = SimFlash::new_in_place(unsafe { &mut *slot });
    hprintln!(
        "== mqtt-persist on {} ({} pages of {} B, values up to {} B)",
        NAME,
        PAGES,
        PAGE,
        MAX_VALUE
    );
    hprintln!("free stack at start: {} B", stack::free());
    stack::arm_canary();
    stack::self_check();
    let mut m = Meter {
        peak: [0; OPS],
        calls: [0; OPS],
    };

    checks::basic(&mut m, flash);
    checks::churn(&mut m, flash);
    checks::power_cut_sweep(flash, false);
    checks::power_cut_sweep(flash, true);
    checks::outbox_cycle(&mut m, flash);
    ss::queue(&mut m, flash);
    ss::map(&mut m, flash);
    stack::check_canary();
    hprintln!("all checks passed");

    hprintln!("== peak stack per operation (blocking facade, release; max over the calls measured)");
    for ((name, peak), calls) in NAMES.iter().zip(m.peak).zip(m.calls) {
        hprintln!("stack {}: {} B ({} calls)", name, peak, calls);
    }
    hprintln!("== sizes");
    hprintln!("struct Store<_, {}>: {} B", PAGES, core::mem::size_of::<St>());
    hprintln!("struct Store<_, 64>: {} B", core::mem::size_of::<Store<&mut Sim, 64>>());
    hprintln!("struct Outbox<_, {}, {}>: {} B", W, BUF, core::mem::size_of::<Ob>());
    let futures = checks::future_sizes(flash);
    let mut largest = ("", 0);
    for &(name, size) in futures.iter() {
        hprintln!("future {}: {} B", name, size);
        // The goal is about the store's futures; the outbox restore future owns the store.
        if !name.starts_with("outbox") && size > largest.1 {
            largest = (name, size);
        }
    }
    for &(name, size) in ss::future_sizes(flash).iter() {
        hprintln!("future {}: {} B", name, size);
    }

    hprintln!("== targets ({})", MACHINE);
    for (name, v) in NAMES.iter().zip(m.peak).take(OURS) {
        hprintln!(
            "target stack_{}_{}: {} B (goal {} B) {}",
            name,
            MACHINE,
            v,
            GOAL_STACK,
            verdict(v, GOAL_STACK)
        );
    }
    hprintln!(
        "target largest_store_future_{} ({}): {} B (goal {} B) {}",
        MACHINE,
        largest.0,
        largest.1,
        GOAL_FUTURE,
        verdict(largest.1, GOAL_FUTURE)
    );
    debug::exit(debug::EXIT_SUCCESS);
    panic!("semihosting exit returned");
}
