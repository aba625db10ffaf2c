//! Direct access to the image of a [`SimFlash`]: reading it without
//! counting, corrupting it, and loading a whole dump.

use super::SimFlash;
use super::sim::{WORD_ERASED, WORD_WRITTEN};

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> SimFlash<PAGE, PAGES, READ, WRITE> {
    /// The content of page `page`, without counting it as a read.
    ///
    /// # Panics
    /// If `page >= PAGES`.
    pub fn page(&self, page: usize) -> &[u8; PAGE] {
        &self.data[page]
    }

    /// The whole image, flattened (`CAPACITY` bytes), without counting it as
    /// a read and regardless of the power state.
    pub fn as_bytes(&self) -> &[u8] {
        self.data.as_flattened()
    }

    /// Mutable access to the whole image, to simulate corruption (bit rot,
    /// a foreign writer). Bypasses every NOR rule and counter, and does not
    /// update the word states (written since erase, unreadable).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.data.as_flattened_mut()
    }

    /// Replaces the whole image, e.g. with a dump from a device or a
    /// snapshot taken with [`as_bytes`](Self::as_bytes). A word counts as
    /// written since erase if any of its bytes is not `0xFF`; every word is
    /// readable afterwards (no unreadable words). Counters, modes and power
    /// state are unchanged.
    ///
    /// # Panics
    /// If `image.len() != CAPACITY`.
    pub fn load_image(&mut self, image: &[u8]) {
        assert_eq!(image.len(), Self::CAPACITY, "image size does not match flash capacity");
        self.data.as_flattened_mut().copy_from_slice(image);
        for (page, states) in self.data.iter().zip(self.words.iter_mut()) {
            for (word, state) in page.chunks_exact(WRITE).zip(states.iter_mut()) {
                *state = if word.iter().any(|&b| b != 0xFF) {
                    WORD_WRITTEN
                } else {
                    WORD_ERASED
                };
            }
        }
        self.st.unreadable = 0;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::test_util::*;
    use std::vec;

    #[test]
    fn image_access() {
        let mut f = SimFlash::<256, 4, 1, 8>::new_ecc();
        f.as_bytes_mut()[5] = 0x12;
        assert_eq!(f.as_bytes()[5], 0x12);
        let mut img = vec![0xFF; 1024];
        img[300] = 0;
        f.load_image(&img);
        assert_eq!(f.as_bytes(), &img[..]);
        // Loaded programmed words count as written, erased ones do not.
        assert_eq!(w(&mut f, 296, &[0; 8]), Err(SimFlashError::WordRewritten));
        w(&mut f, 0, &[0; 8]).unwrap();
        let snapshot = f.clone();
        assert_eq!(snapshot.as_bytes(), f.as_bytes());
    }

    #[test]
    #[should_panic(expected = "image size")]
    fn load_image_wrong_size() {
        Small::new().load_image(&[0; 10]);
    }
}
