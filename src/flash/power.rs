//! Power-cut injection for [`SimFlash`]: the triggers
//! ([`cut_power_after`](SimFlash::cut_power_after),
//! [`cut_power_at_op`](SimFlash::cut_power_at_op)), the deterministic PRNG
//! that decides the damage, and how a torn write or erase leaves the array.

use super::sim::{DEFAULT_SEED, WORD_ERASED, WORD_WRITTEN};
use super::{SimFlash, SimFlashError};

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> SimFlash<PAGE, PAGES, READ, WRITE> {
    /// Seeds the PRNG that decides how torn operations damage the array
    /// (and where [`cut_power_at_op`](Self::cut_power_at_op) tears). Any
    /// value is fine, including small consecutive ones: the seed is mixed
    /// (splitmix64) first, because raw xorshift from a tiny seed produces
    /// nearly constant high bits for its first outputs.
    pub fn set_seed(&mut self, seed: u64) {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // xorshift gets stuck at 0.
        self.st.rng = if z == 0 { DEFAULT_SEED } else { z };
    }

    /// Arms (`Some(n)`) or disarms (`None`) a power cut after `n` more bytes
    /// have been programmed or erased (a page erase counts as `PAGE` bytes).
    ///
    /// An operation that fits in the remaining budget completes normally;
    /// the first one that does not is torn:
    ///
    /// * write: the first `k` bytes (`k` = remaining budget) are programmed,
    ///   byte `k` is partially programmed (only some of the bits that should
    ///   go to 0 do; bits meant to stay 1 stay 1, as the `MultiwriteNorFlash`
    ///   contract promises), later bytes are untouched;
    /// * erase: the `k / PAGE` first pages are erased, the next one is left
    ///   as garbage (see [`cut_power_at_op`](Self::cut_power_at_op)), later
    ///   pages are untouched.
    ///
    /// The operation returns [`SimFlashError::PowerCut`] and power stays off
    /// until [`restore_power`](Self::restore_power). Firing disarms both
    /// triggers.
    pub fn cut_power_after(&mut self, bytes: Option<u64>) {
        self.st.byte_budget = bytes;
    }

    /// Arms (`Some(k)`) or disarms (`None`) a power cut during the `k`-th
    /// next mutating operation (write or erase call, 0-based from now; calls
    /// rejected by argument validation do not count).
    ///
    /// * A torn write programs a pseudo-random prefix of length `p` in
    ///   `0..len`, partially programs byte `p` and leaves the rest untouched.
    /// * A torn erase picks a pseudo-random page of the range: earlier pages
    ///   are erased, later ones untouched, and that page becomes garbage:
    ///   every byte becomes `old | rnd` (some bits erased, not all), so the
    ///   page is neither its old content nor erased, except in the degenerate
    ///   case of a page holding a single programmed bit. In ECC mode all its
    ///   words count as written, so it must be erased again before use.
    ///
    /// With [`set_torn_unreadable`](Self::set_torn_unreadable) on, either kind
    /// of tear also leaves words that cannot be read until their page is
    /// erased.
    ///
    /// Sweep `k = 0, 1, 2, ...` up to the [`ops`](Self::ops) count of a clean
    /// run to cut power at every operation of a scenario.
    pub fn cut_power_at_op(&mut self, k: Option<u64>) {
        self.st.ops_until_cut = k;
    }

    /// Cuts power immediately, without tearing anything.
    pub fn cut_power(&mut self) {
        self.power_fail();
    }

    /// Restores power after a cut. The array keeps whatever the torn
    /// operation left; counters are not reset.
    pub fn restore_power(&mut self) {
        self.st.powered = true;
    }

    /// Whether power is on.
    pub fn is_powered(&self) -> bool {
        self.st.powered
    }

    /// xorshift64: tiny, deterministic, good enough to pick tear points.
    fn next_rand(&mut self) -> u64 {
        let mut x = self.st.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.st.rng = x;
        x
    }

    /// Uniform-ish value in `0..n` (`n > 0`); modulo bias is irrelevant here.
    pub(super) fn rand_below(&mut self, n: usize) -> usize {
        (self.next_rand() % n as u64) as usize
    }

    pub(super) fn rand_byte(&mut self) -> u8 {
        (self.next_rand() >> 56) as u8
    }

    pub(super) fn power_fail(&mut self) {
        self.st.powered = false;
        self.st.byte_budget = None;
        self.st.ops_until_cut = None;
    }

    pub(super) fn check_powered(&self) -> Result<(), SimFlashError> {
        if self.st.powered {
            Ok(())
        } else {
            Err(SimFlashError::PowerCut)
        }
    }

    /// Called once per mutating operation that passed validation, with its
    /// size in `units` (bytes for writes, pages for erases) each costing
    /// `unit_cost` bytes of budget. Returns `Some(k)` if power fails during
    /// this operation: units `0..k` complete, unit `k` (if `k < units`) is
    /// torn, later units are untouched.
    pub(super) fn decide_cut(&mut self, units: usize, unit_cost: u64) -> Option<usize> {
        let mut cut = None;
        if let Some(n) = self.st.ops_until_cut {
            if n == 0 {
                cut = Some(if units == 0 { 0 } else { self.rand_below(units) });
            } else {
                self.st.ops_until_cut = Some(n - 1);
            }
        }
        if let Some(budget) = self.st.byte_budget {
            let cost = units as u64 * unit_cost;
            if cost > budget {
                // cost > budget implies budget / unit_cost < units.
                let k = (budget / unit_cost) as usize;
                cut = Some(cut.map_or(k, |c: usize| c.min(k)));
            } else {
                self.st.byte_budget = Some(budget - cost);
            }
        }
        cut
    }

    /// Leaves `page` half-erased: each byte becomes `old | rnd`, then nudged
    /// so that the page matches neither the old content nor the erased state
    /// whenever that is possible (it is not for a page with one 0 bit).
    pub(super) fn garble_page(&mut self, page: usize) {
        // One pass, no copy of the page (a copy would put PAGE bytes on the stack of every
        // erase, which the QEMU stack figures would then count): remember the first
        // programmed byte's old value and whether the result equals the old content or the
        // erased state.
        let mut first: Option<(usize, u8)> = None;
        let (mut same, mut looks_erased) = (true, true);
        for i in 0..PAGE {
            let o = self.data[page][i];
            let n = o | self.rand_byte();
            self.data[page][i] = n;
            if o != 0xFF && first.is_none() {
                first = Some((i, o));
            }
            same &= n == o;
            looks_erased &= n == 0xFF;
        }
        // The random outcome can look like a clean result (always for tiny
        // pages, rarely otherwise). Tests of torn erases are only meaningful
        // if the page is really in between, so fix up the first programmed
        // byte `i` in that case.
        if let Some((i, old)) = first
            && (looks_erased || same)
        {
            let lowest_zero = 1u8 << (!old).trailing_zeros();
            self.data[page][i] = if old.count_zeros() >= 2 {
                // Strictly between old and erased on its own.
                old | lowest_zero
            } else if looks_erased {
                // Differs from `old` as long as another byte was
                // programmed (it is erased now).
                old
            } else {
                // Differs from erased as long as another byte was
                // programmed (it kept its old value).
                0xFF
            };
        }
        // The ECC of a half-erased page is garbage: force a new erase. Words
        // that were unreadable stay so (only a completed erase fixes them).
        for state in &mut self.words[page] {
            if *state == WORD_ERASED {
                *state = WORD_WRITTEN;
            }
        }
        if self.st.torn_unreadable {
            self.unreadable_after_torn_erase(page);
        }
        self.page_erases[page] += 1;
        self.st.stats.erases += 1;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::test_util::*;
    use std::vec::Vec;

    #[test]
    fn cut_power_after_tears_write_at_exact_byte() {
        for seed in 1..50u64 {
            let mut f = Small::new();
            f.set_seed(seed);
            w(&mut f, 0, &[0xAB; 4]).unwrap();
            f.cut_power_after(Some(10));
            // 8 bytes fit in the budget: completes.
            w(&mut f, 16, &[0x00; 8]).unwrap();
            assert!(f.is_powered());
            // 2 bytes of budget left: bytes 0,1 applied, byte 2 partial.
            let data = [0x0F, 0x3C, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78];
            assert_eq!(w(&mut f, 32, &data), Err(SimFlashError::PowerCut));
            assert!(!f.is_powered());
            let img = f.as_bytes();
            assert_eq!(&img[32..34], &data[..2]);
            // Partial program: bits meant to stay 1 stay 1, so the byte is a
            // superset of the target bits; later bytes untouched.
            assert_eq!(img[34] & data[2], data[2]);
            assert_eq!(&img[35..40], &[0xFF; 5]);
            assert_eq!(&img[16..24], &[0; 8]);
            assert_eq!(&img[..4], &[0xAB; 4]);
            assert_eq!(f.stats().write_bytes, 4 + 8 + 3);
            assert_eq!(f.ops(), 3);

            // Dead until restored.
            let mut buf = [0u8; 4];
            assert_eq!(r(&mut f, 0, &mut buf), Err(SimFlashError::PowerCut));
            assert_eq!(w(&mut f, 64, &[0; 4]), Err(SimFlashError::PowerCut));
            assert_eq!(e(&mut f, 0, 256), Err(SimFlashError::PowerCut));
            assert_eq!(f.ops(), 3);
            f.restore_power();
            r(&mut f, 0, &mut buf).unwrap();
            assert_eq!(buf, [0xAB; 4]);
            // The trigger fired once; no further cut.
            w(&mut f, 64, &[0; 128]).unwrap();
        }
    }

    #[test]
    fn partial_byte_varies_with_seed() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 1..200u64 {
            let mut f = Small::new();
            f.set_seed(seed);
            f.cut_power_after(Some(0));
            assert_eq!(w(&mut f, 0, &[0x00; 4]), Err(SimFlashError::PowerCut));
            assert_eq!(&f.as_bytes()[1..4], &[0xFF; 3]);
            seen.insert(f.as_bytes()[0]);
        }
        assert!(seen.len() > 50, "partial program should vary: {seen:?}");
    }

    #[test]
    fn budget_exactly_consumed_then_next_op_torn() {
        let mut f = Small::new();
        f.cut_power_after(Some(8));
        w(&mut f, 0, &[0; 8]).unwrap();
        assert!(f.is_powered());
        // An empty write costs nothing.
        w(&mut f, 8, &[]).unwrap();
        assert_eq!(w(&mut f, 8, &[0; 4]), Err(SimFlashError::PowerCut));
        assert_eq!(&f.as_bytes()[9..12], &[0xFF; 3]);
    }

    #[test]
    fn torn_erase_leaves_garbage() {
        for seed in 1..50u64 {
            let mut f = Small::new();
            f.set_seed(seed);
            let pattern: Vec<u8> = (0..PAGE).map(|i| (i * 7 + 3) as u8 & 0x7E).collect();
            for p in 0..3u32 {
                w(&mut f, p * 256, &pattern).unwrap();
            }
            f.cut_power_after(Some(256 + 5));
            assert_eq!(e(&mut f, 0, 768), Err(SimFlashError::PowerCut));
            let img = f.as_bytes();
            assert!(img[..256].iter().all(|&b| b == 0xFF), "page 0 erased");
            let torn = &img[256..512];
            assert_ne!(torn, &pattern[..], "torn page is not the old content");
            assert!(torn.iter().any(|&b| b != 0xFF), "torn page is not erased");
            // Erasing only sets bits.
            assert!(torn.iter().zip(&pattern).all(|(&t, &o)| t & o == o));
            assert_eq!(&img[512..768], &pattern[..], "page 2 untouched");
            assert_eq!([0, 1, 2].map(|p| f.page_erases(p)), [1, 1, 0]);
            assert_eq!(f.stats().erases, 2);
        }
    }

    #[test]
    fn torn_erase_forces_reerase_in_ecc_mode() {
        let mut f = Small::new_ecc();
        w(&mut f, 0, &[0; 256]).unwrap();
        f.cut_power_at_op(Some(0));
        assert_eq!(e(&mut f, 0, 256), Err(SimFlashError::PowerCut));
        f.restore_power();
        assert_eq!(w(&mut f, 0, &[0; 4]), Err(SimFlashError::WordRewritten));
        e(&mut f, 0, 256).unwrap();
        w(&mut f, 0, &[0; 4]).unwrap();
    }

    #[test]
    fn torn_erase_degenerate_pages() {
        // An erased page cannot look like anything but erased.
        let mut f = Small::new();
        f.cut_power_at_op(Some(0));
        assert_eq!(e(&mut f, 0, 256), Err(SimFlashError::PowerCut));
        assert!(f.page(0).iter().all(|&b| b == 0xFF));
        // A page with a single programmed byte of two 0 bits: neither.
        for seed in 1..100 {
            let mut f = Small::new();
            f.set_seed(seed);
            w(&mut f, 0, &[0xFC, 0xFF, 0xFF, 0xFF]).unwrap();
            f.cut_power_at_op(Some(0));
            assert_eq!(e(&mut f, 0, 256), Err(SimFlashError::PowerCut));
            let b = f.page(0)[0];
            assert!(b != 0xFC && b != 0xFF, "seed {seed}: {b:#x}");
            assert!(f.page(0)[1..].iter().all(|&b| b == 0xFF));
        }
    }

    /// A little scenario of flash operations; returns the index of the
    /// operation that failed, if any.
    fn scenario(f: &mut Small) -> Result<(), (usize, SimFlashError)> {
        let mut i = 0;
        let mut step = |res: Result<(), SimFlashError>| {
            let n = i;
            i += 1;
            res.map_err(|err| (n, err))
        };
        step(w(f, 0, &[1; 16]))?;
        step(w(f, 16, &[2; 16]))?;
        step(e(f, 256, 768))?;
        step(w(f, 256, &[3; 64]))?;
        step(e(f, 0, 256))?;
        step(w(f, 512, &[4; 4]))?;
        Ok(())
    }

    #[test]
    fn cut_power_at_op_sweep() {
        let mut clean = Small::new();
        scenario(&mut clean).unwrap();
        let n = clean.ops();
        assert_eq!(n, 6);
        for k in 0..n {
            let mut f = Small::new();
            f.set_seed(k + 1);
            f.cut_power_at_op(Some(k));
            let res = scenario(&mut f);
            assert_eq!(res, Err((k as usize, SimFlashError::PowerCut)));
            assert!(!f.is_powered());
            assert_eq!(f.ops(), k + 1);
            // Determinism: same seed, same damage.
            let mut g = Small::new();
            g.set_seed(k + 1);
            g.cut_power_at_op(Some(k));
            let _ = scenario(&mut g);
            assert_eq!(f.as_bytes(), g.as_bytes());
            // After power returns, the device works and the trigger is gone.
            f.restore_power();
            e(&mut f, 0, 1024).unwrap();
            scenario(&mut f).unwrap();
            assert_eq!(f.as_bytes(), clean.as_bytes());
        }
        // Beyond the last op: no cut.
        let mut f = Small::new();
        f.cut_power_at_op(Some(n));
        scenario(&mut f).unwrap();
        assert!(f.is_powered());
    }

    #[test]
    fn torn_write_prefix_positions() {
        // cut_power_at_op on a write: prefix of random length, the rest
        // untouched, and over many seeds every prefix length shows up.
        let mut lens = [false; 8];
        for seed in 1..300u64 {
            let mut f = Small::new();
            f.set_seed(seed);
            f.cut_power_at_op(Some(0));
            assert_eq!(w(&mut f, 0, &[0; 8]), Err(SimFlashError::PowerCut));
            let img = &f.as_bytes()[..8];
            let p = img.iter().position(|&b| b != 0).unwrap_or(8);
            assert!(p < 8 || img.iter().all(|&b| b == 0));
            // After the partial byte, all untouched.
            if p < 7 {
                assert!(img[p + 1..].iter().all(|&b| b == 0xFF), "{img:?}");
            }
            lens[p.min(7)] = true;
        }
        assert!(lens.iter().all(|&x| x), "{lens:?}");
    }

    #[test]
    fn torn_erase_random_page_in_range() {
        let mut pages = [false; 4];
        for seed in 1..100u64 {
            let mut f = Small::new();
            f.set_seed(seed);
            for p in 0..4u32 {
                w(&mut f, p * 256, &[0x00; 256]).unwrap();
            }
            f.cut_power_at_op(Some(0));
            assert_eq!(e(&mut f, 0, 1024), Err(SimFlashError::PowerCut));
            let t = (0..4).find(|&p| f.page(p).iter().any(|&b| b != 0xFF)).unwrap();
            assert!((0..t).all(|p| f.page(p).iter().all(|&b| b == 0xFF)));
            assert!((t + 1..4).all(|p| f.page(p).iter().all(|&b| b == 0)));
            pages[t] = true;
        }
        assert_eq!(pages, [true; 4]);
    }

    #[test]
    fn cut_power_now_and_empty_ops() {
        let mut f = Small::new();
        f.cut_power();
        assert_eq!(r(&mut f, 0, &mut [0; 4]), Err(SimFlashError::PowerCut));
        f.restore_power();
        // An empty op can be the one that is cut; it changes nothing.
        f.cut_power_at_op(Some(0));
        assert_eq!(e(&mut f, 0, 0), Err(SimFlashError::PowerCut));
        assert!(f.as_bytes().iter().all(|&b| b == 0xFF));
    }
}
