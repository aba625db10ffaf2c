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
    /// The flash geometry cannot hold this store (page size, alignment or page count).
    BadGeometry,
    /// The format's page sequence numbers are used up (2^32 page openings, far beyond any
    /// flash's endurance: only a crafted image gets here). Nothing was changed.
    Exhausted,
    /// An internal invariant did not hold; this would otherwise have been a panic. Please
    /// report it with a flash image.
    LogicBug,
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
            Error::BadGeometry => f.write_str("flash geometry not supported"),
            Error::Exhausted => f.write_str("page sequence numbers exhausted"),
            Error::LogicBug => f.write_str("internal invariant violated (bug)"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

impl<E> From<E> for Error<E> {
    fn from(e: E) -> Self {
        Error::Flash(e)
    }
}
