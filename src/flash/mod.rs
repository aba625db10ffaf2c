//! Flash helpers: a simulated NOR flash for tests, a blocking-to-async
//! adapter and a minimal executor.
//!
//! * [`SimFlash`] is a RAM-backed NOR flash that enforces the rules real parts
//!   impose (erase before program, only 1 -> 0 transitions, alignment, page
//!   boundaries, optionally "write each word once" as on ECC flash) and that
//!   can simulate a power cut at any byte or at any operation. It exists so
//!   that the store's crash-safety claims can be tested exhaustively on a
//!   host, and so that users can do the same with their own code.
//! * [`BlockingFlash`] turns any blocking
//!   [`embedded_storage::nor_flash::NorFlash`] into an
//!   [`embedded_storage_async::nor_flash::NorFlash`], because the store is
//!   written against the async traits only (one code path to test) while many
//!   HALs only ship blocking drivers.
//! * [`block_on`] drives such never-pending futures to completion without an
//!   async runtime, for blocking callers and for tests.
//
// Layout, one mechanism a file:
// * `sim`: the `SimFlash` model, its storage and the NOR operations;
// * `traits`: its `embedded-storage` / `embedded-storage-async` impls;
// * `modes`: ECC and strict mode;
// * `power`: power-cut injection and torn writes / erases;
// * `unreadable`: words left unreadable by a torn operation (ECC);
// * `stats`: `FlashStats` and the per-page counters;
// * `image`: raw image access and `load_image`;
// * `error`: `SimFlashError`;
// * `blocking`: the `BlockingFlash` adapter;
// * `executor`: `block_on`.

mod blocking;
mod error;
mod executor;
mod image;
mod modes;
mod power;
mod sim;
mod stats;
mod traits;
mod unreadable;

pub use blocking::BlockingFlash;
pub use error::SimFlashError;
pub use executor::block_on;
pub use sim::SimFlash;
pub use stats::FlashStats;

/// Helpers shared by the unit tests of the submodules.
#[cfg(test)]
mod test_util {
    pub(super) use super::{BlockingFlash, FlashStats, SimFlash, SimFlashError, block_on};
    pub(super) use embedded_storage::nor_flash::{
        NorFlash as BlockingNorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash as BlockingReadNorFlash,
    };
    pub(super) use embedded_storage_async::nor_flash::{
        MultiwriteNorFlash as AsyncMultiwriteNorFlash, NorFlash as AsyncNorFlash, ReadNorFlash as AsyncReadNorFlash,
    };

    pub(super) type Small = SimFlash<256, 4, 1, 4>;
    pub(super) const PAGE: usize = 256;

    // Both trait families have `read`/`write`/`erase`, so tests go through
    // these helpers to stay unambiguous.
    pub(super) fn w<F: BlockingNorFlash>(f: &mut F, off: u32, b: &[u8]) -> Result<(), F::Error> {
        BlockingNorFlash::write(f, off, b)
    }
    pub(super) fn r<F: BlockingReadNorFlash>(f: &mut F, off: u32, b: &mut [u8]) -> Result<(), F::Error> {
        BlockingReadNorFlash::read(f, off, b)
    }
    pub(super) fn e<F: BlockingNorFlash>(f: &mut F, from: u32, to: u32) -> Result<(), F::Error> {
        BlockingNorFlash::erase(f, from, to)
    }

    pub(super) async fn async_roundtrip<F: AsyncMultiwriteNorFlash>(f: &mut F) -> Result<[u8; 8], F::Error> {
        f.erase(0, F::ERASE_SIZE as u32).await?;
        f.write(0, &[1, 2, 3, 4, 5, 6, 7, 8]).await?;
        let mut buf = [0; 8];
        f.read(0, &mut buf).await?;
        Ok(buf)
    }
}
