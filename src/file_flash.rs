//! A NOR flash emulated in a regular file (feature `std`).
//!
//! [`FileFlash`] lets the store run unchanged on Linux gateways and in host
//! tools (inspecting or preparing images dumped from a device): the file
//! holds the raw flash image, byte for byte, so it can be flashed to or read
//! from real hardware with the same geometry. The same alignment, bounds and
//! NOR programming rules as [`SimFlash`](crate::flash::SimFlash) are
//! enforced, so code that works on the file also works on a chip.
//!
//! One process per image: every constructor takes an exclusive advisory lock on the file
//! (`flock(LOCK_EX | LOCK_NB)` on Unix, `LockFileEx` on Windows, through
//! [`File::try_lock`]) before it reads or changes anything, and a second opener, in this
//! process or another, gets an [`io::Error`] of kind [`io::ErrorKind::ResourceBusy`] carrying
//! an [`ImageLocked`] instead of an image two writers would corrupt.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::vec;

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash as BlockingMultiwriteNorFlash, NorFlash as BlockingNorFlash, NorFlashError,
    NorFlashErrorKind, ReadNorFlash as BlockingReadNorFlash,
};
use embedded_storage_async::nor_flash::{
    MultiwriteNorFlash as AsyncMultiwriteNorFlash, NorFlash as AsyncNorFlash, ReadNorFlash as AsyncReadNorFlash,
};

use crate::flash::FlashStats;

/// Errors returned by [`FileFlash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileFlashError {
    /// The underlying file operation failed. Only the kind is kept so that
    /// the error stays `Copy + Eq` like the other flash errors.
    Io(io::ErrorKind),
    /// Offset or length is not a multiple of `READ` / `WRITE`, or an erase
    /// bound is not page aligned.
    NotAligned,
    /// The range does not lie within the image (or `from > to` for an erase).
    OutOfBounds,
    /// A write spans two erase pages (rejected, as many NOR controllers
    /// cannot program across a page boundary).
    CrossesPage,
    /// The write needed a 0 -> 1 bit transition. As on real NOR, the image
    /// now holds `old & new`; the error reports the bug.
    NotErased,
}

impl From<io::Error> for FileFlashError {
    fn from(e: io::Error) -> Self {
        Self::Io(e.kind())
    }
}

impl NorFlashError for FileFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::Io(_) | Self::CrossesPage | Self::NotErased => NorFlashErrorKind::Other,
        }
    }
}

impl fmt::Display for FileFlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(kind) => write!(f, "flash image file I/O error: {kind}"),
            Self::NotAligned => f.write_str("flash access is not aligned"),
            Self::OutOfBounds => f.write_str("flash access is out of bounds"),
            Self::CrossesPage => f.write_str("flash write crosses an erase page boundary"),
            Self::NotErased => f.write_str("flash write needs a 0 -> 1 bit transition (cells not erased)"),
        }
    }
}

impl std::error::Error for FileFlashError {}

/// The image is locked by another [`FileFlash`] (most likely another process running on the
/// same image): the error inside the [`io::Error`] of kind [`io::ErrorKind::ResourceBusy`]
/// that the constructors return. Nothing was read or written.
///
/// ```no_run
/// use mqtt_persist::file_flash::{FileFlash, ImageLocked};
/// match FileFlash::<4096, 4, 4>::open("device.img") {
///     Ok(flash) => { /* mount it */ }
///     Err(e) if ImageLocked::in_error(&e).is_some() => eprintln!("{e}: is the device already running?"),
///     Err(e) => eprintln!("cannot open the image: {e}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLocked {
    path: PathBuf,
}

impl ImageLocked {
    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The [`ImageLocked`] inside `e`, if that is why it failed.
    pub fn in_error(e: &io::Error) -> Option<&ImageLocked> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<ImageLocked>())
    }
}

impl fmt::Display for ImageLocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flash image {} is in use: another FileFlash (probably another process) holds its lock",
            self.path.display()
        )
    }
}

impl std::error::Error for ImageLocked {}

/// Takes the exclusive lock on `file`, or says who has it.
fn lock(file: &File, path: &Path) -> io::Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            ImageLocked {
                path: path.to_path_buf(),
            },
        )),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// A NOR flash backed by a file holding the raw image.
///
/// Geometry: erase pages of `PAGE` bytes, reads aligned to `READ`, writes
/// aligned to `WRITE`; the number of pages comes from the file size.
/// Invalid geometries are rejected at compile time by the constructors.
///
/// Rules are those of NOR flash: erase sets whole pages to `0xFF`, a write
/// stores `old & new` and reports [`FileFlashError::NotErased`] if a bit
/// would have to go from 0 to 1, writes may not cross a page boundary.
/// Rewriting a word without erase is allowed (the type implements
/// `MultiwriteNorFlash`); unlike [`SimFlash`](crate::flash::SimFlash) there
/// is no ECC mode and no power-cut simulation.
///
/// The image is locked exclusively (see the [module docs](self)) for as long as the value
/// lives; [`into_file`](Self::into_file) hands the lock over with the file.
///
/// Both the blocking and the async `embedded-storage` traits are
/// implemented. The async methods perform blocking file I/O and complete on
/// the first poll, which is fine for a store that owns its thread but will
/// stall other tasks of a single-threaded async runtime while they run.
///
/// Durability: with [`set_sync(true)`](Self::set_sync) (the default), every
/// write and erase is followed by `File::sync_data`, so an operation that
/// returned `Ok` survives an OS crash or power loss, which is what the
/// store's crash-safety reasoning assumes. This costs one disk flush per
/// operation (milliseconds on SD cards and eMMC, and wear on them); turn it
/// off for throughput in tests or tools and call [`sync`](Self::sync) when
/// needed.
#[derive(Debug)]
pub struct FileFlash<const PAGE: usize, const READ: usize, const WRITE: usize> {
    file: File,
    path: PathBuf,
    pages: usize,
    sync: bool,
    stats: FlashStats,
}

impl<const PAGE: usize, const READ: usize, const WRITE: usize> FileFlash<PAGE, READ, WRITE> {
    /// Compile-time geometry check, evaluated by every constructor.
    const GEOMETRY_OK: () = {
        assert!(PAGE >= 1, "PAGE must be at least 1");
        assert!(READ >= 1 && WRITE >= 1, "READ and WRITE must be at least 1");
        assert!(PAGE.is_multiple_of(WRITE), "PAGE must be a multiple of WRITE");
        assert!(PAGE.is_multiple_of(READ), "PAGE must be a multiple of READ");
    };

    /// Creates (or truncates) `path` as an image of `pages` erased pages
    /// (all `0xFF`). An existing image is truncated only once its lock is
    /// taken.
    ///
    /// # Errors
    /// `InvalidInput` if `pages` is 0 or the image would not be addressable
    /// with `u32` offsets; `ResourceBusy` with [`ImageLocked`] if another
    /// `FileFlash` holds the image (it is left as it was); any error from
    /// creating or writing the file.
    pub fn create(path: impl AsRef<Path>, pages: usize) -> io::Result<Self> {
        let () = Self::GEOMETRY_OK;
        let path = path.as_ref();
        Self::check_pages(pages)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        lock(&file, path)?;
        Self::init_new(file, path, pages)
    }

    /// Opens an existing image. Its length gives the number of pages.
    ///
    /// # Errors
    /// `ResourceBusy` with [`ImageLocked`] if another `FileFlash` holds the
    /// image; `InvalidData` if the file length is zero, not a multiple of
    /// `PAGE`, or too large for `u32` offsets; any error from opening the file.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let () = Self::GEOMETRY_OK;
        let path = path.as_ref();
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        lock(&file, path)?;
        let len = file.metadata()?.len();
        if len == 0 || !len.is_multiple_of(PAGE as u64) || len > u64::from(u32::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "flash image {}: length {len} is not a non-zero multiple of the \
                     {PAGE}-byte page size (at most {} bytes)",
                    path.display(),
                    u32::MAX
                ),
            ));
        }
        // Fits: len <= u32::MAX.
        let pages = (len / PAGE as u64) as usize;
        Ok(Self::from_parts(file, path, pages))
    }

    /// Opens `path` if it exists, else creates it with `pages` erased pages.
    ///
    /// # Errors
    /// `InvalidData` if an existing image does not have exactly `pages`
    /// pages (refusing to silently reuse an image of another geometry);
    /// otherwise as [`create`](Self::create) / [`open`](Self::open), including
    /// `ResourceBusy` with [`ImageLocked`].
    pub fn open_or_create(path: impl AsRef<Path>, pages: usize) -> io::Result<Self> {
        let () = Self::GEOMETRY_OK;
        let path = path.as_ref();
        Self::check_pages(pages)?;
        // `create_new` makes "does it exist?" and "create it" one atomic step.
        match OpenOptions::new().read(true).write(true).create_new(true).open(path) {
            Ok(file) => {
                lock(&file, path)?;
                Self::init_new(file, path, pages)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let flash = Self::open(path)?;
                if flash.pages != pages {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "flash image {}: has {} pages of {PAGE} bytes, expected {pages}",
                            path.display(),
                            flash.pages
                        ),
                    ));
                }
                Ok(flash)
            }
            Err(e) => Err(e),
        }
    }

    fn check_pages(pages: usize) -> io::Result<()> {
        let ok = pages > 0 && pages.checked_mul(PAGE).is_some_and(|c| c as u64 <= u64::from(u32::MAX));
        if ok {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "flash image of {pages} pages of {PAGE} bytes: must be non-empty and at most {} bytes",
                    u32::MAX
                ),
            ))
        }
    }

    fn init_new(mut file: File, path: &Path, pages: usize) -> io::Result<Self> {
        // `set_len` would zero-fill, but erased flash reads 0xFF.
        file.set_len(0)?;
        let page = vec![0xFF; PAGE];
        for _ in 0..pages {
            file.write_all(&page)?;
        }
        file.sync_all()?;
        Ok(Self::from_parts(file, path, pages))
    }

    fn from_parts(file: File, path: &Path, pages: usize) -> Self {
        Self {
            file,
            path: path.to_path_buf(),
            pages,
            sync: true,
            stats: FlashStats::default(),
        }
    }

    /// Number of erase pages in the image.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Path the image was opened or created with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives back the underlying file, with the image's lock: it is released
    /// when the file is closed (or by `File::unlock`).
    pub fn into_file(self) -> File {
        self.file
    }

    /// Whether every write/erase is followed by `sync_data` (default: true;
    /// see the type-level docs for the cost).
    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    /// Whether per-operation syncing is on.
    pub fn is_sync(&self) -> bool {
        self.sync
    }

    /// Flushes the image to the storage device now.
    ///
    /// # Errors
    /// Any error from `File::sync_data`.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Operation counters since opening or the last
    /// [`reset_stats`](Self::reset_stats). `rewrites` is not tracked and
    /// stays 0.
    pub fn stats(&self) -> FlashStats {
        self.stats
    }

    /// Resets the counters.
    pub fn reset_stats(&mut self) {
        self.stats = FlashStats::default();
    }

    fn capacity_bytes(&self) -> usize {
        self.pages * PAGE
    }

    /// Bounds first, then alignment, like
    /// `embedded_storage::nor_flash::check_slice`. Returns the end offset.
    fn check_slice(&self, offset: u32, len: usize, align: usize) -> Result<usize, FileFlashError> {
        let off = offset as usize;
        let end = off
            .checked_add(len)
            .filter(|&e| e <= self.capacity_bytes())
            .ok_or(FileFlashError::OutOfBounds)?;
        if !off.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(FileFlashError::NotAligned);
        }
        Ok(end)
    }

    fn read_at(&mut self, offset: usize, bytes: &mut [u8]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset as u64))?;
        self.file.read_exact(bytes)
    }

    fn write_at(&mut self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset as u64))?;
        self.file.write_all(bytes)
    }

    fn read_impl(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FileFlashError> {
        self.check_slice(offset, bytes.len(), READ)?;
        self.read_at(offset as usize, bytes)?;
        self.stats.reads += 1;
        self.stats.read_bytes += bytes.len() as u64;
        Ok(())
    }

    fn write_impl(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FileFlashError> {
        let off = offset as usize;
        let end = self.check_slice(offset, bytes.len(), WRITE)?;
        if bytes.is_empty() {
            return Ok(());
        }
        if off / PAGE != (end - 1) / PAGE {
            return Err(FileFlashError::CrossesPage);
        }
        // NOR programming can only clear bits: the result is old & new.
        let mut cells = vec![0u8; bytes.len()];
        self.read_at(off, &mut cells)?;
        let mut not_erased = false;
        for (cell, &b) in cells.iter_mut().zip(bytes) {
            not_erased |= b & !*cell != 0;
            *cell &= b;
        }
        self.write_at(off, &cells)?;
        if self.sync {
            self.file.sync_data()?;
        }
        self.stats.writes += 1;
        self.stats.write_bytes += bytes.len() as u64;
        if not_erased {
            return Err(FileFlashError::NotErased);
        }
        Ok(())
    }

    fn erase_impl(&mut self, from: u32, to: u32) -> Result<(), FileFlashError> {
        let (from, to) = (from as usize, to as usize);
        if from > to || to > self.capacity_bytes() {
            return Err(FileFlashError::OutOfBounds);
        }
        if !from.is_multiple_of(PAGE) || !to.is_multiple_of(PAGE) {
            return Err(FileFlashError::NotAligned);
        }
        if from == to {
            return Ok(());
        }
        let page = vec![0xFF; PAGE];
        self.file.seek(SeekFrom::Start(from as u64))?;
        for _ in (from..to).step_by(PAGE) {
            self.file.write_all(&page)?;
            self.stats.erases += 1;
        }
        if self.sync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

impl<const PAGE: usize, const READ: usize, const WRITE: usize> ErrorType for FileFlash<PAGE, READ, WRITE> {
    type Error = FileFlashError;
}

impl<const PAGE: usize, const READ: usize, const WRITE: usize> BlockingReadNorFlash for FileFlash<PAGE, READ, WRITE> {
    const READ_SIZE: usize = READ;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.read_impl(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.capacity_bytes()
    }
}

impl<const PAGE: usize, const READ: usize, const WRITE: usize> BlockingNorFlash for FileFlash<PAGE, READ, WRITE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.erase_impl(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.write_impl(offset, bytes)
    }
}

impl<const PAGE: usize, const READ: usize, const WRITE: usize> BlockingMultiwriteNorFlash
    for FileFlash<PAGE, READ, WRITE>
{
}

impl<const PAGE: usize, const READ: usize, const WRITE: usize> AsyncReadNorFlash for FileFlash<PAGE, READ, WRITE> {
    const READ_SIZE: usize = READ;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.read_impl(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.capacity_bytes()
    }
}

impl<const PAGE: usize, const READ: usize, const WRITE: usize> AsyncNorFlash for FileFlash<PAGE, READ, WRITE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = PAGE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.erase_impl(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.write_impl(offset, bytes)
    }
}

impl<const PAGE: usize, const READ: usize, const WRITE: usize> AsyncMultiwriteNorFlash
    for FileFlash<PAGE, READ, WRITE>
{
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::block_on;
    use std::sync::atomic::{AtomicU32, Ordering};

    type Ff = FileFlash<256, 1, 4>;

    /// A unique path in the temp dir, removed on drop (no tempfile crate).
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(name: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            Self(std::env::temp_dir().join(format!(
                "mqtt-persist-fileflash-{}-{nanos}-{n}-{name}.bin",
                std::process::id()
            )))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn w<F: BlockingNorFlash>(f: &mut F, off: u32, b: &[u8]) -> Result<(), F::Error> {
        BlockingNorFlash::write(f, off, b)
    }
    fn r<F: BlockingReadNorFlash>(f: &mut F, off: u32, b: &mut [u8]) -> Result<(), F::Error> {
        BlockingReadNorFlash::read(f, off, b)
    }
    fn e<F: BlockingNorFlash>(f: &mut F, from: u32, to: u32) -> Result<(), F::Error> {
        BlockingNorFlash::erase(f, from, to)
    }

    #[test]
    fn create_is_erased() {
        let p = TempPath::new("create");
        let mut f = Ff::create(&p.0, 4).unwrap();
        assert_eq!(f.pages(), 4);
        assert_eq!(BlockingReadNorFlash::capacity(&f), 1024);
        assert_eq!(f.path(), p.0.as_path());
        assert!(f.is_sync());
        let mut buf = [0u8; 1024];
        r(&mut f, 0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0xFF));
        let on_disk = std::fs::read(&p.0).unwrap();
        assert_eq!(on_disk, vec![0xFF; 1024]);
        // Truncates an existing file.
        w(&mut f, 0, &[0; 4]).unwrap();
        drop(f);
        let f = Ff::create(&p.0, 2).unwrap();
        assert_eq!(f.pages(), 2);
        assert_eq!(std::fs::read(&p.0).unwrap(), vec![0xFF; 512]);
        assert_eq!(Ff::create(&p.0, 0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn persistence_across_reopen() {
        let p = TempPath::new("persist");
        {
            let mut f = Ff::create(&p.0, 4).unwrap();
            w(&mut f, 256, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
            w(&mut f, 1020, &[9; 4]).unwrap();
            e(&mut f, 768, 1024).unwrap();
            w(&mut f, 768, &[0x42; 4]).unwrap();
        }
        let mut f = Ff::open(&p.0).unwrap();
        assert_eq!(f.pages(), 4);
        let mut buf = [0u8; 8];
        r(&mut f, 256, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8]);
        r(&mut f, 1016, &mut buf).unwrap();
        assert_eq!(buf, [0xFF; 8]);
        r(&mut f, 768, &mut buf[..4]).unwrap();
        assert_eq!(&buf[..4], &[0x42; 4]);
        drop(f);
        let mut g = Ff::open_or_create(&p.0, 4).unwrap();
        r(&mut g, 256, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8]);
        let file = g.into_file();
        assert_eq!(file.metadata().unwrap().len(), 1024);
    }

    #[test]
    fn open_checks_length() {
        let p = TempPath::new("badlen");
        std::fs::write(&p.0, [0xFFu8; 300]).unwrap();
        let err = Ff::open(&p.0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("300"), "{err}");
        std::fs::write(&p.0, []).unwrap();
        assert_eq!(Ff::open(&p.0).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let missing = TempPath::new("missing");
        assert_eq!(Ff::open(&missing.0).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn open_or_create_checks_pages() {
        let p = TempPath::new("ooc");
        let f = Ff::open_or_create(&p.0, 3).unwrap();
        assert_eq!(f.pages(), 3);
        assert_eq!(std::fs::read(&p.0).unwrap(), vec![0xFF; 768]);
        drop(f);
        let err = Ff::open_or_create(&p.0, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("expected 4"), "{err}");
        assert_eq!(Ff::open_or_create(&p.0, 3).unwrap().pages(), 3);
    }

    #[test]
    fn nor_rules_and_alignment() {
        let p = TempPath::new("rules");
        let mut f = FileFlash::<256, 2, 8>::create(&p.0, 4).unwrap();
        f.set_sync(false);
        assert!(!f.is_sync());
        assert_eq!(w(&mut f, 4, &[0; 8]), Err(FileFlashError::NotAligned));
        assert_eq!(w(&mut f, 8, &[0; 4]), Err(FileFlashError::NotAligned));
        assert_eq!(w(&mut f, 1024, &[0; 8]), Err(FileFlashError::OutOfBounds));
        assert_eq!(w(&mut f, 248, &[0; 16]), Err(FileFlashError::CrossesPage));
        assert_eq!(r(&mut f, 1, &mut [0; 2]), Err(FileFlashError::NotAligned));
        assert_eq!(r(&mut f, 1023, &mut [0; 2]), Err(FileFlashError::OutOfBounds));
        assert_eq!(e(&mut f, 0, 100), Err(FileFlashError::NotAligned));
        assert_eq!(e(&mut f, 512, 256), Err(FileFlashError::OutOfBounds));
        assert_eq!(e(&mut f, 0, 1280), Err(FileFlashError::OutOfBounds));
        assert_eq!(f.stats(), FlashStats::default());

        w(&mut f, 0, &[0x0F; 8]).unwrap();
        assert_eq!(w(&mut f, 0, &[0xF0; 8]), Err(FileFlashError::NotErased));
        let mut buf = [0u8; 8];
        r(&mut f, 0, &mut buf).unwrap();
        assert_eq!(buf, [0; 8], "result is the AND");
        // Clearing more bits of a written word is allowed (multiwrite).
        w(&mut f, 8, &[0xF0; 8]).unwrap();
        w(&mut f, 8, &[0x30; 8]).unwrap();
        r(&mut f, 8, &mut buf).unwrap();
        assert_eq!(buf, [0x30; 8]);
        e(&mut f, 0, 512).unwrap();
        r(&mut f, 0, &mut buf).unwrap();
        assert_eq!(buf, [0xFF; 8]);
        w(&mut f, 0, &[0xF0; 8]).unwrap();
        f.sync().unwrap();

        assert_eq!(
            f.stats(),
            FlashStats {
                reads: 3,
                read_bytes: 24,
                writes: 5,
                write_bytes: 40,
                erases: 2,
                rewrites: 0,
            }
        );
        f.reset_stats();
        assert_eq!(f.stats(), FlashStats::default());
    }

    #[test]
    fn async_impls() {
        let p = TempPath::new("async");
        let mut f = Ff::create(&p.0, 2).unwrap();
        block_on(async {
            AsyncNorFlash::write(&mut f, 260, &[7; 4]).await.unwrap();
            let mut buf = [0u8; 4];
            AsyncReadNorFlash::read(&mut f, 260, &mut buf).await.unwrap();
            assert_eq!(buf, [7; 4]);
            AsyncNorFlash::erase(&mut f, 256, 512).await.unwrap();
            AsyncReadNorFlash::read(&mut f, 260, &mut buf).await.unwrap();
            assert_eq!(buf, [0xFF; 4]);
            assert_eq!(
                AsyncNorFlash::write(&mut f, 2, &[0; 4]).await,
                Err(FileFlashError::NotAligned)
            );
        });
        assert_eq!(<Ff as AsyncNorFlash>::ERASE_SIZE, 256);
        assert_eq!(AsyncReadNorFlash::capacity(&f), 512);
    }

    #[test]
    fn error_mapping() {
        use std::string::ToString;
        assert_eq!(FileFlashError::NotAligned.kind(), NorFlashErrorKind::NotAligned);
        assert_eq!(FileFlashError::OutOfBounds.kind(), NorFlashErrorKind::OutOfBounds);
        assert_eq!(FileFlashError::NotErased.kind(), NorFlashErrorKind::Other);
        let io_err = FileFlashError::from(io::Error::from(io::ErrorKind::UnexpectedEof));
        assert_eq!(io_err, FileFlashError::Io(io::ErrorKind::UnexpectedEof));
        assert_eq!(io_err.kind(), NorFlashErrorKind::Other);
        assert!(io_err.to_string().contains("I/O"));
        let _: &dyn std::error::Error = &io_err;
    }

    #[test]
    fn truncated_file_reports_io_error() {
        let p = TempPath::new("trunc");
        let mut f = Ff::create(&p.0, 2).unwrap();
        // Someone shrinks the image behind our back.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p.0)
            .unwrap()
            .set_len(100)
            .unwrap();
        assert_eq!(
            r(&mut f, 256, &mut [0; 4]),
            Err(FileFlashError::Io(io::ErrorKind::UnexpectedEof))
        );
    }
}
