//! The error type of the simulated flash and its mapping to
//! `embedded-storage` error kinds.

use core::fmt;

use embedded_storage::nor_flash::{NorFlashError, NorFlashErrorKind};

#[cfg(doc)]
use super::SimFlash;

/// Errors returned by [`SimFlash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SimFlashError {
    /// Offset or length is not a multiple of `READ` / `WRITE`, or an erase
    /// bound is not page aligned.
    NotAligned,
    /// The range does not lie within the flash (or `from > to` for an erase).
    OutOfBounds,
    /// A write spans two erase pages. Many NOR controllers cannot program
    /// across a page (row) boundary, so the simulator rejects it to catch
    /// code that would misbehave on such parts.
    CrossesPage,
    /// The write needed to turn a 0 bit into a 1, which only an erase can do.
    /// Like real NOR, the cells were still programmed (they now hold
    /// `old & new`); the error is reported so that bugs are not hidden.
    /// Only reported in strict mode (see [`SimFlash::set_strict`]).
    NotErased,
    /// ECC mode only: a `WRITE`-sized word was programmed twice without an
    /// erase in between. Nothing was changed.
    WordRewritten,
    /// Power failed during this operation, or has failed before and
    /// [`SimFlash::restore_power`] has not been called yet.
    PowerCut,
    /// The read range overlaps a word whose ECC is inconsistent because a
    /// program or erase of it was interrupted by power loss (see
    /// [`SimFlash::set_torn_unreadable`]). Such a word cannot be read until
    /// its page is erased; STM32L4/H7 HALs report this as a double-bit ECC
    /// error. The read returns no data.
    Unreadable,
}

impl NorFlashError for SimFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::CrossesPage | Self::NotErased | Self::WordRewritten | Self::PowerCut | Self::Unreadable => {
                NorFlashErrorKind::Other
            }
        }
    }
}

impl fmt::Display for SimFlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAligned => "flash access is not aligned",
            Self::OutOfBounds => "flash access is out of bounds",
            Self::CrossesPage => "flash write crosses an erase page boundary",
            Self::NotErased => "flash write needs a 0 -> 1 bit transition (cells not erased)",
            Self::WordRewritten => "flash word written twice without erase (ECC flash)",
            Self::PowerCut => "simulated power cut",
            Self::Unreadable => "flash word unreadable (ECC error after an interrupted program or erase)",
        })
    }
}

impl core::error::Error for SimFlashError {}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn error_display() {
        use std::string::ToString;
        assert_eq!(SimFlashError::PowerCut.to_string(), "simulated power cut");
        let e: &dyn core::error::Error = &SimFlashError::NotErased;
        assert!(e.to_string().contains("0 -> 1"));
    }

    #[test]
    fn unreadable_error_kind_and_display() {
        use std::string::ToString;
        assert_eq!(SimFlashError::Unreadable.kind(), NorFlashErrorKind::Other);
        assert_eq!(
            SimFlashError::Unreadable.to_string(),
            "flash word unreadable (ECC error after an interrupted program or erase)"
        );
    }
}
