//! The `embassy-time` driver minimq needs (keep-alive, timeouts), on the board's millisecond
//! counter. A real device takes its HAL's (e.g. embassy-stm32's `time-driver-*` feature), which
//! arms a timer interrupt for `schedule_wake`; this one wakes at once, so the executor polls
//! again, as `board::after_ms` does.

use core::task::Waker;

use embassy_time_driver::{Driver, TICK_HZ};

struct MillisDriver;

impl Driver for MillisDriver {
    fn now(&self) -> u64 {
        super::board::now_ms() * TICK_HZ / 1000
    }
    fn schedule_wake(&self, _at: u64, waker: &Waker) {
        waker.wake_by_ref();
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: MillisDriver = MillisDriver);
