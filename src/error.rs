//! The one error type of the crate.

use core::fmt;

/// Everything a store operation can fail with, generic over the flash driver's error `E`.
///
/// Paho's contract holds for every variant: an operation that returns an error has left the
/// store as it was (the one exception is [`Error::Flash`] from a failing medium, where the log
/// stays consistent but the failed write may or may not have reached the flash, exactly as after
/// a power cut).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error<E> {
    /// The flash driver failed.
    Flash(E),
    /// Data read from flash failed its CRC or is structurally impossible. Nothing was changed.
    Corrupted,
    /// There is no room for this record even after compaction. Remove keys, then retry.
    Full,
    /// The key is not in the store.
    NotFound,
    /// The caller's buffer is too small; `needed` bytes are required. Nothing was changed.
    BufferTooSmall {
        /// The size the buffer must have.
        needed: usize,
    },
    /// The value is larger than the store accepts (see [`crate::Config::max_value_len`]).
    TooLarge {
        /// The largest value length accepted.
        max: usize,
    },
    /// A `before_write` or `after_read` hook refused the data (for example an AEAD tag did not
    /// verify). Nothing was changed.
    TransformFailed,
    /// The call needs an open store: call `open` first.
    NotOpen,
    /// `open` was called on a store that is already open with another identity.
    AlreadyOpen,
    /// The flash holds a store written by an unknown format version. The image was not changed.
    UnsupportedVersion {
        /// The version byte found in a page header.
        found: u8,
    },
    /// The flash geometry or the configuration cannot hold this store; the reason names the
    /// rule that was broken (see [`GeometryError`]). Nothing was read or written.
    BadGeometry(GeometryError),
    /// The format's page sequence numbers are used up (2^32 page openings, far beyond any
    /// flash's endurance: only a crafted image gets here). Nothing was changed.
    Exhausted,
    /// An internal invariant did not hold; this would otherwise have been a panic. Please
    /// report it with a flash image.
    LogicBug,
    /// The [`crate::KeyCursor`] is no longer tracked: compaction moved records since it was
    /// handed out, and more than [`crate::KEY_CURSORS`] other cursors were used since. Nothing
    /// was changed; start again from `KeyCursor::default()`.
    CursorExpired,
    /// The namespace is the store's identity registry (or an identity hashes to it, a 2^-64
    /// chance): it cannot be opened, adopted or discarded as a client's. Nothing was changed.
    ReservedNamespace,
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Flash(e) => write!(f, "flash error: {e:?}"),
            Error::Corrupted => f.write_str("flash data is corrupted (CRC or structure check failed)"),
            Error::Full => f.write_str("store is full"),
            Error::NotFound => f.write_str("key not found"),
            Error::BufferTooSmall { needed } => write!(f, "buffer too small: {needed} bytes needed"),
            Error::TooLarge { max } => write!(f, "value too large: at most {max} bytes"),
            Error::TransformFailed => f.write_str("a transform hook refused the data"),
            Error::NotOpen => f.write_str("store is not open"),
            Error::AlreadyOpen => f.write_str("store is already open with another client"),
            Error::UnsupportedVersion { found } => write!(f, "unsupported on-flash format version {found}"),
            Error::BadGeometry(g) => write!(f, "flash geometry not supported: {g}"),
            Error::Exhausted => f.write_str("page sequence numbers exhausted"),
            Error::LogicBug => f.write_str("internal invariant violated (bug)"),
            Error::CursorExpired => f.write_str("key cursor expired: start the listing again"),
            Error::ReservedNamespace => {
                f.write_str("the namespace is the store's identity registry: use another client id or server URI")
            }
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// Which rule of the accepted geometry (README "Geometry", docs/DESIGN.md section 2) a
/// refused mount breaks.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum GeometryError {
    /// `READ_SIZE` must be a power of two of at most 32 bytes.
    ReadSize {
        /// The flash's `READ_SIZE`.
        read_size: usize,
    },
    /// `WRITE_SIZE` must be a power of two of at most 32 bytes.
    WriteSize {
        /// The flash's `WRITE_SIZE`.
        write_size: usize,
    },
    /// The erase page (`ERASE_SIZE`) must be a multiple of 32 bytes from 256 bytes to 128 KiB.
    PageSize {
        /// The flash's `ERASE_SIZE`.
        page_size: usize,
    },
    /// The store's `PAGES` must be from 4 to 4096.
    PageCount {
        /// The `PAGES` of the store type.
        pages: usize,
    },
    /// The flash's capacity must be exactly `PAGES * ERASE_SIZE` (mount a partition of the
    /// right size).
    Capacity {
        /// `NorFlash::capacity()` of the flash.
        flash_bytes: usize,
        /// `PAGES * ERASE_SIZE`.
        expected: usize,
        /// The flash's `ERASE_SIZE`, to name the `PAGES` that would fit.
        page_size: usize,
    },
    /// `Config::max_value_len` must not exceed `Store::max_value_limit()` for this geometry:
    /// an empty store must be able to take one value of that size with every reserve kept.
    ValueTooLarge {
        /// The configured `max_value_len`.
        max_value_len: usize,
        /// The largest value this geometry supports.
        limit: usize,
    },
    /// The reserves the store keeps for compaction leave no room for data on this geometry
    /// (pages too small for the write size, or too few pages).
    NoRoom,
}

/// Each message names the rule and the fix.
impl fmt::Display for GeometryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GeometryError::ReadSize { read_size } => write!(
                f,
                "READ_SIZE {read_size} is not a power of two of at most 32: wrap the flash in a \
                 driver that reads in such units"
            ),
            GeometryError::WriteSize { write_size } => write!(
                f,
                "WRITE_SIZE {write_size} is not a power of two of at most 32: wrap the flash in a \
                 driver that programs in such units"
            ),
            GeometryError::PageSize { page_size } => write!(
                f,
                "page size (ERASE_SIZE) {page_size} is not a multiple of 32 from 256 to 131072: \
                 use a flash driver whose erase unit is in that range"
            ),
            GeometryError::PageCount { pages } => write!(
                f,
                "Store<_, {pages}>: PAGES must be from 4 to 4096; pick PAGES = the number of \
                 erase pages of the flash (or of the partition) it mounts"
            ),
            GeometryError::Capacity {
                flash_bytes,
                expected,
                page_size,
            } => {
                write!(
                    f,
                    "flash capacity {flash_bytes} B is not PAGES * page size = {expected} B: "
                )?;
                if page_size > 0 && flash_bytes % page_size == 0 && flash_bytes / page_size >= 4 {
                    write!(f, "use Store<_, {}> for this flash, ", flash_bytes / page_size)?;
                }
                write!(f, "or mount a partition of exactly {expected} B")
            }
            GeometryError::ValueTooLarge { max_value_len, limit } => write!(
                f,
                "Config::max_value_len {max_value_len} exceeds this geometry's limit {limit}: use \
                 Config::new({limit}) or less (Store::max_value_limit()), or larger or more pages"
            ),
            GeometryError::NoRoom => f.write_str(
                "the compaction reserves leave no room for data: use more pages, larger pages or \
                 a smaller WRITE_SIZE",
            ),
        }
    }
}

impl<E> From<E> for Error<E> {
    fn from(e: E) -> Self {
        Error::Flash(e)
    }
}
