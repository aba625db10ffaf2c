//! [`block_on`]: embassy-futures' executor for futures that never wait on a wakeup.
//!
//! It polls the future in a loop with a no-op waker, which is what the blocking facades need:
//! the futures of [`BlockingFlash`], [`SimFlash`] or a store driven by them complete without
//! external wakeups. A future waiting on an interrupt, a timer or another task would make it
//! spin forever at 100 % CPU. The crate had its own 12-line copy of this loop; it now uses
//! embassy-futures' (no dependencies of its own, same behaviour, DESIGN.md section 25).

#[cfg(doc)]
#[allow(unused_imports)]
use super::{BlockingFlash, SimFlash};

pub use embassy_futures::block_on;

#[cfg(test)]
mod tests {
    use super::*;
    use core::future::Future;
    use core::task::{Context, Poll};

    #[test]
    fn block_on_spins_through_pending() {
        struct PendTwice(u8);
        impl Future for PendTwice {
            type Output = u8;
            fn poll(mut self: core::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u8> {
                if self.0 < 2 {
                    self.0 += 1;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    Poll::Ready(self.0)
                }
            }
        }
        assert_eq!(block_on(PendTwice(0)), 2);
        assert_eq!(block_on(async { 7 }), 7);
    }
}
