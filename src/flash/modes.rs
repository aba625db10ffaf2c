//! The checking modes of [`SimFlash`]: ECC mode (each word programmed at
//! most once per erase) and strict mode (report 0 -> 1 transitions).

use super::SimFlash;
#[cfg(doc)]
use super::SimFlashError;

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> SimFlash<PAGE, PAGES, READ, WRITE> {
    /// Enables or disables ECC mode (see the type-level docs). Does not
    /// forget which words were written, so it can be toggled at any time.
    pub fn set_ecc(&mut self, ecc: bool) {
        self.st.ecc = ecc;
    }

    /// Whether ECC mode is on.
    pub fn is_ecc(&self) -> bool {
        self.st.ecc
    }

    /// Enables or disables strict mode (default: on). In strict mode a write
    /// that needs a 0 -> 1 transition reports [`SimFlashError::NotErased`];
    /// otherwise it silently stores `old & new` like the hardware does.
    pub fn set_strict(&mut self, strict: bool) {
        self.st.strict = strict;
    }

    /// Whether strict mode is on.
    pub fn is_strict(&self) -> bool {
        self.st.strict
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;

    #[test]
    fn zero_to_one_rejected() {
        let mut f = Small::new();
        w(&mut f, 0, &[0x0F; 4]).unwrap();
        assert_eq!(w(&mut f, 0, &[0xF0; 4]), Err(SimFlashError::NotErased));
        // Real NOR semantics: the result is the AND.
        assert_eq!(&f.as_bytes()[..4], &[0x00; 4]);
        // Clearing more bits is fine (non-ECC), and counted as rewrite.
        w(&mut f, 4, &[0xF0; 4]).unwrap();
        w(&mut f, 4, &[0x30; 4]).unwrap();
        assert_eq!(&f.as_bytes()[4..8], &[0x30; 4]);
        assert_eq!(f.stats().rewrites, 2);

        f.set_strict(false);
        w(&mut f, 8, &[0x0F; 4]).unwrap();
        assert_eq!(w(&mut f, 8, &[0xFF, 0xF1, 0x01, 0x00]), Ok(()));
        assert_eq!(&f.as_bytes()[8..12], &[0x0F, 0x01, 0x01, 0x00]);
    }

    #[test]
    fn ecc_rejects_rewrite() {
        let mut f = SimFlash::<256, 4, 1, 8>::new_ecc();
        w(&mut f, 8, &[0xAA; 8]).unwrap();
        // Same data, subset data, or a range overlapping the word: all rejected.
        assert_eq!(w(&mut f, 8, &[0xAA; 8]), Err(SimFlashError::WordRewritten));
        assert_eq!(w(&mut f, 0, &[0x00; 16]), Err(SimFlashError::WordRewritten));
        assert_eq!(&f.as_bytes()[..8], &[0xFF; 8]);
        assert_eq!(&f.as_bytes()[8..16], &[0xAA; 8]);
        assert_eq!(f.ops(), 1);
        assert_eq!(f.stats().rewrites, 0);
        // Writing all-0xFF still programs the word (and its ECC).
        w(&mut f, 16, &[0xFF; 8]).unwrap();
        assert_eq!(w(&mut f, 16, &[0x00; 8]), Err(SimFlashError::WordRewritten));
        // After an erase the word may be written again.
        e(&mut f, 0, 256).unwrap();
        w(&mut f, 8, &[0x55; 8]).unwrap();
        assert_eq!(&f.as_bytes()[8..16], &[0x55; 8]);

        // Switching ECC off allows the rewrite and counts it.
        f.set_ecc(false);
        w(&mut f, 8, &[0x11; 8]).unwrap();
        assert_eq!(f.stats().rewrites, 1);
        assert_eq!(&f.as_bytes()[8..16], &[0x11; 8]);
    }
}
