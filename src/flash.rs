//! Flash helpers: a simulated NOR flash for tests, a blocking-to-async
//! adapter and a minimal executor.
//!
//! * [`SimFlash`] is a RAM-backed NOR flash that enforces the rules real parts
//!   impose (erase before program, only 1 -> 0 transitions, alignment, page
//!   boundaries, optionally "write each word once" as on ECC flash) and that
//!   can simulate a power cut at any byte or at any operation. It exists so
//!   that the store's crash-safety claims can be tested exhaustively on a
//!   host, and so that users can do the same with their own code.
//! * [`BlockingFlash`] turns any blocking
//!   [`embedded_storage::nor_flash::NorFlash`] into an
//!   [`embedded_storage_async::nor_flash::NorFlash`], because the store is
//!   written against the async traits only (one code path to test) while many
//!   HALs only ship blocking drivers.
//! * [`block_on`] drives such never-pending futures to completion without an
//!   async runtime, for blocking callers and for tests.

use core::fmt;
use core::future::Future;
use core::mem::MaybeUninit;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash as BlockingMultiwriteNorFlash, NorFlash as BlockingNorFlash, NorFlashError,
    NorFlashErrorKind, ReadNorFlash as BlockingReadNorFlash,
};
use embedded_storage_async::nor_flash::{
    MultiwriteNorFlash as AsyncMultiwriteNorFlash, NorFlash as AsyncNorFlash, ReadNorFlash as AsyncReadNorFlash,
};

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

/// Word states in [`SimFlash`]'s shadow array. `0` is the erased state, so
/// that zeroed memory ([`SimFlash::new_in_place`]) is a freshly erased flash.
const WORD_ERASED: u8 = 0;
/// Programmed since the last erase (including a torn program that left it
/// readable).
const WORD_WRITTEN: u8 = 1;
/// Programmed (or half-erased) with inconsistent ECC: every read of it fails
/// until its page is erased. Counts as programmed for writes.
const WORD_UNREADABLE: u8 = 2;

/// Default PRNG seed; any fixed non-zero value works, it only has to make
/// runs reproducible.
const DEFAULT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// Small, `Copy` part of the simulator state. Kept in one struct so that
/// [`SimFlash::new_in_place`] can initialise it with a single write.
#[derive(Debug, Clone, Copy)]
struct State {
    stats: FlashStats,
    ops: u64,
    ecc: bool,
    strict: bool,
    /// Torn programs and erases leave unreadable words.
    torn_unreadable: bool,
    /// Number of words in the [`WORD_UNREADABLE`] state (a fast path for
    /// reads: while it is 0 no read can fail with `Unreadable`).
    unreadable: usize,
    powered: bool,
    /// Bytes that may still be programmed/erased before power fails.
    byte_budget: Option<u64>,
    /// Number of mutating operations that still complete before the one
    /// that gets torn.
    ops_until_cut: Option<u64>,
    rng: u64,
}

impl State {
    const fn new(ecc: bool) -> Self {
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
    data: [[u8; PAGE]; PAGES],
    /// `words[p][w]` is the state of word `w` (of `PAGE / WRITE` words) of
    /// page `p`: [`WORD_ERASED`], [`WORD_WRITTEN`] (programmed since the
    /// page's last erase) or [`WORD_UNREADABLE`]. Only the first
    /// `PAGE / WRITE` entries of each row are used; a packed array would be
    /// smaller but its size cannot be expressed with stable const generics.
    words: [[u8; PAGE]; PAGES],
    page_erases: [u64; PAGES],
    page_write_bytes: [u64; PAGES],
    page_read_bytes: [u64; PAGES],
    st: State,
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

    /// Puts word `word` of page `page` in the unreadable state.
    fn set_unreadable(&mut self, page: usize, word: usize) {
        let state = &mut self.words[page][word];
        if *state != WORD_UNREADABLE {
            *state = WORD_UNREADABLE;
            self.st.unreadable += 1;
        }
    }

    /// Whether the byte range `off..end` (non-empty, in bounds) overlaps an
    /// unreadable word. Words never span pages (`PAGE % WRITE == 0`).
    fn overlaps_unreadable(&self, off: usize, end: usize) -> bool {
        if self.st.unreadable == 0 || off >= end {
            return false;
        }
        let (first, last) = (off / WRITE, (end - 1) / WRITE);
        let per_page = PAGE / WRITE;
        (first..=last).any(|w| self.words[w / per_page][w % per_page] == WORD_UNREADABLE)
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
    fn rand_below(&mut self, n: usize) -> usize {
        (self.next_rand() % n as u64) as usize
    }

    fn rand_byte(&mut self) -> u8 {
        (self.next_rand() >> 56) as u8
    }

    fn power_fail(&mut self) {
        self.st.powered = false;
        self.st.byte_budget = None;
        self.st.ops_until_cut = None;
    }

    fn check_powered(&self) -> Result<(), SimFlashError> {
        if self.st.powered {
            Ok(())
        } else {
            Err(SimFlashError::PowerCut)
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

    /// Called once per mutating operation that passed validation, with its
    /// size in `units` (bytes for writes, pages for erases) each costing
    /// `unit_cost` bytes of budget. Returns `Some(k)` if power fails during
    /// this operation: units `0..k` complete, unit `k` (if `k < units`) is
    /// torn, later units are untouched.
    fn decide_cut(&mut self, units: usize, unit_cost: u64) -> Option<usize> {
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

    fn read_impl(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimFlashError> {
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

    fn write_impl(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimFlashError> {
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
        self.data[page] = [0xFF; PAGE];
        if self.st.unreadable > 0 {
            self.st.unreadable -= self.words[page].iter().filter(|&&w| w == WORD_UNREADABLE).count();
        }
        self.words[page] = [WORD_ERASED; PAGE];
        self.page_erases[page] += 1;
        self.st.stats.erases += 1;
    }

    /// Leaves `page` half-erased: each byte becomes `old | rnd`, then nudged
    /// so that the page matches neither the old content nor the erased state
    /// whenever that is possible (it is not for a page with one 0 bit).
    fn garble_page(&mut self, page: usize) {
        let old = self.data[page];
        for (i, &o) in old.iter().enumerate() {
            let rnd = self.rand_byte();
            self.data[page][i] = o | rnd;
        }
        let cur = &mut self.data[page];
        // The random outcome can look like a clean result (always for tiny
        // pages, rarely otherwise). Tests of torn erases are only meaningful
        // if the page is really in between, so fix up the first programmed
        // byte `i` in that case.
        if let Some(i) = old.iter().position(|&b| b != 0xFF) {
            let looks_erased = cur.iter().all(|&b| b == 0xFF);
            if looks_erased || *cur == old {
                let lowest_zero = 1u8 << (!old[i]).trailing_zeros();
                cur[i] = if old[i].count_zeros() >= 2 {
                    // Strictly between old and erased on its own.
                    old[i] | lowest_zero
                } else if looks_erased {
                    // Differs from `old` as long as another byte was
                    // programmed (it is erased now).
                    old[i]
                } else {
                    // Differs from erased as long as another byte was
                    // programmed (it kept its old value).
                    0xFF
                };
            }
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

    /// Makes a pseudo-random non-empty subset of the words of `page` (whose
    /// erase was just torn) unreadable: one word, a run of words, about one
    /// in eight, or about half of them.
    fn unreadable_after_torn_erase(&mut self, page: usize) {
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

    fn erase_impl(&mut self, from: u32, to: u32) -> Result<(), SimFlashError> {
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

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> ErrorType
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
    type Error = SimFlashError;
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> BlockingReadNorFlash
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
    const READ_SIZE: usize = READ;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.read_impl(offset, bytes)
    }

    fn capacity(&self) -> usize {
        Self::CAPACITY
    }
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> BlockingNorFlash
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.erase_impl(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.write_impl(offset, bytes)
    }
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> BlockingMultiwriteNorFlash
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> AsyncReadNorFlash
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
    const READ_SIZE: usize = READ;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.read_impl(offset, bytes)
    }

    fn capacity(&self) -> usize {
        Self::CAPACITY
    }
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> AsyncNorFlash
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = PAGE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.erase_impl(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.write_impl(offset, bytes)
    }
}

impl<const PAGE: usize, const PAGES: usize, const READ: usize, const WRITE: usize> AsyncMultiwriteNorFlash
    for SimFlash<PAGE, PAGES, READ, WRITE>
{
}

/// Adapts a blocking [`embedded_storage::nor_flash::NorFlash`] into an
/// [`embedded_storage_async::nor_flash::NorFlash`].
///
/// The returned futures complete on their first poll (they never return
/// `Pending`), so they can be driven by any executor or by [`block_on`].
/// The async `MultiwriteNorFlash` marker is implemented when the inner flash
/// implements the blocking one. The blocking traits are forwarded too, so the
/// wrapper can be handed to blocking code as well.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockingFlash<F>(pub F);

impl<F> BlockingFlash<F> {
    /// Wraps `flash`.
    pub const fn new(flash: F) -> Self {
        Self(flash)
    }

    /// Returns the wrapped flash.
    pub fn into_inner(self) -> F {
        self.0
    }

    /// Shared access to the wrapped flash.
    pub fn inner(&self) -> &F {
        &self.0
    }

    /// Exclusive access to the wrapped flash (e.g. to arm a power cut on a
    /// [`SimFlash`]).
    pub fn inner_mut(&mut self) -> &mut F {
        &mut self.0
    }
}

impl<F: ErrorType> ErrorType for BlockingFlash<F> {
    type Error = F::Error;
}

impl<F: BlockingReadNorFlash> AsyncReadNorFlash for BlockingFlash<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: BlockingNorFlash> AsyncNorFlash for BlockingFlash<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}

impl<F: BlockingMultiwriteNorFlash> AsyncMultiwriteNorFlash for BlockingFlash<F> {}

impl<F: BlockingReadNorFlash> BlockingReadNorFlash for BlockingFlash<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: BlockingNorFlash> BlockingNorFlash for BlockingFlash<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}

impl<F: BlockingMultiwriteNorFlash> BlockingMultiwriteNorFlash for BlockingFlash<F> {}

/// Runs a future to completion on the current thread by polling it in a
/// loop with a no-op waker.
///
/// Only for futures that complete without external wakeups, such as the
/// ones returned by [`BlockingFlash`], [`SimFlash`] or a store driven by
/// them: nothing ever wakes the loop, so a future waiting on an interrupt,
/// a timer or another task would make this spin forever at 100% CPU.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    type Small = SimFlash<256, 4, 1, 4>;
    const PAGE: usize = 256;

    // Both trait families have `read`/`write`/`erase`, so tests go through
    // these helpers to stay unambiguous.
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

    async fn async_roundtrip<F: AsyncMultiwriteNorFlash>(f: &mut F) -> Result<[u8; 8], F::Error> {
        f.erase(0, F::ERASE_SIZE as u32).await?;
        f.write(0, &[1, 2, 3, 4, 5, 6, 7, 8]).await?;
        let mut buf = [0; 8];
        f.read(0, &mut buf).await?;
        Ok(buf)
    }

    #[test]
    fn async_impls() {
        let mut f = Small::new();
        assert_eq!(block_on(async_roundtrip(&mut f)), Ok([1, 2, 3, 4, 5, 6, 7, 8]));
        // Errors go through the async path too.
        let mut buf = [0u8; 4];
        assert_eq!(
            block_on(AsyncReadNorFlash::read(&mut f, 1024, &mut buf)),
            Err(SimFlashError::OutOfBounds)
        );
        f.cut_power_at_op(Some(0));
        assert_eq!(
            block_on(AsyncNorFlash::erase(&mut f, 0, 256)),
            Err(SimFlashError::PowerCut)
        );
    }

    #[test]
    fn blocking_flash_adapter() {
        let mut bf = BlockingFlash::new(Small::new());
        assert_eq!(block_on(async_roundtrip(&mut bf)), Ok([1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(<BlockingFlash<Small> as AsyncNorFlash>::ERASE_SIZE, 256);
        assert_eq!(<BlockingFlash<Small> as AsyncReadNorFlash>::READ_SIZE, 1);
        assert_eq!(AsyncReadNorFlash::capacity(&bf), 1024);
        bf.inner_mut().cut_power();
        assert!(!bf.inner().is_powered());
        assert_eq!(
            block_on(AsyncNorFlash::write(&mut bf, 0, &[0; 4])),
            Err(SimFlashError::PowerCut)
        );
        // Blocking traits are forwarded too.
        bf.inner_mut().restore_power();
        let mut buf = [0u8; 2];
        r(&mut bf, 0, &mut buf).unwrap();
        assert_eq!(buf, [1, 2]);
        let f = bf.into_inner();
        assert_eq!(f.stats().erases, 1);
    }

    #[test]
    fn block_on_spins_through_pending() {
        struct PendTwice(u8);
        impl Future for PendTwice {
            type Output = u8;
            fn poll(mut self: core::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u8> {
                if self.0 < 2 {
                    self.0 += 1;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    Poll::Ready(self.0)
                }
            }
        }
        assert_eq!(block_on(PendTwice(0)), 2);
        assert_eq!(block_on(async { 7 }), 7);
    }

    #[test]
    fn error_display() {
        use std::string::ToString;
        assert_eq!(SimFlashError::PowerCut.to_string(), "simulated power cut");
        let e: &dyn core::error::Error = &SimFlashError::NotErased;
        assert!(e.to_string().contains("0 -> 1"));
    }

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
