//! The *torn words unreadable* mode of [`SimFlash`]: words whose ECC a power
//! cut broke, which fail every read until their page is erased.

use super::SimFlash;
#[cfg(doc)]
use super::SimFlashError;
use super::sim::WORD_UNREADABLE;

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> SimFlash<PAGE, PAGES, READ, WRITE> {
    /// Enables or disables *torn words unreadable* (default: off), the ECC
    /// behaviour of STM32L4/H7 internal flash after a power cut. Meant to be
    /// used together with ECC mode. With it on:
    ///
    /// * a torn write leaves the `WRITE`-sized word it was programming when
    ///   power failed unreadable: the word holding the first byte not fully
    ///   programmed (if the cut falls on a word boundary, that is the next
    ///   word of the write's range; an empty write has none). Words
    ///   completed before it stay readable;
    /// * a torn erase leaves, besides its garbage, a pseudo-random non-empty
    ///   subset of the words of the page it was erasing unreadable (one word,
    ///   a run of words, or a scatter of them, decided by the seed).
    ///
    /// Any read whose range overlaps an unreadable word fails with
    /// [`SimFlashError::Unreadable`], leaves the caller's buffer as it was and
    /// is not counted in [`stats`](Self::stats) (which count data delivered).
    /// A word stays unreadable until its page is erased by a *completed*
    /// erase; a torn erase keeps it unreadable. For writes an unreadable word
    /// counts as programmed: ECC mode refuses it with
    /// [`SimFlashError::WordRewritten`], otherwise the rewrite is done and
    /// counted, and the word stays unreadable. [`load_image`](Self::load_image)
    /// makes every word readable.
    ///
    /// The flag only decides whether power cuts *create* unreadable words;
    /// words already unreadable (also those made so by
    /// [`mark_unreadable`](Self::mark_unreadable)) stay so when it is turned
    /// off. With it off and no word marked, the simulator behaves exactly as
    /// it did before this option existed (same damage for the same seed).
    pub fn set_torn_unreadable(&mut self, on: bool) {
        self.st.torn_unreadable = on;
    }

    /// Whether torn words become unreadable (see
    /// [`set_torn_unreadable`](Self::set_torn_unreadable)).
    pub fn is_torn_unreadable(&self) -> bool {
        self.st.torn_unreadable
    }

    /// Makes the `WRITE`-sized word holding byte `offset` unreadable, as a
    /// torn program would (see [`set_torn_unreadable`](Self::set_torn_unreadable);
    /// works whether or not that mode is on). The data is not changed; the
    /// word counts as programmed until its page is erased.
    ///
    /// # Panics
    /// If `offset >= CAPACITY`.
    pub fn mark_unreadable(&mut self, offset: u32) {
        let off = offset as usize;
        assert!(off < Self::CAPACITY, "offset {off:#x} outside the flash");
        self.set_unreadable(off / PAGE, (off % PAGE) / WRITE);
    }

    /// Number of words that are unreadable now.
    pub fn unreadable_words(&self) -> usize {
        self.st.unreadable
    }

    /// Puts word `word` of page `page` in the unreadable state.
    pub(super) fn set_unreadable(&mut self, page: usize, word: usize) {
        let state = &mut self.words[page][word];
        if *state != WORD_UNREADABLE {
            *state = WORD_UNREADABLE;
            self.st.unreadable += 1;
        }
    }

    /// Whether the byte range `off..end` (non-empty, in bounds) overlaps an
    /// unreadable word. Words never span pages (`PAGE % WRITE == 0`).
    pub(super) fn overlaps_unreadable(&self, off: usize, end: usize) -> bool {
        if self.st.unreadable == 0 || off >= end {
            return false;
        }
        let (first, last) = (off / WRITE, (end - 1) / WRITE);
        let per_page = PAGE / WRITE;
        (first..=last).any(|w| self.words[w / per_page][w % per_page] == WORD_UNREADABLE)
    }

    /// Makes a pseudo-random non-empty subset of the words of `page` (whose
    /// erase was just torn) unreadable: one word, a run of words, about one
    /// in eight, or about half of them.
    pub(super) fn unreadable_after_torn_erase(&mut self, page: usize) {
        let n = PAGE / WRITE;
        match self.rand_below(4) {
            0 => {
                let w = self.rand_below(n);
                self.set_unreadable(page, w);
            }
            1 => {
                let start = self.rand_below(n);
                let len = 1 + self.rand_below(n - start);
                for w in start..start + len {
                    self.set_unreadable(page, w);
                }
            }
            mode => {
                let one_in = if mode == 2 { 8 } else { 2 };
                let forced = self.rand_below(n);
                for w in 0..n {
                    if w == forced || self.rand_below(one_in) == 0 {
                        self.set_unreadable(page, w);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::test_util::*;
    use std::vec;
    use std::vec::Vec;

    /// FNV-1a over bytes.
    fn fnv(h: &mut u64, bytes: &[u8]) {
        for &b in bytes {
            *h ^= b as u64;
            *h = h.wrapping_mul(0x100_0000_01b3);
        }
    }

    /// A digest of everything observable after torn writes and erases (images, every read,
    /// errors, stats) over many seeds and cut points, on plain and ECC flash.
    fn torn_digest(configure: impl Fn(&mut SimFlash<256, 4, 1, 8>)) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for seed in 1..40u64 {
            for ecc in [false, true] {
                for k in 0..8u64 {
                    let mut f = SimFlash::<256, 4, 1, 8>::new();
                    configure(&mut f);
                    f.set_ecc(ecc);
                    f.set_seed(seed);
                    if seed % 2 == 0 {
                        f.cut_power_at_op(Some(k));
                    } else {
                        f.cut_power_after(Some(k * 97 + seed));
                    }
                    let pattern: Vec<u8> = (0..256).map(|i| (i * 13 + seed as usize) as u8 & 0xF7).collect();
                    let mut results = Vec::new();
                    results.push(w(&mut f, 0, &pattern[..64]));
                    results.push(w(&mut f, 256, &pattern));
                    results.push(e(&mut f, 0, 512));
                    f.restore_power();
                    results.push(w(&mut f, 512, &pattern[..128]));
                    results.push(e(&mut f, 512, 1024));
                    f.restore_power();
                    results.push(w(&mut f, 768, &pattern[..32]));
                    results.push(w(&mut f, 0, &pattern[..8]));
                    f.restore_power();
                    let mut buf = [0u8; 1024];
                    results.push(r(&mut f, 0, &mut buf));
                    fnv(&mut h, &buf);
                    for word in 0..128u32 {
                        results.push(w(&mut f, word * 8, &[0x5A; 8]));
                    }
                    fnv(&mut h, f.as_bytes());
                    fnv(
                        &mut h,
                        std::format!("{results:?} {:?} {}", f.stats(), f.ops()).as_bytes(),
                    );
                }
            }
        }
        h
    }

    /// The digest of [`torn_digest`] computed on the simulator before the torn-unreadable
    /// option existed (commit 70878e4).
    const TORN_DIGEST_BEFORE_UNREADABLE: u64 = 0x22a2_2f87_05f3_30f4;

    #[test]
    fn torn_unreadable_off_by_default_keeps_old_behaviour_exactly() {
        assert!(!Small::new().is_torn_unreadable());
        assert!(!SimFlash::<256, 4, 1, 8>::new_ecc().is_torn_unreadable());
        assert_eq!(torn_digest(|_| {}), TORN_DIGEST_BEFORE_UNREADABLE);
        // Turning it on and off again changes nothing either.
        assert_eq!(
            torn_digest(|f| {
                f.set_torn_unreadable(true);
                f.set_torn_unreadable(false);
            }),
            TORN_DIGEST_BEFORE_UNREADABLE
        );
        // With it on, the results differ (reads fail), so the digest sees the option.
        assert_ne!(
            torn_digest(|f| f.set_torn_unreadable(true)),
            TORN_DIGEST_BEFORE_UNREADABLE
        );
    }

    /// Word indices (flash-wide) whose read fails with `Unreadable`, found by reading every
    /// word on its own; also checks that no other error comes back.
    fn unreadable_set<const P: usize, const N: usize, const W: usize>(f: &mut SimFlash<P, N, 1, W>) -> Vec<usize> {
        let before = f.stats();
        let mut out = Vec::new();
        let mut buf = [0u8; W];
        for word in 0..P * N / W {
            match r(f, (word * W) as u32, &mut buf) {
                Ok(()) => {}
                Err(SimFlashError::Unreadable) => out.push(word),
                Err(e) => panic!("word {word}: {e:?}"),
            }
        }
        assert_eq!(out.len(), f.unreadable_words());
        assert_eq!(f.stats().reads - before.reads, (P * N / W - out.len()) as u64);
        out
    }

    /// A write of 3 words at word 2 of page 1, torn after every possible number of bytes:
    /// exactly the word holding the first byte not fully programmed is unreadable; the words
    /// before it hold their data; the page is readable again after an erase.
    fn torn_write_leaves_word_in_progress_unreadable<const W: usize>() {
        let len = 3 * W.max(4);
        let off = 256 + 2 * W;
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(37) & 0x7E).collect();
        for ecc in [false, true] {
            for cut in 0..len {
                let mut f = SimFlash::<256, 4, 1, W>::new();
                f.set_ecc(ecc);
                f.set_torn_unreadable(true);
                f.set_seed(cut as u64 + 1);
                f.cut_power_after(Some(cut as u64));
                assert_eq!(w(&mut f, off as u32, &data), Err(SimFlashError::PowerCut));
                f.restore_power();
                let expect = (off + cut) / W;
                assert_eq!(unreadable_set(&mut f), vec![expect], "W {W} cut after {cut} bytes");
                // Completed words before it read back as written.
                let done = expect * W - off;
                let mut buf = vec![0u8; done];
                r(&mut f, off as u32, &mut buf).unwrap();
                assert_eq!(buf, &data[..done]);
                // Any read overlapping the word fails, and leaves the buffer alone.
                let mut buf = vec![0x42u8; W + 2];
                let start = (expect * W).saturating_sub(1);
                assert_eq!(r(&mut f, start as u32, &mut buf), Err(SimFlashError::Unreadable));
                assert!(buf.iter().all(|&b| b == 0x42));
                let mut all = vec![0u8; 1024];
                assert_eq!(r(&mut f, 0, &mut all), Err(SimFlashError::Unreadable));
                // A write to it behaves as for a programmed word.
                if ecc {
                    assert_eq!(
                        w(&mut f, (expect * W) as u32, &[0; W]),
                        Err(SimFlashError::WordRewritten)
                    );
                } else {
                    let rewrites = f.stats().rewrites;
                    w(&mut f, (expect * W) as u32, &[0; W]).unwrap();
                    assert_eq!(f.stats().rewrites, rewrites + 1);
                    assert_eq!(f.unreadable_words(), 1);
                }
                // Power cycles and other pages' erases do not help; erasing its page does.
                f.cut_power();
                f.restore_power();
                e(&mut f, 0, 256).unwrap();
                e(&mut f, 512, 1024).unwrap();
                assert_eq!(unreadable_set(&mut f), vec![expect]);
                e(&mut f, 256, 512).unwrap();
                assert_eq!(f.unreadable_words(), 0);
                r(&mut f, 0, &mut all).unwrap();
                assert!(all.iter().all(|&b| b == 0xFF));
                w(&mut f, off as u32, &data).unwrap();
            }
        }
    }

    #[test]
    fn torn_write_unreadable_word_w1() {
        torn_write_leaves_word_in_progress_unreadable::<1>();
    }

    #[test]
    fn torn_write_unreadable_word_w8() {
        torn_write_leaves_word_in_progress_unreadable::<8>();
    }

    #[test]
    fn torn_write_unreadable_word_w32() {
        torn_write_leaves_word_in_progress_unreadable::<32>();
    }

    #[test]
    fn torn_write_at_op_and_empty_write() {
        // cut_power_at_op picks the tear point at random: still exactly one word, in range.
        for seed in 1..200u64 {
            let mut f = SimFlash::<256, 4, 1, 8>::new_ecc();
            f.set_torn_unreadable(true);
            f.set_seed(seed);
            f.cut_power_at_op(Some(0));
            assert_eq!(w(&mut f, 64, &[0; 64]), Err(SimFlashError::PowerCut));
            f.restore_power();
            let set = unreadable_set(&mut f);
            assert!(set.len() == 1 && (8..16).contains(&set[0]), "seed {seed}: {set:?}");
        }
        // A torn empty write programs nothing and breaks nothing.
        let mut f = SimFlash::<256, 4, 1, 8>::new_ecc();
        f.set_torn_unreadable(true);
        f.cut_power_at_op(Some(0));
        assert_eq!(w(&mut f, 64, &[]), Err(SimFlashError::PowerCut));
        assert_eq!(f.unreadable_words(), 0);
    }

    #[test]
    fn torn_erase_leaves_random_nonempty_subset_unreadable() {
        let mut sizes = std::collections::BTreeSet::new();
        for seed in 1..200u64 {
            let mut f = SimFlash::<256, 4, 1, 8>::new_ecc();
            f.set_torn_unreadable(true);
            f.set_seed(seed);
            let pattern: Vec<u8> = (0..256).map(|i| (i * 5 + 1) as u8 & 0xBF).collect();
            for p in 0..4u32 {
                w(&mut f, p * 256, &pattern).unwrap();
            }
            f.mark_unreadable(3 * 256 + 17);
            f.cut_power_at_op(Some(0));
            assert_eq!(e(&mut f, 256, 512), Err(SimFlashError::PowerCut));
            f.restore_power();
            let set = unreadable_set(&mut f);
            let torn: Vec<usize> = set.iter().copied().filter(|&w| w != 3 * 32 + 2).collect();
            assert_eq!(torn.len() + 1, set.len(), "the marked word stays unreadable");
            assert!(!torn.is_empty(), "seed {seed}");
            assert!(torn.iter().all(|w| (32..64).contains(w)), "seed {seed}: {torn:?}");
            sizes.insert(torn.len());
            // The garbage is there too, and ECC mode wants a new erase.
            assert_ne!(f.page(1), &pattern[..]);
            let readable = (32..64).find(|w| !torn.contains(w));
            if let Some(word) = readable {
                assert_eq!(w(&mut f, (word * 8) as u32, &[0; 8]), Err(SimFlashError::WordRewritten));
            }
            // A completed erase clears the page's words, not the other page's.
            e(&mut f, 256, 512).unwrap();
            assert_eq!(unreadable_set(&mut f), vec![3 * 32 + 2]);
            assert!(f.page(1).iter().all(|&b| b == 0xFF));
            w(&mut f, 256, &pattern).unwrap();
        }
        // One word, runs, scatters of many sizes.
        assert!(
            sizes.contains(&1) && sizes.iter().any(|&n| n >= 16) && sizes.len() > 10,
            "{sizes:?}"
        );
    }

    #[test]
    fn torn_erase_of_unreadable_page_keeps_its_words_unreadable() {
        // Mode off: a torn erase creates no unreadable word, but keeps those it had.
        let mut f = SimFlash::<256, 4, 1, 8>::new_ecc();
        w(&mut f, 0, &[0; 256]).unwrap();
        f.mark_unreadable(40);
        f.cut_power_at_op(Some(0));
        assert_eq!(e(&mut f, 0, 256), Err(SimFlashError::PowerCut));
        f.restore_power();
        assert_eq!(unreadable_set(&mut f), vec![5]);
        // An erase over several pages torn in a later page: earlier pages are fixed.
        f.set_torn_unreadable(true);
        f.cut_power_after(Some(256 + 10));
        assert_eq!(e(&mut f, 0, 768), Err(SimFlashError::PowerCut));
        f.restore_power();
        let set = unreadable_set(&mut f);
        assert!(!set.is_empty() && set.iter().all(|w| (32..64).contains(w)), "{set:?}");
        e(&mut f, 0, 1024).unwrap();
        assert_eq!(f.unreadable_words(), 0);
    }

    #[test]
    fn torn_unreadable_is_deterministic_by_seed() {
        fn run(seed: u64) -> (Vec<u8>, Vec<usize>) {
            let mut f = SimFlash::<256, 4, 1, 8>::new_ecc();
            f.set_torn_unreadable(true);
            f.set_seed(seed);
            w(&mut f, 0, &[0x11; 256]).unwrap();
            f.cut_power_at_op(Some(0));
            let _ = e(&mut f, 0, 256);
            f.restore_power();
            f.cut_power_at_op(Some(0));
            let _ = w(&mut f, 512, &[0x22; 128]);
            f.restore_power();
            (f.as_bytes().to_vec(), unreadable_set(&mut f))
        }
        let mut distinct = std::collections::BTreeSet::new();
        for seed in 1..40 {
            let a = run(seed);
            assert_eq!(a, run(seed));
            distinct.insert(a.1);
        }
        assert!(distinct.len() > 20, "{}", distinct.len());
        // The damage to the bytes is the same whether torn words become unreadable or not.
        for seed in 1..40 {
            let mut f = SimFlash::<256, 4, 1, 8>::new_ecc();
            let mut g = SimFlash::<256, 4, 1, 8>::new_ecc();
            g.set_torn_unreadable(true);
            for x in [&mut f, &mut g] {
                x.set_seed(seed);
                w(x, 0, &[0x11; 256]).unwrap();
                x.cut_power_at_op(Some(0));
                let _ = w(x, 256, &[0x33; 64]);
                x.restore_power();
                x.cut_power_at_op(Some(0));
                let _ = e(x, 0, 256);
                x.restore_power();
            }
            assert_eq!(f.as_bytes(), g.as_bytes());
            assert!(f.unreadable_words() == 0 && g.unreadable_words() >= 2);
        }
    }

    #[test]
    fn mark_unreadable_load_image_and_stats() {
        let mut f = SimFlash::<256, 4, 4, 8>::new();
        w(&mut f, 0, &[0; 16]).unwrap();
        f.mark_unreadable(9); // word 1 (bytes 8..16)
        f.mark_unreadable(12); // same word
        f.mark_unreadable(1023); // last word, erased
        assert_eq!(f.unreadable_words(), 2);
        let mut buf = [0u8; 8];
        assert_eq!(r(&mut f, 4, &mut buf), Err(SimFlashError::Unreadable));
        assert_eq!(r(&mut f, 12, &mut buf[..4]), Err(SimFlashError::Unreadable));
        assert_eq!(r(&mut f, 1020, &mut buf[..4]), Err(SimFlashError::Unreadable));
        // Failed reads are not counted; reads next to the word work and are.
        assert_eq!(f.stats().reads, 0);
        r(&mut f, 0, &mut buf).unwrap();
        r(&mut f, 16, &mut buf).unwrap();
        assert_eq!((f.stats().reads, f.stats().read_bytes), (2, 16));
        // Validation comes first: a misaligned or out-of-bounds read reports that.
        assert_eq!(r(&mut f, 10, &mut buf[..3]), Err(SimFlashError::NotAligned));
        assert_eq!(r(&mut f, 1020, &mut buf), Err(SimFlashError::OutOfBounds));
        // The marked erased word counts as programmed.
        f.set_ecc(true);
        assert_eq!(w(&mut f, 1016, &[0; 8]), Err(SimFlashError::WordRewritten));
        // Toggling the option does not heal; load_image does.
        f.set_torn_unreadable(true);
        f.set_torn_unreadable(false);
        assert_eq!(f.unreadable_words(), 2);
        let img = f.as_bytes().to_vec();
        f.load_image(&img);
        assert_eq!(f.unreadable_words(), 0);
        r(&mut f, 8, &mut buf).unwrap();
        assert_eq!(buf, [0; 8]);
        w(&mut f, 1016, &[0; 8]).unwrap();
        let d = std::format!("{f:?}");
        assert!(d.contains("torn_unreadable") && d.contains("unreadable_words"));
    }

    #[test]
    #[should_panic(expected = "outside the flash")]
    fn mark_unreadable_out_of_range() {
        Small::new().mark_unreadable(1024);
    }
}
