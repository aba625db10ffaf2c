//! [`block_on`]: a minimal executor for futures that never wait on a wakeup.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

#[cfg(doc)]
use super::{BlockingFlash, SimFlash};

/// Runs a future to completion on the current thread by polling it in a
/// loop with a no-op waker.
///
/// Only for futures that complete without external wakeups, such as the
/// ones returned by [`BlockingFlash`], [`SimFlash`] or a store driven by
/// them: nothing ever wakes the loop, so a future waiting on an interrupt,
/// a timer or another task would make this spin forever at 100% CPU.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
