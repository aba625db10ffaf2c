//! The `embedded-storage` (blocking) and `embedded-storage-async` trait
//! implementations of [`SimFlash`], both forwarding to the same operations.

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash as BlockingMultiwriteNorFlash, NorFlash as BlockingNorFlash,
    ReadNorFlash as BlockingReadNorFlash,
};
use embedded_storage_async::nor_flash::{
    MultiwriteNorFlash as AsyncMultiwriteNorFlash, NorFlash as AsyncNorFlash, ReadNorFlash as AsyncReadNorFlash,
};

use super::{SimFlash, SimFlashError};

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> ErrorType
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
    type Error = SimFlashError;
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> BlockingReadNorFlash
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
    const READ_SIZE: usize = READ;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.read_impl(offset, bytes)
    }

    fn capacity(&self) -> usize {
        Self::CAPACITY
    }
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> BlockingNorFlash
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.erase_impl(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.write_impl(offset, bytes)
    }
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> BlockingMultiwriteNorFlash
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> AsyncReadNorFlash
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
    const READ_SIZE: usize = READ;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.read_impl(offset, bytes)
    }

    fn capacity(&self) -> usize {
        Self::CAPACITY
    }
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> AsyncNorFlash
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = PAGE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.erase_impl(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.write_impl(offset, bytes)
    }
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> AsyncMultiwriteNorFlash
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;

    #[test]
    fn async_impls() {
        let mut f = Small::new();
        assert_eq!(block_on(async_roundtrip(&mut f)), Ok([1, 2, 3, 4, 5, 6, 7, 8]));
        // Errors go through the async path too.
        let mut buf = [0u8; 4];
        assert_eq!(
            block_on(AsyncReadNorFlash::read(&mut f, 1024, &mut buf)),
            Err(SimFlashError::OutOfBounds)
        );
        f.cut_power_at_op(Some(0));
        assert_eq!(
            block_on(AsyncNorFlash::erase(&mut f, 0, 256)),
            Err(SimFlashError::PowerCut)
        );
    }
}
