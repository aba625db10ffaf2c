//! Dropping an operation future part-way (a timeout, a `select!`) must leave the store
//! consistent: no word programmed twice (the simulated flash is in ECC mode), earlier keys
//! intact, later operations working, and the key of the dropped put old-or-new after a remount.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embedded_storage_async::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Key, Store};

type Sim = SimFlash<1024, 6, 4, 4>;

/// A driver that programs the bytes, then waits once for completion (as a DMA driver does):
/// dropping the future at that point leaves the write done but unacknowledged.
struct DmaFlash<'a> {
    inner: &'a mut Sim,
    pend_writes: bool,
}

struct YieldOnce(bool);
impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: core::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

impl ErrorType for DmaFlash<'_> {
    type Error = <Sim as ErrorType>::Error;
}
impl ReadNorFlash for DmaFlash<'_> {
    const READ_SIZE: usize = 4;
    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        ReadNorFlash::read(&mut *self.inner, offset, bytes).await
    }
    fn capacity(&self) -> usize {
        ReadNorFlash::capacity(&*self.inner)
    }
}
impl NorFlash for DmaFlash<'_> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 1024;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        NorFlash::erase(&mut *self.inner, from, to).await
    }
    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        NorFlash::write(&mut *self.inner, offset, bytes).await?;
        if self.pend_writes {
            YieldOnce(false).await;
        }
        Ok(())
    }
}

/// Polls `fut` once and drops it; true if it was still pending.
fn poll_once_and_drop<F: Future>(fut: F) -> bool {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    fut.as_mut().poll(&mut cx).is_pending()
}

#[test]
fn a_put_dropped_at_its_write_leaves_the_store_consistent() {
    for nth_write in 0..3 {
        let mut sim = Sim::boxed();
        sim.set_ecc(true);
        let cfg = Config::new(200);
        {
            let flash = DmaFlash {
                inner: &mut sim,
                pend_writes: false,
            };
            let mut s: Store<_, 6> = block_on(Store::mount(flash, cfg)).map_err(|e| e.1).unwrap();
            block_on(s.open("c", "u")).unwrap();
            for i in 0..5u32 {
                block_on(s.put(Key::command(i), &[&[i as u8; 50]])).unwrap();
            }
            // From now on writes pend; let `nth_write` of them complete before dropping.
            let mut flash = s.into_flash();
            flash.pend_writes = true;
            let mut s: Store<_, 6> = block_on(Store::mount(flash, cfg)).map_err(|e| e.1).unwrap();
            block_on(s.open("c", "u")).unwrap();
            for _ in 0..nth_write {
                // A completed put whose writes each pend once: driven by block_on.
                block_on(s.put(Key::queued(9), &[&[9u8; 30]])).unwrap();
            }
            assert!(
                poll_once_and_drop(s.put(Key::command(2), &[&[0xEE; 120]])),
                "put did not pend"
            );
            // The store goes on: new writes must not reprogram the dropped write's words.
            block_on(s.put(Key::command(7), &[&[7u8; 60]])).unwrap();
            let mut buf = [0u8; 200];
            assert_eq!(block_on(s.get(Key::command(7), &mut buf)).unwrap(), &[7u8; 60][..]);
            assert_eq!(block_on(s.get(Key::command(4), &mut buf)).unwrap(), &[4u8; 50][..]);
            let c2 = block_on(s.get(Key::command(2), &mut buf)).unwrap().to_vec();
            assert!(
                c2 == [2u8; 50] || c2 == [0xEE; 120],
                "dropped put left c-2 neither old nor new"
            );
        }
        assert_eq!(sim.stats().rewrites, 0);
        let flash = DmaFlash {
            inner: &mut sim,
            pend_writes: false,
        };
        let mut s: Store<_, 6> = block_on(Store::mount(flash, cfg)).map_err(|e| e.1).unwrap();
        block_on(s.open("c", "u")).unwrap();
        let mut buf = [0u8; 200];
        for i in [0u32, 1, 3, 4] {
            assert_eq!(block_on(s.get(Key::command(i), &mut buf)).unwrap(), &[i as u8; 50][..]);
        }
        assert_eq!(block_on(s.get(Key::command(7), &mut buf)).unwrap(), &[7u8; 60][..]);
        let c2 = block_on(s.get(Key::command(2), &mut buf)).unwrap().to_vec();
        assert!(c2 == [2u8; 50] || c2 == [0xEE; 120]);
        assert_eq!(s.mount_report().damaged_records, 0);
    }
}
