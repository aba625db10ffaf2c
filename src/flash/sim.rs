//! The [`SimFlash`] model: its storage (data array and word-state shadow
//! array), construction, argument validation and the read / program /
//! erase operations that enforce NOR rules. Power cuts, unreadable words,
//! modes, counters and image access are in the sibling modules.

use core::fmt;
use core::mem::MaybeUninit;

#[cfg(doc)]
use embedded_storage::nor_flash::{NorFlash as BlockingNorFlash, ReadNorFlash as BlockingReadNorFlash};

use super::{FlashStats, SimFlashError};

/// Word states in [`SimFlash`]'s shadow array. `0` is the erased state, so
/// that zeroed memory ([`SimFlash::new_in_place`]) is a freshly erased flash.
pub(super) const WORD_ERASED: u8 = 0;
/// Programmed since the last erase (including a torn program that left it
/// readable).
pub(super) const WORD_WRITTEN: u8 = 1;
/// Programmed (or half-erased) with inconsistent ECC: every read of it fails
/// until its page is erased. Counts as programmed for writes.
pub(super) const WORD_UNREADABLE: u8 = 2;

/// Default PRNG seed; any fixed non-zero value works, it only has to make
/// runs reproducible.
pub(super) const DEFAULT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// Small, `Copy` part of the simulator state. Kept in one struct so that
/// [`SimFlash::new_in_place`] can initialise it with a single write.
#[derive(Debug, Clone, Copy)]
pub(super) struct State {
    pub(super) stats: FlashStats,
    pub(super) ops: u64,
    pub(super) ecc: bool,
    pub(super) strict: bool,
    /// Torn programs and erases leave unreadable words.
    pub(super) torn_unreadable: bool,
    /// Number of words in the [`WORD_UNREADABLE`] state (a fast path for
    /// reads: while it is 0 no read can fail with `Unreadable`).
    pub(super) unreadable: usize,
    pub(super) powered: bool,
    /// Bytes that may still be programmed/erased before power fails.
    pub(super) byte_budget: Option<u64>,
    /// Number of mutating operations that still complete before the one
    /// that gets torn.
    pub(super) ops_until_cut: Option<u64>,
    pub(super) rng: u64,
}

impl State {
    pub(super) const fn new(ecc: bool) -> Self {
        Self {
            stats: FlashStats {
                reads: 0,
                read_bytes: 0,
                writes: 0,
                write_bytes: 0,
                erases: 0,
                rewrites: 0,
            },
            ops: 0,
            ecc,
            strict: true,
            torn_unreadable: false,
            unreadable: 0,
            powered: true,
            byte_budget: None,
            ops_until_cut: None,
            rng: DEFAULT_SEED,
        }
    }
}

/// A RAM-backed simulated NOR flash that enforces NOR semantics and can
/// simulate power loss.
///
/// Geometry: `PAGES` erase pages of `PAGE` bytes, reads aligned to `READ`
/// bytes, writes aligned to `WRITE` bytes (the "word"). Capacity is
/// `PAGE * PAGES`. Invalid geometries (`PAGE % WRITE != 0`, `PAGE % READ != 0`,
/// zero sizes, capacity above `u32::MAX`) are rejected at compile time when a
/// constructor is instantiated.
///
/// # Rules enforced
///
/// * The erased state is `0xFF`; [`erase`](BlockingNorFlash::erase) works on
///   whole pages.
/// * A write may only clear bits. The stored result is always `old & new`,
///   as on real NOR; in *strict* mode (the default) a write that would need a
///   0 -> 1 transition additionally reports [`SimFlashError::NotErased`].
/// * A write may not cross a page boundary ([`SimFlashError::CrossesPage`]).
/// * In *ECC* mode ([`new_ecc`](Self::new_ecc) or
///   [`set_ecc`](Self::set_ecc)), programming a word that was already
///   programmed since its last erase fails with
///   [`SimFlashError::WordRewritten`] and changes nothing, as on flash with
///   per-word ECC (STM32H7/L4/U5, nRF with ECC, ...). Outside ECC mode such
///   rewrites are allowed and counted in [`FlashStats::rewrites`].
/// * With *torn words unreadable* ([`set_torn_unreadable`](Self::set_torn_unreadable),
///   off by default, meant to be combined with ECC mode), a power cut also
///   breaks the ECC of what it interrupts, as on STM32L4/H7: the word a torn
///   write was programming, and some words of a page whose erase was torn,
///   fail every [`read`](BlockingReadNorFlash::read) that overlaps them with
///   [`SimFlashError::Unreadable`] until their page is erased.
///
/// The type implements both the blocking (`embedded-storage`) and the async
/// (`embedded-storage-async`) traits, including the `MultiwriteNorFlash`
/// markers. The markers are unconditional because trait impls cannot depend
/// on a runtime flag: in ECC mode the simulator deliberately breaks the
/// multiwrite promise, which is how tests verify that code never relies on it.
/// Because both trait families have methods named `read`/`write`/`erase`,
/// call them through generic code or fully qualified paths.
///
/// # Power loss
///
/// [`cut_power_after`](Self::cut_power_after) fails power after a number of
/// programmed/erased bytes, [`cut_power_at_op`](Self::cut_power_at_op) during
/// the k-th next write or erase. The torn operation returns
/// [`SimFlashError::PowerCut`] and so does every later access until
/// [`restore_power`](Self::restore_power). How a torn operation damages the
/// array is described on those methods (and, for unreadable words, on
/// [`set_torn_unreadable`](Self::set_torn_unreadable)); the "random" parts
/// come from a deterministic PRNG ([`set_seed`](Self::set_seed)), so every
/// failure is reproducible.
///
/// # Size
///
/// The array is stored inline together with a same-sized shadow array that
/// tracks the state of each word (erased, written since its erase, or
/// unreadable), so the struct is a bit
/// more than `2 * PAGE * PAGES` bytes. Small instances can live on the stack.
/// Large ones belong in a `static` (with [`new`](Self::new) being `const`) or
/// on the heap; note that `Box::new(SimFlash::new())` builds the value on the
/// stack first and can overflow a thread stack in debug builds, so prefer
/// [`new_in_place`](Self::new_in_place):
///
/// ```
/// use mqtt_persist::flash::SimFlash;
///
/// let mut b = Box::<SimFlash<4096, 64, 4, 8>>::new_uninit();
/// SimFlash::new_in_place(&mut b);
/// // Safety: `new_in_place` initialised every field.
/// let flash = unsafe { b.assume_init() };
/// assert_eq!(flash.as_bytes().len(), 256 * 1024);
/// ```
#[derive(Clone)]
pub struct SimFlash<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> {
    /// The flash array.
    pub(super) data: [[u8; PAGE]; PAGES],
    /// `words[p][w]` is the state of word `w` (of `PAGE / WRITE` words) of
    /// page `p`: [`WORD_ERASED`], [`WORD_WRITTEN`] (programmed since the
    /// page's last erase) or [`WORD_UNREADABLE`]. Only the first
    /// `PAGE / WRITE` entries of each row are used; a packed array would be
    /// smaller but its size cannot be expressed with stable const generics.
    pub(super) words: [[u8; PAGE]; PAGES],
    pub(super) page_erases: [u64; PAGES],
    pub(super) page_write_bytes: [u64; PAGES],
    pub(super) page_read_bytes: [u64; PAGES],
    pub(super) st: State,
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> Default
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> fmt::Debug
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
    // Hand-written: a derived Debug would dump the whole array.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFlash")
            .field("page", &PAGE)
            .field("pages", &PAGES)
            .field("read", &READ)
            .field("write", &WRITE)
            .field("ecc", &self.st.ecc)
            .field("strict", &self.st.strict)
            .field("torn_unreadable", &self.st.torn_unreadable)
            .field("unreadable_words", &self.st.unreadable)
            .field("powered", &self.st.powered)
            .field("ops", &self.st.ops)
            .field("stats", &self.st.stats)
            .finish_non_exhaustive()
    }
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> SimFlash<PAGE, PAGES, READ, WRITE> {
    /// Total size in bytes.
    pub const CAPACITY: usize = PAGE * PAGES;

    /// Compile-time geometry check; evaluated (and thus enforced) by every
    /// constructor.
    const GEOMETRY_OK: () = {
        assert!(PAGE >= 1 && PAGES >= 1, "PAGE and PAGES must be at least 1");
        assert!(READ >= 1 && WRITE >= 1, "READ and WRITE must be at least 1");
        assert!(PAGE.is_multiple_of(WRITE), "PAGE must be a multiple of WRITE");
        assert!(PAGE.is_multiple_of(READ), "PAGE must be a multiple of READ");
        assert!(
            match PAGE.checked_mul(PAGES) {
                Some(c) => c as u64 <= u32::MAX as u64,
                None => false,
            },
            "capacity must be addressable with u32 offsets"
        );
    };

    /// Creates a fully erased (all `0xFF`) flash in strict, non-ECC mode.
    ///
    /// `const` so that it can initialise a `static`.
    pub const fn new() -> Self {
        let () = Self::GEOMETRY_OK;
        Self {
            data: [[0xFF; PAGE]; PAGES],
            words: [[WORD_ERASED; PAGE]; PAGES],
            page_erases: [0; PAGES],
            page_write_bytes: [0; PAGES],
            page_read_bytes: [0; PAGES],
            st: State::new(false),
        }
    }

    /// A fully erased flash on the heap, built in place (a large simulated flash would
    /// overflow the stack if built by value first).
    #[cfg(feature = "std")]
    pub fn boxed() -> std::boxed::Box<Self> {
        let mut b = std::boxed::Box::new_uninit();
        Self::new_in_place(&mut b);
        // Safety: `new_in_place` initialised every field of `*b`.
        unsafe { b.assume_init() }
    }

    /// Creates a fully erased flash in ECC mode (each word may be programmed
    /// only once per erase).
    pub const fn new_ecc() -> Self {
        let mut f = Self::new();
        f.st.ecc = true;
        f
    }

    /// Initialises `this` exactly like [`new`](Self::new) without building
    /// the value on the stack first, and returns a reference to it.
    ///
    /// Meant for large simulated flashes on the heap (`Box::new_uninit`), see
    /// the type-level docs. After this call `this` is fully initialised, so
    /// `assume_init` on it is sound.
    pub fn new_in_place(this: &mut MaybeUninit<Self>) -> &mut Self {
        let () = Self::GEOMETRY_OK;
        // Compile-time guard: this pattern lists every field without `..`, so
        // adding a field to the struct breaks the build here until the field
        // is also initialised below.
        #[allow(dead_code)]
        fn all_fields_listed<const A: usize, const B: usize, const C: usize, const D: usize>(s: &SimFlash<A, B, C, D>) {
            let SimFlash {
                data: _,
                words: _,
                page_erases: _,
                page_write_bytes: _,
                page_read_bytes: _,
                st: _,
            } = s;
        }

        let p = this.as_mut_ptr();
        // Safety: `p` points to memory valid for writes of `Self` (it comes
        // from a `&mut MaybeUninit<Self>`). Each field is initialised through
        // a raw field pointer, never through a reference to uninitialised
        // data. The byte patterns used are valid values: 0xFF for `u8` data, 0
        // for the word states (`WORD_ERASED`) and `u64`; `st` is written as a
        // whole value. The
        // guard above ensures all fields are covered, so `assume_init_mut` is
        // sound afterwards.
        unsafe {
            (&raw mut (*p).data).write_bytes(0xFF, 1);
            (&raw mut (*p).words).write_bytes(WORD_ERASED, 1);
            (&raw mut (*p).page_erases).write_bytes(0, 1);
            (&raw mut (*p).page_write_bytes).write_bytes(0, 1);
            (&raw mut (*p).page_read_bytes).write_bytes(0, 1);
            (&raw mut (*p).st).write(State::new(false));
            this.assume_init_mut()
        }
    }

    /// Same order of checks as `embedded_storage::nor_flash::check_slice`:
    /// bounds first, then alignment. Returns the end offset.
    fn check_slice(offset: u32, len: usize, align: usize) -> Result<usize, SimFlashError> {
        let off = offset as usize;
        let end = off
            .checked_add(len)
            .filter(|&e| e <= Self::CAPACITY)
            .ok_or(SimFlashError::OutOfBounds)?;
        if !off.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(SimFlashError::NotAligned);
        }
        Ok(end)
    }

    pub(super) fn read_impl(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimFlashError> {
        self.check_powered()?;
        let end = Self::check_slice(offset, bytes.len(), READ)?;
        let off = offset as usize;
        if self.overlaps_unreadable(off, end) {
            return Err(SimFlashError::Unreadable);
        }
        bytes.copy_from_slice(&self.data.as_flattened()[off..end]);
        self.st.stats.reads += 1;
        self.st.stats.read_bytes += bytes.len() as u64;
        // Reads may span pages; attribute each byte to its page.
        let mut pos = off;
        while pos < end {
            let page = pos / PAGE;
            let chunk_end = end.min((page + 1) * PAGE);
            self.page_read_bytes[page] += (chunk_end - pos) as u64;
            pos = chunk_end;
        }
        Ok(())
    }

    pub(super) fn write_impl(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimFlashError> {
        self.check_powered()?;
        let len = bytes.len();
        let off = offset as usize;
        let end = Self::check_slice(offset, len, WRITE)?;
        if len > 0 && off / PAGE != (end - 1) / PAGE {
            return Err(SimFlashError::CrossesPage);
        }
        // `off` may equal CAPACITY for an empty write; clamp so that indexing
        // stays in range (nothing is touched anyway).
        let page = (off / PAGE).min(PAGES - 1);
        let in_page = off - page * PAGE;
        let first_word = in_page / WRITE;
        let n_words = len / WRITE;
        if self.st.ecc
            && self.words[page][first_word..first_word + n_words]
                .iter()
                .any(|&w| w != WORD_ERASED)
        {
            return Err(SimFlashError::WordRewritten);
        }

        let cut = self.decide_cut(len, 1);
        self.st.ops += 1;
        self.st.stats.writes += 1;

        let full = cut.unwrap_or(len);
        let mut not_erased = false;
        let cells = &mut self.data[page][in_page..in_page + len];
        for (cell, &b) in cells[..full].iter_mut().zip(bytes) {
            not_erased |= b & !*cell != 0;
            *cell &= b;
        }
        let mut touched = full;
        if full < len {
            // Partial program of the byte being written when power failed:
            // only some of the bits that should go 1 -> 0 do so.
            let rnd = self.rand_byte();
            self.data[page][in_page + full] &= bytes[full] | rnd;
            touched += 1;
        }

        let touched_words = touched.div_ceil(WRITE);
        for state in &mut self.words[page][first_word..first_word + touched_words] {
            if *state == WORD_ERASED {
                *state = WORD_WRITTEN;
            } else {
                // Unreadable words stay unreadable.
                self.st.stats.rewrites += 1;
            }
        }
        if self.st.torn_unreadable && full < len {
            // The word being programmed when power failed has broken ECC.
            self.set_unreadable(page, (in_page + full) / WRITE);
        }
        self.st.stats.write_bytes += touched as u64;
        self.page_write_bytes[page] += touched as u64;

        if cut.is_some() {
            self.power_fail();
            return Err(SimFlashError::PowerCut);
        }
        if not_erased && self.st.strict {
            return Err(SimFlashError::NotErased);
        }
        Ok(())
    }

    fn erase_page(&mut self, page: usize) {
        // `fill`, not `= [0xFF; PAGE]`: the array literal is built on the stack first in some
        // builds (4 KiB of the peak stack the QEMU run measures for an erasing operation).
        self.data[page].fill(0xFF);
        if self.st.unreadable > 0 {
            self.st.unreadable -= self.words[page].iter().filter(|&&w| w == WORD_UNREADABLE).count();
        }
        self.words[page].fill(WORD_ERASED);
        self.page_erases[page] += 1;
        self.st.stats.erases += 1;
    }

    pub(super) fn erase_impl(&mut self, from: u32, to: u32) -> Result<(), SimFlashError> {
        self.check_powered()?;
        let (from, to) = (from as usize, to as usize);
        // Same order of checks as `embedded_storage::nor_flash::check_erase`.
        if from > to || to > Self::CAPACITY {
            return Err(SimFlashError::OutOfBounds);
        }
        if !from.is_multiple_of(PAGE) || !to.is_multiple_of(PAGE) {
            return Err(SimFlashError::NotAligned);
        }
        let first = from / PAGE;
        let n = (to - from) / PAGE;

        let cut = self.decide_cut(n, PAGE as u64);
        self.st.ops += 1;

        let done = cut.unwrap_or(n);
        for page in first..first + done {
            self.erase_page(page);
        }
        if cut.is_some() {
            if done < n {
                self.garble_page(first + done);
            }
            self.power_fail();
            return Err(SimFlashError::PowerCut);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::test_util::*;
    use super::*;
    use std::boxed::Box;

    #[test]
    fn new_is_erased() {
        let f = Small::new();
        assert_eq!(f.as_bytes().len(), 1024);
        assert!(f.as_bytes().iter().all(|&b| b == 0xFF));
        assert_eq!(BlockingReadNorFlash::capacity(&f), 1024);
        assert_eq!(AsyncReadNorFlash::capacity(&f), 1024);
        assert_eq!(<Small as BlockingNorFlash>::ERASE_SIZE, 256);
        assert_eq!(<Small as AsyncNorFlash>::WRITE_SIZE, 4);
        assert!(f.is_powered() && f.is_strict() && !f.is_ecc());
        assert!(Small::new_ecc().is_ecc());
        let d = std::format!("{f:?}");
        assert!(d.contains("SimFlash") && d.len() < 500);
    }

    #[test]
    fn alignment_and_bounds() {
        let mut f = SimFlash::<256, 4, 2, 8>::new();
        assert_eq!(w(&mut f, 4, &[0; 8]), Err(SimFlashError::NotAligned));
        assert_eq!(w(&mut f, 8, &[0; 4]), Err(SimFlashError::NotAligned));
        assert_eq!(w(&mut f, 1024, &[0; 8]), Err(SimFlashError::OutOfBounds));
        assert_eq!(w(&mut f, u32::MAX - 3, &[0; 8]), Err(SimFlashError::OutOfBounds));
        assert_eq!(w(&mut f, 248, &[0; 16]), Err(SimFlashError::CrossesPage));
        let mut buf = [0u8; 3];
        assert_eq!(r(&mut f, 0, &mut buf), Err(SimFlashError::NotAligned));
        assert_eq!(r(&mut f, 1, &mut buf[..2]), Err(SimFlashError::NotAligned));
        assert_eq!(r(&mut f, 1024, &mut buf[..2]), Err(SimFlashError::OutOfBounds));
        assert_eq!(e(&mut f, 1, 256), Err(SimFlashError::NotAligned));
        assert_eq!(e(&mut f, 0, 100), Err(SimFlashError::NotAligned));
        assert_eq!(e(&mut f, 512, 256), Err(SimFlashError::OutOfBounds));
        assert_eq!(e(&mut f, 0, 1280), Err(SimFlashError::OutOfBounds));
        // Nothing changed and nothing was counted.
        assert!(f.as_bytes().iter().all(|&b| b == 0xFF));
        assert_eq!(f.stats(), FlashStats::default());
        assert_eq!(f.ops(), 0);
        // Edge cases that are valid.
        assert_eq!(w(&mut f, 1016, &[0; 8]), Ok(()));
        assert_eq!(w(&mut f, 1024, &[]), Ok(()));
        assert_eq!(e(&mut f, 1024, 1024), Ok(()));
        assert_eq!(r(&mut f, 254, &mut [0; 4]), Ok(())); // reads may span pages
        assert_eq!(SimFlashError::NotAligned.kind(), NorFlashErrorKind::NotAligned);
        assert_eq!(SimFlashError::OutOfBounds.kind(), NorFlashErrorKind::OutOfBounds);
        assert_eq!(SimFlashError::PowerCut.kind(), NorFlashErrorKind::Other);
        assert_eq!(SimFlashError::CrossesPage.kind(), NorFlashErrorKind::Other);
    }

    #[test]
    fn read_returns_content() {
        let mut f = Small::new();
        let data: Vec<u8> = (0..32).collect();
        w(&mut f, 224, &data).unwrap();
        let mut buf = [0u8; 40];
        r(&mut f, 220, &mut buf).unwrap();
        assert_eq!(&buf[..4], &[0xFF; 4]);
        assert_eq!(&buf[4..36], &data[..]);
        assert_eq!(&buf[36..], &[0xFF; 4]);
        assert_eq!(&f.page(0)[224..], &data[..]);
    }

    #[test]
    fn new_in_place_on_heap() {
        type Big = SimFlash<4096, 64, 4, 8>;
        let mut b = Box::<Big>::new_uninit();
        Big::new_in_place(&mut b);
        // Safety: new_in_place initialised every field.
        let mut f = unsafe { b.assume_init() };
        assert_eq!(f.as_bytes().len(), 256 * 1024);
        assert!(f.as_bytes().iter().all(|&b| b == 0xFF));
        assert!(f.is_powered() && f.is_strict() && !f.is_ecc() && !f.is_torn_unreadable());
        assert_eq!(f.unreadable_words(), 0);
        assert_eq!(f.stats(), FlashStats::default());
        assert_eq!(f.page_erases(63), 0);
        w(&mut *f, 4096 * 63, &[0; 8]).unwrap();
        assert_eq!(w(&mut *f, 4096 * 63, &[0xFF; 8]), Err(SimFlashError::NotErased));
        // Every word state starts erased: ECC mode accepts a first write anywhere.
        f.set_ecc(true);
        f.set_torn_unreadable(true);
        w(&mut *f, 8, &[0; 8]).unwrap();
        assert_eq!(w(&mut *f, 8, &[0; 8]), Err(SimFlashError::WordRewritten));
        f.cut_power_after(Some(3));
        assert_eq!(w(&mut *f, 4096, &[0; 16]), Err(SimFlashError::PowerCut));
        f.restore_power();
        assert_eq!(f.unreadable_words(), 1);
        assert_eq!(r(&mut *f, 4096, &mut [0; 4]), Err(SimFlashError::Unreadable));
    }

    #[test]
    fn static_construction() {
        static FLASH: std::sync::Mutex<SimFlash<64, 2, 1, 1>> = std::sync::Mutex::new(SimFlash::new());
        let mut f = FLASH.lock().unwrap();
        w(&mut *f, 0, &[1]).unwrap();
        assert_eq!(f.as_bytes()[0], 1);
    }
}
