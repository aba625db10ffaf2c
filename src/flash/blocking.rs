//! [`BlockingFlash`]: runs a blocking NOR flash driver behind the async
//! traits the store is written against.

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash as BlockingMultiwriteNorFlash, NorFlash as BlockingNorFlash,
    ReadNorFlash as BlockingReadNorFlash,
};
use embedded_storage_async::nor_flash::{
    MultiwriteNorFlash as AsyncMultiwriteNorFlash, NorFlash as AsyncNorFlash, ReadNorFlash as AsyncReadNorFlash,
};

#[cfg(doc)]
use super::{SimFlash, block_on};

/// Adapts a blocking [`embedded_storage::nor_flash::NorFlash`] into an
/// [`embedded_storage_async::nor_flash::NorFlash`].
///
/// The returned futures complete on their first poll (they never return
/// `Pending`), so they can be driven by any executor or by [`block_on`].
/// The async `MultiwriteNorFlash` marker is implemented when the inner flash
/// implements the blocking one. The blocking traits are forwarded too, so the
/// wrapper can be handed to blocking code as well.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockingFlash<F>(pub F);

impl<F> BlockingFlash<F> {
    /// Wraps `flash`.
    pub const fn new(flash: F) -> Self {
        Self(flash)
    }

    /// Returns the wrapped flash.
    pub fn into_inner(self) -> F {
        self.0
    }

    /// Shared access to the wrapped flash.
    pub fn inner(&self) -> &F {
        &self.0
    }

    /// Exclusive access to the wrapped flash (e.g. to arm a power cut on a
    /// [`SimFlash`]).
    pub fn inner_mut(&mut self) -> &mut F {
        &mut self.0
    }
}

impl<F: ErrorType> ErrorType for BlockingFlash<F> {
    type Error = F::Error;
}

impl<F: BlockingReadNorFlash> AsyncReadNorFlash for BlockingFlash<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: BlockingNorFlash> AsyncNorFlash for BlockingFlash<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}

impl<F: BlockingMultiwriteNorFlash> AsyncMultiwriteNorFlash for BlockingFlash<F> {}

impl<F: BlockingReadNorFlash> BlockingReadNorFlash for BlockingFlash<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: BlockingNorFlash> BlockingNorFlash for BlockingFlash<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}

impl<F: BlockingMultiwriteNorFlash> BlockingMultiwriteNorFlash for BlockingFlash<F> {}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;

    #[test]
    fn blocking_flash_adapter() {
        let mut bf = BlockingFlash::new(Small::new());
        assert_eq!(block_on(async_roundtrip(&mut bf)), Ok([1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(<BlockingFlash<Small> as AsyncNorFlash>::ERASE_SIZE, 256);
        assert_eq!(<BlockingFlash<Small> as AsyncReadNorFlash>::READ_SIZE, 1);
        assert_eq!(AsyncReadNorFlash::capacity(&bf), 1024);
        bf.inner_mut().cut_power();
        assert!(!bf.inner().is_powered());
        assert_eq!(
            block_on(AsyncNorFlash::write(&mut bf, 0, &[0; 4])),
            Err(SimFlashError::PowerCut)
        );
        // Blocking traits are forwarded too.
        bf.inner_mut().restore_power();
        let mut buf = [0u8; 2];
        r(&mut bf, 0, &mut buf).unwrap();
        assert_eq!(buf, [1, 2]);
        let f = bf.into_inner();
        assert_eq!(f.stats().erases, 1);
    }
}
