//! Stand-ins for a board's HAL, so the example builds: a memory-mapped NOR flash, a TCP stack
//! that has no link, a millisecond counter register. Replace each with the real driver.
//! examples/minimq_device includes this file too (`#[path]`).

use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll};

use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use embedded_storage_async::nor_flash::{
    ErrorType as FlashErrorType, MultiwriteNorFlash, NorFlash, NorFlashErrorKind, ReadNorFlash,
};

/// Erase page of the partition.
const PAGE: usize = 4096;
/// Where the partition is memory-mapped (e.g. an external QSPI NOR in memory-mapped mode).
const FLASH_BASE: usize = 0x9000_0000;
/// A free-running millisecond counter (e.g. a timer's count register).
const MILLIS: usize = 0x4000_0024;

/// A NOR flash partition of `super::PAGES` pages of 4 KiB. A real driver sends the program and
/// erase commands and waits for completion; this one writes the mapped memory.
pub struct Flash;

#[derive(Debug)]
pub struct FlashError;

impl embedded_storage_async::nor_flash::NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}

impl FlashErrorType for Flash {
    type Error = FlashError;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = 1;
    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        for (i, b) in bytes.iter_mut().enumerate() {
            // Safety: the partition is memory-mapped on the imagined board.
            *b = unsafe { core::ptr::read_volatile((FLASH_BASE + offset as usize + i) as *const u8) };
        }
        Ok(())
    }
    fn capacity(&self) -> usize {
        PAGE * super::PAGES
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        for a in from..to {
            // Safety: as for `read`.
            unsafe { core::ptr::write_volatile((FLASH_BASE + a as usize) as *mut u8, 0xFF) };
        }
        Ok(())
    }
    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        for (i, b) in bytes.iter().enumerate() {
            // Safety: as for `read`.
            unsafe { core::ptr::write_volatile((FLASH_BASE + offset as usize + i) as *mut u8, *b) };
        }
        Ok(())
    }
}

/// NOR flash clears bits only, so a word may be written again (the store relies on it).
impl MultiwriteNorFlash for Flash {}

/// The TCP stack (with embassy-net: `embassy_net::tcp::client::TcpClient`, which implements
/// `TcpConnect`). This one never connects; the driver keeps retrying with back-off.
pub struct Network;

/// A TCP connection.
pub struct Socket;

impl ErrorType for Socket {
    type Error = ErrorKind;
}

impl Read for Socket {
    async fn read(&mut self, _buf: &mut [u8]) -> Result<usize, ErrorKind> {
        Err(ErrorKind::NotConnected)
    }
}

impl Write for Socket {
    async fn write(&mut self, _buf: &[u8]) -> Result<usize, ErrorKind> {
        Err(ErrorKind::NotConnected)
    }
    async fn flush(&mut self) -> Result<(), ErrorKind> {
        Err(ErrorKind::NotConnected)
    }
}

impl embedded_nal_async::TcpConnect for Network {
    type Error = ErrorKind;
    type Connection<'a> = Socket;
    async fn connect(&self, _remote: SocketAddr) -> Result<Socket, ErrorKind> {
        Err(ErrorKind::ConnectionRefused)
    }
}

/// Milliseconds since boot.
pub fn now_ms() -> u64 {
    // Safety: the counter register is readable on the imagined board.
    u64::from(unsafe { core::ptr::read_volatile(MILLIS as *const u32) })
}

/// Resolves `ms` milliseconds from now (with embassy-time: `Timer::after_millis`).
pub fn after_ms(ms: u64) -> impl Future<Output = ()> {
    let due = now_ms() + ms;
    Until(due)
}

struct Until(u64);

impl Future for Until {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if now_ms() >= self.0 {
            Poll::Ready(())
        } else {
            // No timer interrupt here: ask to be polled again.
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

pub fn read_sensor() -> u32 {
    // Safety: as for `now_ms`.
    unsafe { core::ptr::read_volatile((MILLIS + 4) as *const u32) }
}

pub fn led(_on: bool) {}

pub fn report_flash_error() {}

pub fn halt() -> ! {
    loop {
        core::hint::spin_loop();
    }
}
