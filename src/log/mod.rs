//! The log: erase pages used as a ring, records appended at the head, pages reclaimed at the
//! tail. This layer knows pages, records, liveness and space; it knows nothing of Paho.
//!
//! Invariants (see `docs/DESIGN.md` for why they hold across power loss):
//! - Pages in the log are consecutive in ring order with consecutive sequence numbers, from the
//!   tail (oldest) to the head (newest). Every other page is free.
//! - At least one free page exists whenever the log is not empty (compaction's reserve).
//! - A word is written at most once between erases: appends only move forward; after an
//!   interrupted write (power cut, failed write, dropped future) writing resumes past
//!   everything that write can have touched, behind a `Sync` record, or the page is sealed.
//!   Such a page is read with every CRC checked (`F_TORN`), and the next page header says so.
//! - The newest event for a key (put, tombstone, batch bit or clear) decides its state.
//!
//! Nothing here allocates; RAM is [`PageInfo`] per page plus a few words.

use embedded_storage_async::nor_flash::NorFlash;

use crate::codec::{
    Binding, CRC, CRC_INIT, ERASED_TAG, HeaderState, MAX_BATCH_DATA, MAX_FRAGMENT_DATA, PAGE_HEADER_LEN, PageHeader,
    RECORD_OVERHEAD, RecordType, TAG_LEN, Tag, TagError, crc_final, crc_update, full_id, id_high_of, le32, round_up,
    stored_len,
};
use crate::error::{Error, GeometryError};
use crate::key::{Key, Kind};

/// The namespace whose records stay out of the page summaries (the identity registry).
const UNSUMMARIZED_NS: u64 = crate::identity::REGISTRY_NS;

/// Keys resolved per liveness pass, and the capacity of the deferred-removal set.
pub const BATCH: usize = 32;
/// Keys gathered per pass over the log by `Store::keys`, which makes as many passes as it takes
/// to fill the caller's slice: the stack holds one batch, whatever the slice's length.
pub const KEYS_BATCH: usize = 16;
/// Puts remembered with their location, so removing or reading a recent key needs no scan.
const RECENT: usize = 32;
/// Key cursors whose position compaction keeps exact (DESIGN.md section 11).
pub const KEY_CURSORS: usize = 4;
const RECENT_EMPTY: u32 = u32::MAX;
/// A record is split at a page end only if at least this much data fits before it; smaller
/// tails are left unused so small records stay in one piece (one read, one CRC).
const MIN_SPLIT: usize = 64;
/// Bytes staged per flash write call: a multiple of every supported WRITE_SIZE.
const STAGE: usize = 128;
const F_CLEAR: u8 = 1;
const F_MOVED: u8 = 2;
/// A free page known blank (DESIGN.md section 23): erased by this mount (with [`F_ERASED`]) or
/// read back blank by it while not [`F_DIRTY`], and nothing programmed in it since. RAM only:
/// mount never sets it, so after a remount the page is checked or erased again as any other.
const F_BLANK: u8 = 8;
/// With [`F_BLANK`]: this mount erased the page (`lo` holds the erase count its header will
/// carry, counting that erase once).
const F_ERASED: u8 = 4;
const F_DIRTY: u8 = 16;
/// With [`F_DIRTY`]: the page reads blank but may hold a header write torn without a visible
/// trace (the page after the head at mount); erased only when a write may reach it, so that a
/// boot loop calling maintenance does not erase it at every boot (maintain.rs).
const F_SUSPECT: u8 = 32;
/// The page ended in an interrupted write: every record's CRC is checked when scanning it.
const F_TORN: u8 = 64;
/// A log page holding a record of the identity registry's namespace, which stays out of the
/// id ranges (`PageInfo::note_in`): lookups in that namespace scan these pages only.
const F_REGISTRY: u8 = 128;

type Res<T, F> = Result<T, Error<<F as embedded_storage_async::nor_flash::ErrorType>::Error>>;

/// What the first write after mount does with the rest of the head page (append.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadPlan {
    /// No room for a record: nothing.
    Done,
    /// Untouched: resume at this offset, behind a Sync record (a tag word may be torn unseen).
    Clean(u32),
    /// Garbage in a page of nothing but context: give the page back (I7).
    Retract,
    /// Garbage: resume behind a Sync record at this offset, or seal the page if it is too short.
    Torn(u32),
}

/// What the store keeps in RAM per page: enough to skip pages when looking for a key and to
/// know when a page holds nothing live.
#[derive(Debug, Clone, Copy)]
pub struct PageInfo {
    /// Smallest and largest key id of any put or removal in the page. For a free page flagged
    /// [`F_ERASED`], `lo` is instead the erase count its header will carry (maintain.rs).
    lo: u32,
    hi: u32,
    /// Charge of the live values whose first fragment is in the page
    /// ([`Log::value_bytes`] each): exact.
    live: u32,
    /// Bytes of context records (Namespace, IdHigh, Origin) in the page, charged while the
    /// page holds anything live.
    ctx: u16,
    /// Bit k: a put or removal of kind k is in the page.
    kinds: u8,
    flags: u8,
    /// Bytes interrupted writes took in the page beyond their own records: each skipped run
    /// up to and including the Sync record behind it, or the rest of a page sealed at garbage.
    /// Charged like live data until the page is reclaimed (space.rs, DESIGN.md section 9).
    damage: u32,
}

impl PageInfo {
    const FREE: PageInfo = PageInfo {
        lo: u32::MAX,
        hi: 0,
        live: 0,
        ctx: 0,
        kinds: 0,
        flags: 0,
        damage: 0,
    };

    fn note(&mut self, kind: Kind, lo: u32, hi: u32) {
        self.kinds |= 1 << kind.code();
        self.lo = self.lo.min(lo);
        self.hi = self.hi.max(hi);
    }

    fn may_hold(&self, key: Key) -> bool {
        self.flags & F_CLEAR != 0
            || (self.kinds & (1 << key.kind().code()) != 0 && self.lo <= key.id() && key.id() <= self.hi)
    }

    /// [`Self::note`] for a record of namespace `ns`. The identity registry's records are left
    /// out: their ids are namespace hashes (`Key::command(hash)`), and one of them in a page's
    /// id range would make every command-key lookup scan that page (and, as compaction carries
    /// the entry along, always some page). Such a page is flagged [`F_REGISTRY`] instead, and
    /// lookups in that namespace scan the flagged pages ([`Self::may_hold_in`]).
    fn note_in(&mut self, ns: u64, kind: Kind, lo: u32, hi: u32) {
        if ns == UNSUMMARIZED_NS {
            self.flags |= F_REGISTRY;
        } else {
            self.note(kind, lo, hi);
        }
    }

    /// [`Self::may_hold`] for a key of namespace `ns`: for the registry's, whether the page
    /// holds any registry record (see [`Self::note_in`]).
    fn may_hold_in(&self, ns: u64, key: Key) -> bool {
        if ns == UNSUMMARIZED_NS {
            self.flags & (F_REGISTRY | F_CLEAR) != 0
        } else {
            self.may_hold(key)
        }
    }
}

/// The write or scan context: what records do not repeat because it rarely changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ctx {
    ns: u64,
    hi_c: u16,
    hi_q: u16,
    /// For puts moved by compaction: origin page seq and ordinal of the next put.
    origin: Option<(u32, u32)>,
}

impl Ctx {
    fn from_header(h: &PageHeader) -> Ctx {
        Ctx {
            ns: h.namespace,
            hi_c: h.id_high,
            hi_q: h.id_high,
            origin: None,
        }
    }

    fn hi(&self, kind: Kind) -> u16 {
        match kind {
            Kind::Command => self.hi_c,
            Kind::Queued => self.hi_q,
            _ => 0,
        }
    }

    /// The key a Put or Tombstone with `tag` names in this context.
    fn key_of(&self, tag: Tag) -> Option<Key> {
        match tag.ty {
            RecordType::Put(_) | RecordType::Tombstone => {
                let kind = tag.kind()?;
                Key::new(kind, full_id(kind, tag.id_low, self.hi(kind)))
            }
            _ => None,
        }
    }

    /// What the CRC of a record with `tag` covers besides its bytes when it is read or written
    /// in this context (SPEC section 4). Writer and readers both derive it here, so a record
    /// read in another context than it was written in fails its CRC.
    fn binding(&self, tag: Tag) -> Binding {
        Binding::of(tag.ty, self.ns, self.key_of(tag).map_or(0, |k| k.id()))
    }
}

/// Insertion order of a put: (page seq, put index in page), or its origin if it was moved,
/// then where the record is now (page seq, offset), which orders the copies an interrupted
/// compaction leaves and makes every stamp unique.
pub type Stamp = (u32, u32, u64);

/// A key cursor as the caller holds it: the stamp of the last key listed, the count of
/// records compaction had moved when it was listed, and the listing's id (0 before its first
/// call).
pub type CursorPos = (Stamp, u32, u32);

/// One tracked key cursor: the position handed out, and where that position is now (moved
/// along by every compaction copy, keys.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CursorSlot {
    issued: CursorPos,
    now: Stamp,
    used: u32,
}

/// The origin part of a [`Stamp`], which moved records carry.
pub type Origin = (u32, u32);

/// Where the newest event of a key left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// No value: never written, removed, or cleared.
    Absent,
    /// The value's first fragment.
    At {
        /// Page of the first fragment.
        page: u16,
        /// Offset of the first fragment in the page.
        off: u32,
        /// Bytes the record takes on flash, all fragments.
        stored: u32,
        /// Length of the value.
        len: u32,
    },
}

/// One record met by a scan.
#[derive(Debug, Clone, Copy)]
struct Entry {
    off: u32,
    tag: Tag,
    ns: u64,
    key: Option<Key>,
    stamp: Stamp,
    aux: [u8; 8],
    /// For a `Batch`: ids covered, up to and including the highest set bit (0 if none).
    span: u32,
}

#[derive(Debug, Clone, Copy)]
struct Cursor {
    page: u16,
    off: u32,
    end: u32,
    seq: u32,
    puts: u32,
    ctx: Ctx,
    /// A structurally broken record stopped the scan (outside torn pages: damage).
    damaged: bool,
    /// In a torn page: garbage was met (and skipped if a Sync followed).
    skipped: bool,
    /// Bytes skipped to reach a Sync record, and Sync records (the page's damage so far).
    damage: u32,
    /// In a torn page: the scan ended at garbage with no Sync after it.
    torn_end: bool,
}

/// What mounting found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MountReport {
    /// Pages of the log whose header was missing or wrong: their records are lost.
    pub damaged_pages: u32,
    /// Pages where a structurally broken record cut the scan short (records after it lost).
    pub damaged_records: u32,
    /// The head page ends in the remains of an interrupted write (expected after a power cut;
    /// not damage). Writing resumes past it.
    pub torn_tail: bool,
    /// Pages in the log.
    pub log_pages: u32,
}

/// A source of value bytes for an append: caller memory, or a record already on flash.
pub enum Source<'a> {
    /// Scatter-gather parts, consumed in order.
    Ram {
        /// The parts.
        parts: &'a [&'a [u8]],
        /// Index of the current part.
        idx: usize,
        /// Bytes consumed of the current part.
        pos: usize,
    },
    /// A record on flash, read fragment by fragment.
    Flash(Chain),
}

/// A reader over a record's fragments, checking each fragment's CRC as it ends.
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    page: u16,
    frag_off: u32,
    tag: Tag,
    pos: u32,
    crc_state: u32,
    done: bool,
}

/// The log over a flash of `N` pages.
pub struct Log<F: NorFlash, const N: usize> {
    flash: F,
    pages: [PageInfo; N],
    head: u16,
    len: u16,
    head_seq: u32,
    head_off: u32,
    head_checked: bool,
    head_ctx: Ctx,
    head_puts: u32,
    erase_max: u32,
    pending: [Key; BATCH],
    pending_len: u8,
    /// The namespace the pending removals belong to.
    pending_ns: u64,
    max_value: u32,
    /// The longest live value seen (at mount or since): the model's `V` if above `max_value`.
    max_live_len: u32,
    /// Capacity and reserve of the space model (see `space.rs`).
    cap: u32,
    keep: u32,
    report: MountReport,
    /// The head page was sealed after an interrupted write: the next page header says so.
    prev_torn: bool,
    /// A record write is under way (see [`Self::write_record`]).
    in_flight: bool,
    /// The head page holds nothing but its header and context records (and the remains of
    /// interrupted writes): erasing it loses nothing (DESIGN.md section 12, I6).
    /// Damage charged at mount for garbage the head page's scan ended at (the rest of the
    /// page, the most it can be) until the recovery measures it (`check_head`).
    /// End of the head page's last record: where mount's scan of it stops (`head_off` is
    /// past it when the page is sealed or writing resumes behind a skip).
    head_end: u32,
    head_guess: u32,
    /// What mount found at the end of the head page, for [`Log::check_head`] to carry out.
    head_plan: Option<HeadPlan>,
    head_bare: bool,
    /// The `prev_torn` flag of the head page's header: how the page before it ended.
    head_prev_torn: bool,
    /// Whether the client operation in progress started inside the space model (space.rs):
    /// the debug assertions that compaction finds room hold only then.
    op_sound: bool,
    /// The newest puts of namespace `recent_ns`: (id, kind:3 | page:12 | offset:17). An entry
    /// is dropped whenever its record stops being its key's newest event, so a hit is exact.
    recent: [(u32, u32); RECENT],
    recent_next: u8,
    recent_ns: u64,
    /// Records moved by compaction since mount: a cursor listed at another count needs its
    /// slot in `cursors` to know where it is now.
    moves: u32,
    /// The most recently used key cursors, kept exact across compaction.
    cursors: [Option<CursorSlot>; KEY_CURSORS],
    /// Use counter for the least-recently-used replacement of `cursors`.
    cursor_uses: u32,
    /// Namespaces of the records in the log: `None` none yet, `Some(Some(ns))` only `ns`,
    /// `Some(None)` more than one (conservative: never narrowed again until the log is empty).
    log_ns: Option<Option<u64>>,
    /// Compaction steps [`Log::maintain`] made since the last client write's room check
    /// (`make_room`): bounds a maintenance loop that compaction cannot finish.
    maint_steps: u16,
}

const fn page_size<F: NorFlash>() -> u32 {
    F::ERASE_SIZE as u32
}

/// The record alignment unit, `max(READ_SIZE, WRITE_SIZE)` ([`crate::codec::alignment`]).
fn ws<F: NorFlash>() -> usize {
    crate::codec::alignment(F::READ_SIZE, F::WRITE_SIZE)
}

mod append;
mod census;
mod compact;
#[cfg(all(test, target_pointer_width = "64"))]
mod future_sizes;
mod io;
mod keys;
mod lookup;
mod maintain;
mod mount;
mod ops;
mod pending;
mod recent;
mod scan;
mod space;
mod value;

pub use census::NsCount;
pub use maintain::Maintenance;

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// The report of the last mount.
    pub fn report(&self) -> MountReport {
        self.report
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// The flash, for statistics.
    pub fn flash(&self) -> &F {
        &self.flash
    }

    /// Pages currently in the log.
    pub fn log_pages(&self) -> u32 {
        self.len as u32
    }

    pub(super) fn ring_back(&self, p: u16, d: u16) -> u16 {
        ((p as usize + N - d as usize % N) % N) as u16
    }

    pub(super) fn next_page(p: u16) -> u16 {
        ((p as usize + 1) % N) as u16
    }

    /// Distance of page `p` behind the head, if it is in the log.
    pub(super) fn age(&self, p: u16) -> Option<u16> {
        let d = ((self.head as usize + N - p as usize) % N) as u16;
        (self.len > 0 && d < self.len).then_some(d)
    }

    pub(super) fn seq_of(&self, p: u16) -> u32 {
        self.head_seq - self.age(p).unwrap_or(0) as u32
    }

    pub(super) fn addr(p: u16, off: u32) -> u32 {
        p as u32 * page_size::<F>() + off
    }

    /// The configured value limit.
    pub fn max_value(&self) -> u32 {
        self.max_value
    }
}

impl Chain {
    /// A reader positioned at the start of the fragment at `(page, off)` with `tag`; `binding`
    /// is what its CRC covers before the tag ([`Binding::NONE`] for a `Cont`).
    pub fn start(page: u16, off: u32, tag: Tag, binding: &Binding) -> Chain {
        let state = crc_update(CRC_INIT, binding.as_bytes());
        Chain {
            page,
            frag_off: off,
            tag,
            pos: 0,
            crc_state: crc_update(state, &tag.encode().to_le_bytes()),
            done: false,
        }
    }

    /// A reader of the value of `key` in namespace `ns` whose first fragment is at
    /// `(page, off)` with `tag`.
    pub fn value(page: u16, off: u32, tag: Tag, ns: u64, key: Key) -> Chain {
        Chain::start(page, off, tag, &Binding::of(tag.ty, ns, key.id()))
    }
}

/// `v`, copied so that LLVM does not forward the copy into a `memmove` call. Copying a small
/// value between two places of a future that LLVM cannot prove disjoint becomes
/// `__aeabi_memmove` on thumbv7em, and one such call links compiler-builtins' 1.5 KB
/// `memmove` (docs/DESIGN.md section 25). Used where the code-size probe found those copies;
/// a no-op for the program's meaning.
#[inline(always)]
fn no_memmove<T: Copy>(v: T) -> T {
    core::hint::black_box(v)
}

/// A context's origin rebuilt from its fields rather than copied whole, for the same reason as
/// [`no_memmove`]; here without `black_box`, whose memory barrier costs more than it saves
/// where mount is inlined into a bigger program (the outbox's restore).
#[allow(clippy::map_identity)] // The rebuild is the point.
#[inline(always)]
fn rebuilt_origin(o: Option<(u32, u32)>) -> Option<(u32, u32)> {
    o.map(|(seq, ord)| (seq, ord))
}

impl<'a> Source<'a> {
    /// A source over caller memory.
    pub fn ram(parts: &'a [&'a [u8]]) -> Source<'a> {
        Source::Ram { parts, idx: 0, pos: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bitwise CRC-32C this module used before `crc_update` went through the `crc` crate:
    /// the reference the crate-based raw-state update is checked against.
    fn bitwise_update(state: u32, data: &[u8]) -> u32 {
        let mut s = state;
        for &b in data {
            s ^= b as u32;
            for _ in 0..8 {
                s = if s & 1 != 0 { (s >> 1) ^ 0x82F6_3B78 } else { s >> 1 };
            }
        }
        s
    }

    #[test]
    fn crc_state_matches_the_crc_crate() {
        let word = 0x1234_5678u32.to_le_bytes();
        let data = b"some payload bytes";
        let s = crc_update(crc_update(CRC_INIT, &word), data);
        use crate::codec::record_crc;
        assert_eq!(crc_final(s), record_crc(&Binding::NONE, 0x1234_5678, &[data]));
        assert_eq!(s, bitwise_update(bitwise_update(CRC_INIT, &word), data));
        // The CRC-32C check value.
        assert_eq!(crc_final(crc_update(CRC_INIT, b"123456789")), 0xE306_9283);
    }

    /// Every length 0..=300 from every one of a set of start states, in one piece and split at
    /// every point: the raw state after each update equals the bitwise one.
    #[test]
    fn crc_state_matches_bitwise_exhaustively() {
        let data: [u8; 300] = core::array::from_fn(|i| (i as u32).wrapping_mul(0x9E37_79B9).rotate_left(7) as u8);
        for start in [CRC_INIT, 0, 1, 0x8000_0000, 0xDEAD_BEEF, 0x82F6_3B78] {
            for len in 0..=data.len() {
                let d = &data[..len];
                let whole = bitwise_update(start, d);
                assert_eq!(crc_update(start, d), whole, "len {len} start {start:#x}");
                if len <= 64 {
                    for cut in 0..=len {
                        assert_eq!(crc_update(crc_update(start, &d[..cut]), &d[cut..]), whole);
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn crc_state_matches_bitwise_on_random_splits(
            start: u32,
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..2100),
            cuts in proptest::collection::vec(0usize..2100, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut s = start;
            let mut at = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                s = crc_update(s, &data[at..c]);
                at = c;
            }
            proptest::prop_assert_eq!(s, bitwise_update(start, &data));
            if start == CRC_INIT {
                proptest::prop_assert_eq!(crc_final(s), CRC.checksum(&data));
            }
        }
    }
}
