//! Peak stack by painting: fill the free stack below the current stack pointer with a pattern,
//! run the operation, then find the deepest word that no longer holds the pattern.
//!
//! The figure is what the operation needs below its caller's frame: the call itself, the
//! blocking facade's `block_on` with the future it polls, and everything the store calls.
//! Nothing runs in between (no interrupts are enabled), so every overwritten word is the
//! operation's. It is exact to the word for the run measured; a path not taken in that run
//! (another compaction branch, an error path) may go deeper, so callers measure the maximum
//! over workloads that take the deep paths (compaction, full pages).

use core::arch::asm;
use core::ptr::{read_volatile, write_volatile};

/// The paint. The scan goes up from the bottom of the painted region to the first word that
/// differs; if the deepest word an operation wrote happened to equal the paint, the figure
/// would come out short by the words up to the next one that differs (the store writes no such
/// constant).
const PAINT: u32 = 0xCAFE_BABE;

unsafe extern "C" {
    /// End of `.bss`/`.uninit` (cortex-m-rt's linker script): the stack may grow down to here.
    static __sheap: u32;
}

/// How far below the stack pointer to paint, at most (painting all of a 4 MiB RAM for every
/// operation would be slow and tells nothing more).
const REACH: usize = 48 * 1024;

#[inline(always)]
fn sp() -> usize {
    let sp: usize;
    // Safety: reads the stack pointer register, touches nothing.
    unsafe { asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

/// The lowest address the stack may use.
fn floor() -> usize {
    // Only the symbol's address is taken (no read): safe.
    let end = (&raw const __sheap) as usize;
    (end + 3) & !3
}

/// Bytes of free stack below the caller (painting stops at the end of `.bss`).
pub fn free() -> usize {
    sp() - floor()
}

/// Not inlined, so `f`'s frame (with the future the blocking facade keeps) is below the
/// stack pointer [`peak`] read, in the painted region.
#[inline(never)]
fn call<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` and returns its result and the peak stack it used, in bytes.
///
/// Panics if the operation overwrote the bottom of the painted region: the stack then went at
/// least that deep (and on the micro:bit may have run into `.bss`), so no figure is honest.
#[inline(never)]
pub fn peak<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let top = sp() & !3;
    let low = floor().max(top.saturating_sub(REACH));
    // Volatile stores: the loop stays a loop (no call to memset, which would itself use the
    // stack being painted) and is not optimised away.
    let mut p = low;
    while p < top {
        // Safety: [low, top) is free stack below the current stack pointer and above `.bss`;
        // nothing else uses it while this function runs (no interrupts are enabled).
        unsafe { write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
    let r = call(f);
    let mut p = low;
    // Safety: as above; reading back what was painted or what `f` left.
    while p < top && unsafe { read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    assert!(
        p > low,
        "stack reached the bottom of the painted region ({} B)",
        top - low
    );
    (r, top - p)
}

/// Words at the bottom of the stack region that must stay painted for the whole run.
const CANARY: usize = 16;

/// Paints the canary at the very bottom of the stack region (just above `.bss`). Unmeasured
/// code could otherwise overflow into `.bss` (the simulated flash) unnoticed.
pub fn arm_canary() {
    for i in 0..CANARY {
        // Safety: the lowest words of the free stack, far below the current frame.
        unsafe { write_volatile((floor() + 4 * i) as *mut u32, PAINT) };
    }
}

/// Panics if anything wrote into the canary since [`arm_canary`].
pub fn check_canary() {
    for i in 0..CANARY {
        // Safety: as in `arm_canary`.
        let w = unsafe { read_volatile((floor() + 4 * i) as *const u32) };
        assert_eq!(w, PAINT, "the stack overflowed into .bss");
    }
}

/// Uses `N` bytes of stack for certain: a volatile write to every word of a local array.
#[inline(never)]
fn touch<const N: usize>() {
    let mut a = [0u32; N];
    for (i, w) in a.iter_mut().enumerate() {
        // Safety: a write to a local.
        unsafe { write_volatile(w, i as u32) };
    }
    core::hint::black_box(&a);
}

/// The method checks itself: a function known to use `N` words must measure at least that
/// and at most 64 bytes more (its saved registers, the call frames of `peak`).
pub fn self_check() {
    let ((), small) = peak(touch::<64>);
    let ((), large) = peak(touch::<1024>);
    assert!(
        (256..256 + 64).contains(&small),
        "painting measured {small} B for a 256 B frame"
    );
    assert!(
        (4096..4096 + 64).contains(&large),
        "painting measured {large} B for a 4096 B frame"
    );
}
