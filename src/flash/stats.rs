//! Operation counters: the global [`FlashStats`] and the per-page counters
//! of [`SimFlash`], used to measure write amplification and wear.

use super::SimFlash;
#[cfg(doc)]
use super::SimFlashError;

/// Operation counters kept by the flash simulators ([`SimFlash`] and, with
/// the `std` feature, `FileFlash`).
///
/// Only operations that passed argument validation (alignment, bounds, power)
/// are counted, so the numbers reflect what actually reached the flash array.
/// A read that fails with [`SimFlashError::Unreadable`] delivers no data and
/// is not counted either.
/// They are used to measure write amplification and wear in tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlashStats {
    /// Number of read calls.
    pub reads: u64,
    /// Total number of bytes read.
    pub read_bytes: u64,
    /// Number of write (program) calls, including ones torn by a power cut.
    pub writes: u64,
    /// Total number of bytes programmed (for a torn write: the bytes that
    /// were at least partially programmed).
    pub write_bytes: u64,
    /// Number of *pages* erased (an erase call spanning three pages adds
    /// three), including a page whose erase was torn by a power cut. Counting
    /// pages rather than calls is what matters for wear.
    pub erases: u64,
    /// Number of `WRITE`-sized words programmed again without an erase in
    /// between. Allowed on plain NOR flash (the result is the AND), forbidden
    /// on ECC flash; a non-zero value tells that the code under test would not
    /// run on ECC parts. Only tracked by [`SimFlash`].
    pub rewrites: u64,
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> SimFlash<PAGE, PAGES, READ, WRITE> {
    /// Number of mutating operations (write calls + erase calls, including
    /// a torn one) since creation or the last [`reset_stats`](Self::reset_stats).
    pub fn ops(&self) -> u64 {
        self.st.ops
    }

    /// Global operation counters.
    pub fn stats(&self) -> FlashStats {
        self.st.stats
    }

    /// Resets [`stats`](Self::stats), [`ops`](Self::ops) and the per-page
    /// counters. Leaves the array, the modes and the power state alone.
    pub fn reset_stats(&mut self) {
        self.st.stats = FlashStats::default();
        self.st.ops = 0;
        self.page_erases = [0; PAGES];
        self.page_write_bytes = [0; PAGES];
        self.page_read_bytes = [0; PAGES];
    }

    /// Number of times page `page` was erased (including a torn erase).
    ///
    /// # Panics
    /// If `page >= PAGES`.
    pub fn page_erases(&self, page: usize) -> u64 {
        self.page_erases[page]
    }

    /// Number of bytes programmed in page `page`.
    ///
    /// # Panics
    /// If `page >= PAGES`.
    pub fn page_write_bytes(&self, page: usize) -> u64 {
        self.page_write_bytes[page]
    }

    /// Number of bytes read from page `page`.
    ///
    /// # Panics
    /// If `page >= PAGES`.
    pub fn page_read_bytes(&self, page: usize) -> u64 {
        self.page_read_bytes[page]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn erase_counts() {
        let mut f = Small::new();
        w(&mut f, 0, &[0; 8]).unwrap();
        w(&mut f, 300, &[0; 8]).unwrap();
        e(&mut f, 0, 512).unwrap();
        e(&mut f, 256, 512).unwrap();
        e(&mut f, 768, 1024).unwrap();
        assert!(f.as_bytes().iter().all(|&b| b == 0xFF));
        assert_eq!([0, 1, 2, 3].map(|p| f.page_erases(p)), [1, 2, 0, 1]);
        assert_eq!(f.stats().erases, 4);
        assert_eq!(f.ops(), 5);
    }

    #[test]
    fn stats_and_reset() {
        let mut f = Small::new();
        let mut buf = [0u8; 16];
        r(&mut f, 248, &mut buf).unwrap();
        r(&mut f, 0, &mut buf[..4]).unwrap();
        w(&mut f, 256, &[1; 12]).unwrap();
        w(&mut f, 512, &[]).unwrap();
        e(&mut f, 768, 1024).unwrap();
        assert_eq!(
            f.stats(),
            FlashStats {
                reads: 2,
                read_bytes: 20,
                writes: 2,
                write_bytes: 12,
                erases: 1,
                rewrites: 0,
            }
        );
        assert_eq!(f.page_read_bytes(0), 12);
        assert_eq!(f.page_read_bytes(1), 8);
        assert_eq!(f.page_write_bytes(1), 12);
        assert_eq!(f.page_write_bytes(2), 0);
        assert_eq!(f.ops(), 3);
        f.reset_stats();
        assert_eq!(f.stats(), FlashStats::default());
        assert_eq!(f.ops(), 0);
        assert_eq!(f.page_read_bytes(0), 0);
        assert_eq!(f.page_erases(3), 0);
        // The image is kept.
        assert_eq!(&f.as_bytes()[256..268], &[1; 12]);
    }
}
