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
    CRC, ERASED_TAG, HeaderState, MAX_BATCH_DATA, MAX_FRAGMENT_DATA, PAGE_HEADER_LEN, PageHeader, RECORD_OVERHEAD,
    RecordType, TAG_LEN, Tag, TagError, full_id, id_high_of, le32, round_up, stored_len,
};
use crate::error::{Error, GeometryError};
use crate::key::{Key, Kind};

/// Keys resolved per liveness pass, and the capacity of the deferred-removal set.
pub const BATCH: usize = 32;
/// Keys returned per `keys()` call (each call is one pass over the log).
pub const KEYS_BATCH: usize = 16;
/// Puts remembered with their location, so removing or reading a recent key needs no scan.
const RECENT: usize = 32;
const RECENT_EMPTY: u32 = u32::MAX;
/// A record is split at a page end only if at least this much data fits before it; smaller
/// tails are left unused so small records stay in one piece (one read, one CRC).
const MIN_SPLIT: usize = 64;
/// Bytes staged per flash write call: a multiple of every supported WRITE_SIZE.
const STAGE: usize = 128;
/// Bytes a context record (IdHigh, Namespace, Origin) may take, for space estimates.
const CTX_COST: usize = 48;

const F_CLEAR: u8 = 1;
const F_MOVED: u8 = 2;
const F_EXACT: u8 = 4;
const F_BLANK: u8 = 8;
const F_DIRTY: u8 = 16;
/// The page ended in an interrupted write: every record's CRC is checked when scanning it.
const F_TORN: u8 = 64;

type Res<T, F> = Result<T, Error<<F as embedded_storage_async::nor_flash::ErrorType>::Error>>;

/// What the store keeps in RAM per page: enough to skip pages when looking for a key and to
/// know when a page holds nothing live.
#[derive(Debug, Clone, Copy)]
pub struct PageInfo {
    /// Smallest and largest key id of any put or removal in the page.
    lo: u32,
    hi: u32,
    /// Live bytes of records starting in the page, in 8-byte units, plus one unit per live
    /// record for its future tombstone. Exact with `F_EXACT`, else an upper bound.
    live: u16,
    /// Bit k: a put or removal of kind k is in the page.
    kinds: u8,
    flags: u8,
}

impl PageInfo {
    const FREE: PageInfo = PageInfo {
        lo: u32::MAX,
        hi: 0,
        live: 0,
        kinds: 0,
        flags: 0,
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
}

/// Insertion order of a put: (page seq, put index in page), or its origin if it was moved,
/// then where the record is now (page seq, offset), which orders the copies an interrupted
/// compaction leaves and makes every stamp unique.
pub type Stamp = (u32, u32, u64);

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
    report: MountReport,
    /// The head page was sealed after an interrupted write: the next page header says so.
    prev_torn: bool,
    /// A record write is under way (see [`Self::write_record`]).
    in_flight: bool,
    /// The newest puts of namespace `recent_ns`: (id, kind:3 | page:12 | offset:17). An entry
    /// is dropped whenever its record stops being its key's newest event, so a hit is exact.
    recent: [(u32, u32); RECENT],
    recent_next: u8,
    recent_ns: u64,
    /// Namespaces of the records in the log: `None` none yet, `Some(Some(ns))` only `ns`,
    /// `Some(None)` more than one (conservative: never narrowed again until the log is empty).
    log_ns: Option<Option<u64>>,
}

const fn page_size<F: NorFlash>() -> u32 {
    F::ERASE_SIZE as u32
}

fn ws<F: NorFlash>() -> usize {
    F::WRITE_SIZE
}

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Live units charged for a record that takes `stored` bytes: its size in 8-byte units
    /// plus the size of the tombstone that will remove it, held back so a remove never meets
    /// "full".
    pub fn units(stored: u32) -> u16 {
        let tombstone = stored_len(0, F::WRITE_SIZE) as u32;
        (stored.div_ceil(8) + tombstone.div_ceil(8)).min(u16::MAX as u32) as u16
    }

    /// Checks the geometry the crate supports (README "Geometry", `docs/DESIGN.md` section 2):
    /// the first rule broken, if any.
    pub fn check_geometry(flash: &F) -> Result<(), GeometryError> {
        let page = F::ERASE_SIZE;
        let pow2_32 = |x: usize| x.is_power_of_two() && x <= 32;
        if !pow2_32(F::READ_SIZE) {
            return Err(GeometryError::ReadSize {
                read_size: F::READ_SIZE,
            });
        }
        if !pow2_32(F::WRITE_SIZE) {
            return Err(GeometryError::WriteSize {
                write_size: F::WRITE_SIZE,
            });
        }
        if !(256..=128 * 1024).contains(&page) || page % 32 != 0 {
            return Err(GeometryError::PageSize { page_size: page });
        }
        if !(4..=4096).contains(&N) {
            return Err(GeometryError::PageCount { pages: N });
        }
        if flash.capacity() != N * page {
            return Err(GeometryError::Capacity {
                flash_bytes: flash.capacity(),
                expected: N * page,
            });
        }
        Ok(())
    }

    /// Bytes of a page available to records.
    pub fn payload() -> u32 {
        page_size::<F>() - PAGE_HEADER_LEN as u32
    }

    /// The largest value length the log accepts with the given configuration.
    pub fn max_value_limit() -> u32 {
        Self::payload() - 2 * (RECORD_OVERHEAD as u32 + 32)
    }

    /// Reads every page header and the head page, and rebuilds the RAM summary. Writes
    /// nothing: a power cut during mount changes nothing.
    pub async fn mount(mut flash: F, max_value: u32) -> Result<Self, (F, Error<F::Error>)> {
        if let Err(g) = Self::check_geometry(&flash) {
            return Err((flash, Error::BadGeometry(g)));
        }
        if max_value > Self::max_value_limit() {
            let g = GeometryError::ValueTooLarge {
                max_value_len: max_value as usize,
                limit: Self::max_value_limit() as usize,
            };
            return Err((flash, Error::BadGeometry(g)));
        }
        let _ = &mut flash;
        let mut log = Log {
            flash,
            pages: [PageInfo::FREE; N],
            head: (N - 1) as u16,
            len: 0,
            head_seq: 0,
            head_off: page_size::<F>(),
            head_checked: false,
            head_ctx: Ctx {
                ns: 0,
                hi_c: 0,
                hi_q: 0,
                origin: None,
            },
            head_puts: 0,
            erase_max: 0,
            pending: [Key::sent(0); BATCH],
            pending_len: 0,
            pending_ns: 0,
            max_value,
            report: MountReport::default(),
            prev_torn: false,
            in_flight: false,
            recent: [(0, RECENT_EMPTY); RECENT],
            recent_next: 0,
            recent_ns: 0,
            log_ns: None,
        };
        match log.mount_inner().await {
            Ok(()) => Ok(log),
            Err(e) => Err((log.flash, e)),
        }
    }

    async fn mount_inner(&mut self) -> Res<(), F> {
        let mut newest: Option<(u16, PageHeader)> = None;
        for p in 0..N as u16 {
            let h = self.read_header(p).await?;
            match h {
                HeaderState::Erased => self.pages[p as usize].flags = 0,
                HeaderState::Garbage => self.pages[p as usize].flags = F_DIRTY,
                HeaderState::UnknownVersion(found) => return Err(Error::UnsupportedVersion { found }),
                HeaderState::Valid(h) => {
                    self.pages[p as usize].flags = F_DIRTY;
                    self.erase_max = self.erase_max.max(h.erase_count);
                    if newest.is_none_or(|(_, n)| h.seq > n.seq) {
                        newest = Some((p, h));
                    }
                }
            }
        }
        let Some((head, hh)) = newest else { return Ok(()) };
        self.head = head;
        self.head_seq = hh.seq;

        // The head page first, reading data to check CRCs: only its end can be torn. Its Retire
        // records and header bound the log; everything older than the tail is garbage.
        // Scanned as a torn page: every CRC checked, garbage skipped up to a Sync record.
        self.pages[head as usize] = PageInfo {
            flags: F_TORN,
            ..PageInfo::FREE
        };
        let mut c = self.cursor(head, hh, page_size::<F>());
        let mut retired = hh.tail_seq;
        let mut lead_cont = 0u32;
        let mut in_chain = false;
        while let Some(e) = self.next_entry(&mut c).await? {
            if let RecordType::Retire = e.tag.ty {
                retired = retired.max(le32(&e.aux).saturating_add(1));
            }
            if e.tag.ty == RecordType::Cont && !in_chain {
                lead_cont += stored_len(e.tag.data_len(), ws::<F>()) as u32;
            }
            in_chain = e.tag.more;
            self.summarize(head, &e);
        }
        self.report.torn_tail = c.torn_end;
        if c.skipped {
            // Garbage from an earlier session sits in the head page: whichever session leaves
            // it must say so in the next page header.
            self.prev_torn = true;
        } else {
            self.pages[head as usize].flags &= !F_TORN;
        }
        self.head_off = c.off;
        self.head_ctx = c.ctx;
        self.head_puts = c.puts;
        let tail_seq = retired.min(hh.seq).max(hh.seq.saturating_sub(N as u32 - 1));
        self.len = (hh.seq - tail_seq + 1) as u16;

        // Older log pages, oldest first, tags only. Headers are read again rather than kept
        // from the first pass, so mount needs no per-page stack array; each page's successor
        // header (read one step ahead) says whether the page ended torn.
        let mut chain_start: Option<u16> = None;
        let valid = |h: HeaderState| match h {
            HeaderState::Valid(h) => Some(h),
            _ => None,
        };
        let mut next_h = if self.len > 1 {
            valid(self.read_header(self.ring_back(head, self.len - 1)).await?)
        } else {
            None
        };
        for d in (1..self.len).rev() {
            let p = self.ring_back(head, d);
            let expect = hh.seq - d as u32;
            let this_h = next_h;
            next_h = if d == 1 {
                Some(hh)
            } else {
                valid(self.read_header(self.ring_back(head, d - 1)).await?)
            };
            let Some(h) = this_h.filter(|h| h.seq == expect) else {
                self.report.damaged_pages += 1;
                self.pages[p as usize] = PageInfo {
                    flags: F_EXACT,
                    ..PageInfo::FREE
                };
                chain_start = None;
                continue;
            };
            let torn = next_h.is_some_and(|s| s.seq == expect + 1 && s.prev_torn);
            self.pages[p as usize] = PageInfo {
                flags: if torn { F_TORN } else { 0 },
                ..PageInfo::FREE
            };
            let mut c = self.cursor(p, h, page_size::<F>());
            while let Some(e) = self.next_entry(&mut c).await? {
                let stored = stored_len(e.tag.data_len(), ws::<F>()) as u32;
                match e.tag.ty {
                    RecordType::Cont => {
                        if let Some(s) = chain_start {
                            let info = &mut self.pages[s as usize];
                            info.live = info.live.saturating_add((stored / 8) as u16 + 1);
                        }
                    }
                    RecordType::Put(_) => chain_start = Some(p),
                    _ => chain_start = None,
                }
                if !e.tag.more && e.tag.ty == RecordType::Cont {
                    chain_start = None;
                }
                self.summarize(p, &e);
            }
            if c.damaged && !torn {
                self.report.damaged_records += 1;
            }
        }
        if let Some(s) = chain_start.filter(|_| lead_cont > 0) {
            let info = &mut self.pages[s as usize];
            info.live = info.live.saturating_add(Self::units(lead_cont));
        }
        self.report.log_pages = self.len as u32;
        Ok(())
    }

    /// Adds one scanned record to its page's summary (live upper bound, key range, flags).
    fn summarize(&mut self, p: u16, e: &Entry) {
        let stored = stored_len(e.tag.data_len(), ws::<F>()) as u32;
        if matches!(
            e.tag.ty,
            RecordType::Put(_) | RecordType::Tombstone | RecordType::Batch | RecordType::Clear
        ) {
            self.note_ns(e.ns);
        }
        let info = &mut self.pages[p as usize];
        match e.tag.ty {
            RecordType::Put(kind) => {
                let id = e.key.map_or(0, |k| k.id());
                info.note(kind, id, id);
                info.live = info.live.saturating_add(Self::units(stored));
            }
            RecordType::Tombstone => {
                if let Some(k) = e.key {
                    info.note(k.kind(), k.id(), k.id());
                }
            }
            RecordType::Batch => {
                if let (Some(kind), true) = (e.tag.kind(), e.span > 0) {
                    let base = le32(&e.aux[0..4]);
                    info.note(kind, base, base.saturating_add(e.span - 1));
                }
            }
            RecordType::Clear => info.flags |= F_CLEAR,
            RecordType::Origin => info.flags |= F_MOVED,
            _ => {}
        }
    }

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

    fn ring_back(&self, p: u16, d: u16) -> u16 {
        ((p as usize + N - d as usize % N) % N) as u16
    }

    fn next_page(p: u16) -> u16 {
        ((p as usize + 1) % N) as u16
    }

    /// Distance of page `p` behind the head, if it is in the log.
    fn age(&self, p: u16) -> Option<u16> {
        let d = ((self.head as usize + N - p as usize) % N) as u16;
        (self.len > 0 && d < self.len).then_some(d)
    }

    fn seq_of(&self, p: u16) -> u32 {
        self.head_seq - self.age(p).unwrap_or(0) as u32
    }

    fn addr(p: u16, off: u32) -> u32 {
        p as u32 * page_size::<F>() + off
    }

    // ---------------------------------------------------------------- flash access

    /// Reads `out.len()` bytes at any address, honouring READ_SIZE alignment with a bounce
    /// buffer where needed.
    async fn read(&mut self, addr: u32, out: &mut [u8]) -> Res<(), F> {
        let rs = F::READ_SIZE as u32;
        if addr.is_multiple_of(rs) && (out.len() as u32).is_multiple_of(rs) {
            return self.flash.read(addr, out).await.map_err(Error::Flash);
        }
        let mut buf = [0u8; 64];
        let mut done = 0usize;
        while done < out.len() {
            let a = addr + done as u32;
            let base = a - a % rs;
            let skip = (a - base) as usize;
            let want = out.len() - done;
            let n = round_up(skip + want, rs as usize).min(64);
            self.flash.read(base, &mut buf[..n]).await.map_err(Error::Flash)?;
            let take = (n - skip).min(want);
            out[done..done + take].copy_from_slice(&buf[skip..skip + take]);
            done += take;
        }
        Ok(())
    }

    async fn read_u32(&mut self, addr: u32) -> Res<u32, F> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b).await?;
        Ok(u32::from_le_bytes(b))
    }

    async fn read_header(&mut self, p: u16) -> Res<HeaderState, F> {
        let mut b = [0u8; PAGE_HEADER_LEN];
        self.read(Self::addr(p, 0), &mut b).await?;
        Ok(PageHeader::decode(&b))
    }

    /// Whether `[from, end)` of page `p` reads as erased.
    async fn is_blank(&mut self, p: u16, from: u32) -> Res<bool, F> {
        let mut buf = [0u8; 64];
        let mut off = from;
        while off < page_size::<F>() {
            let n = (page_size::<F>() - off).min(64) as usize;
            self.read(Self::addr(p, off), &mut buf[..n]).await?;
            if buf[..n].iter().any(|&b| b != 0xFF) {
                return Ok(false);
            }
            off += n as u32;
        }
        Ok(true)
    }

    // ---------------------------------------------------------------- scanning

    fn cursor(&self, p: u16, h: PageHeader, end: u32) -> Cursor {
        Cursor {
            page: p,
            off: PAGE_HEADER_LEN as u32,
            end,
            seq: h.seq,
            puts: 0,
            ctx: Ctx::from_header(&h),
            damaged: false,
            skipped: false,
            torn_end: false,
        }
    }

    /// A cursor over a page of the log, reading its header again for the context.
    async fn log_cursor(&mut self, p: u16) -> Res<Option<Cursor>, F> {
        let end = if p == self.head {
            self.head_off
        } else {
            page_size::<F>()
        };
        match self.read_header(p).await? {
            HeaderState::Valid(h) if h.seq == self.seq_of(p) => Ok(Some(self.cursor(p, h, end))),
            _ => Ok(None),
        }
    }

    /// The next record of a page, tags only (plus the 4 or 8 data bytes of context and removal
    /// records). Updates the cursor's context. `None` at the end of the written part or at a
    /// structurally impossible tag (`damaged` is then set).
    async fn next_entry(&mut self, c: &mut Cursor) -> Res<Option<Entry>, F> {
        let torn = self.pages[c.page as usize].flags & F_TORN != 0;
        let (tag, mut e) = loop {
            if c.off as usize + TAG_LEN > c.end as usize {
                return Ok(None);
            }
            let word = self.read_u32(Self::addr(c.page, c.off)).await?;
            let decoded = match Tag::decode(word) {
                Ok(t) if c.off + stored_len(t.data_len(), ws::<F>()) as u32 <= c.end => Some(t),
                Ok(_) | Err(TagError::Invalid) => None,
                Err(TagError::Erased) => None,
            };
            let e = decoded.map(|tag| Entry {
                off: c.off,
                tag,
                ns: c.ctx.ns,
                key: None,
                stamp: (c.seq, c.puts, ((c.seq as u64) << 32) | c.off as u64),
                aux: [0xFF; 8],
                span: 0,
            });
            // Puts are checked when read; removals and contexts decide what exists, so they are
            // checked here (they are small).
            let small = e.is_some_and(|e| !matches!(e.tag.ty, RecordType::Put(_) | RecordType::Cont));
            match e {
                Some(e) if !(torn || small) || self.record_crc_ok(c.page, &e).await? => break (e.tag, e),
                Some(_) if !torn => {
                    c.damaged = true;
                    return Ok(None);
                }
                None if !torn && word != ERASED_TAG => {
                    c.damaged = true;
                    return Ok(None);
                }
                _ => {}
            }
            // Erased space ends the page unless writing resumed behind a Sync record (after a
            // mount, past words an interrupted write may have programmed). In a torn page,
            // garbage is skipped the same way.
            let erased = decoded.is_none() && word == ERASED_TAG;
            match self.find_sync(c.page, c.off + ws::<F>() as u32, c.end, c.seq).await? {
                Some(at) => {
                    c.skipped |= !erased;
                    c.off = at;
                }
                None => {
                    c.torn_end = !erased;
                    c.skipped |= !erased;
                    c.end = c.off;
                    return Ok(None);
                }
            }
        };
        let stored = stored_len(tag.data_len(), ws::<F>()) as u32;
        match tag.ty {
            RecordType::Batch | RecordType::Namespace | RecordType::Origin | RecordType::Retire | RecordType::Sync => {
                let n = tag.data_len().min(8);
                self.read(Self::addr(c.page, c.off + TAG_LEN as u32), &mut e.aux[..n])
                    .await?;
            }
            _ => {}
        }
        if tag.ty == RecordType::Batch {
            let mut bitmap = [0u8; MAX_BATCH_DATA - 4];
            let n = tag.data_len() - 4;
            self.read(Self::addr(c.page, c.off + TAG_LEN as u32 + 4), &mut bitmap[..n])
                .await?;
            e.span = bitmap[..n]
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |j| 8 * j as u32 + 8 - bitmap[j].leading_zeros());
        }
        match tag.ty {
            RecordType::Put(kind) => {
                e.key = Key::new(kind, full_id(kind, tag.id_low, c.ctx.hi(kind)));
                if let Some((seq, ord)) = c.ctx.origin {
                    e.stamp = (seq, ord, e.stamp.2);
                    c.ctx.origin = Some((seq, ord.wrapping_add(1)));
                }
                c.puts += 1;
            }
            RecordType::Tombstone => {
                if let Some(kind) = tag.kind() {
                    e.key = Key::new(kind, full_id(kind, tag.id_low, c.ctx.hi(kind)));
                }
            }
            RecordType::IdHigh => match tag.kind() {
                Some(Kind::Command) => c.ctx.hi_c = tag.id_low,
                _ => c.ctx.hi_q = tag.id_low,
            },
            RecordType::Namespace => c.ctx.ns = u64::from_le_bytes(e.aux),
            RecordType::Origin => {
                let seq = le32(&e.aux[0..4]);
                c.ctx.origin = (seq != u32::MAX).then(|| (seq, le32(&e.aux[4..8])));
            }
            _ => {}
        }
        c.off += stored;
        Ok(Some(e))
    }

    /// The first valid Sync record of page `p` (sequence `seq`) in `[from, end)`, searched at
    /// WRITE_SIZE-aligned offsets.
    async fn find_sync(&mut self, p: u16, from: u32, end: u32, seq: u32) -> Res<Option<u32>, F> {
        let w = ws::<F>();
        let sync_len = stored_len(8, w) as u32;
        let tag = Tag::new(RecordType::Sync, false, 8, 0);
        let sync_word = tag.encode();
        let mut buf = [0u8; 68];
        let mut base = round_up(from as usize, w) as u32;
        while base + sync_len <= end {
            let n = (end - base).min(68) as usize;
            self.read(Self::addr(p, base), &mut buf[..n]).await?;
            let mut i = 0usize;
            while i < 64 && i + 4 <= n {
                if le32(&buf[i..i + 4]) == sync_word && base + i as u32 + sync_len <= end {
                    let at = base + i as u32;
                    let mut data = [0u8; 8];
                    self.read(Self::addr(p, at + TAG_LEN as u32), &mut data).await?;
                    if le32(&data[0..4]) == crate::codec::SYNC_MAGIC
                        && le32(&data[4..8]) == seq
                        && self.crc_ok_at(p, at, tag).await?
                    {
                        return Ok(Some(at));
                    }
                }
                i += w;
            }
            base += 64;
        }
        Ok(None)
    }

    /// Reads a record's data to check its CRC (pages read in torn mode).
    async fn record_crc_ok(&mut self, p: u16, e: &Entry) -> Res<bool, F> {
        self.crc_ok_at(p, e.off, e.tag).await
    }

    /// Reads the record at `(p, off)` with `tag` and checks its CRC.
    async fn crc_ok_at(&mut self, p: u16, off: u32, tag: Tag) -> Res<bool, F> {
        let e = Entry {
            off,
            tag,
            ns: 0,
            key: None,
            stamp: (0, 0, 0),
            aux: [0; 8],
            span: 0,
        };
        let mut digest = CRC.digest();
        digest.update(&e.tag.encode().to_le_bytes());
        let mut buf = [0u8; 64];
        let data_at = e.off + TAG_LEN as u32;
        let len = e.tag.data_len() as u32;
        let mut done = 0u32;
        while done < len {
            let n = (len - done).min(64) as usize;
            self.read(Self::addr(p, data_at + done), &mut buf[..n]).await?;
            digest.update(&buf[..n]);
            done += n as u32;
        }
        let stored = self.read_u32(Self::addr(p, data_at + len)).await?;
        Ok(stored == digest.finalize())
    }

    /// Where the fragment after one ending at `(p, end)` starts: later in the same page, or
    /// first in the next page of the log. `None` if the log ends there.
    async fn next_fragment_at(&mut self, p: u16, end: u32) -> Res<Option<(u16, u32, u32)>, F> {
        // The writer only moves to the next page when not even one more data byte fits here.
        if (page_size::<F>() - end) as usize > RECORD_OVERHEAD {
            let limit = if p == self.head {
                self.head_off
            } else {
                page_size::<F>()
            };
            if end as usize + TAG_LEN > limit as usize {
                return Ok(None);
            }
            let word = self.read_u32(Self::addr(p, end)).await?;
            return Ok(Some((p, end, word)));
        }
        if p == self.head {
            return Ok(None);
        }
        let np = Self::next_page(p);
        if self.age(np).is_none() || (np == self.head && self.head_off <= PAGE_HEADER_LEN as u32) {
            return Ok(None);
        }
        let off = PAGE_HEADER_LEN as u32;
        let word = self.read_u32(Self::addr(np, off)).await?;
        Ok(Some((np, off, word)))
    }

    /// Follows a put's continuation fragments: `(stored bytes, value length)` if the chain is
    /// complete, `None` if it was cut short (a torn or abandoned write: the put never happened).
    async fn chain_extent(&mut self, p: u16, off: u32, tag: Tag) -> Res<Option<(u32, u32)>, F> {
        let mut stored = stored_len(tag.data_len(), ws::<F>()) as u32;
        let mut len = tag.data_len() as u32;
        let (mut page, mut end, mut more) = (p, off + stored, tag.more);
        let mut index = 0u16;
        while more {
            let Some((np, noff, word)) = self.next_fragment_at(page, end).await? else {
                return Ok(None);
            };
            index = index.wrapping_add(1);
            let t = match Tag::decode(word) {
                Ok(t) if t.ty == RecordType::Cont && t.id_low == index => t,
                _ => return Ok(None),
            };
            // In a page that ended in an interrupted write, a fragment counts only if whole.
            if self.pages[np as usize].flags & F_TORN != 0 && !self.crc_ok_at(np, noff, t).await? {
                return Ok(None);
            }
            let s = stored_len(t.data_len(), ws::<F>()) as u32;
            stored += s;
            len += t.data_len() as u32;
            (page, end, more) = (np, noff + s, t.more);
        }
        Ok(Some((stored, len)))
    }

    // ---------------------------------------------------------------- liveness

    /// Resolves the newest event of each wanted `(namespace, key)`, newest page first, skipping
    /// pages whose summary cannot hold the key. Pending deferred removals count as removed.
    pub async fn locate_many(&mut self, want: &[(u64, Key)], out: &mut [Loc]) -> Res<(), F> {
        self.locate_inner(want, out, true).await
    }

    /// [`Self::locate_many`] ignoring pending deferred removals: where the records still are.
    async fn locate_many_raw(&mut self, want: &[(u64, Key)], out: &mut [Loc]) -> Res<(), F> {
        self.locate_inner(want, out, false).await
    }

    async fn locate_inner(&mut self, want: &[(u64, Key)], out: &mut [Loc], honor_pending: bool) -> Res<(), F> {
        let n = want.len().min(BATCH).min(out.len());
        let mut resolved = [false; BATCH];
        for i in 0..n {
            out[i] = Loc::Absent;
            if honor_pending && self.is_pending(want[i].0, want[i].1) {
                resolved[i] = true;
            } else if let Some(loc) = self.recent_loc(want[i].0, want[i].1).await? {
                out[i] = loc;
                resolved[i] = true;
            }
        }
        for d in 0..self.len {
            if resolved[..n].iter().all(|&r| r) {
                break;
            }
            let p = self.ring_back(self.head, d);
            let info = self.pages[p as usize];
            if !(0..n).any(|i| !resolved[i] && info.may_hold(want[i].1)) {
                continue;
            }
            let Some(mut c) = self.log_cursor(p).await? else {
                continue;
            };
            let mut ev = [None::<Loc>; BATCH];
            while let Some(e) = self.next_entry(&mut c).await? {
                match e.tag.ty {
                    RecordType::Put(_) => {
                        for i in 0..n {
                            if !resolved[i] && Some(want[i].1) == e.key && want[i].0 == e.ns {
                                if let Some((stored, len)) = self.chain_extent(p, e.off, e.tag).await? {
                                    ev[i] = Some(Loc::At {
                                        page: p,
                                        off: e.off,
                                        stored,
                                        len,
                                    });
                                }
                            }
                        }
                    }
                    RecordType::Tombstone => {
                        for i in 0..n {
                            if !resolved[i] && Some(want[i].1) == e.key && want[i].0 == e.ns {
                                ev[i] = Some(Loc::Absent);
                            }
                        }
                    }
                    RecordType::Batch => {
                        let base = le32(&e.aux[0..4]);
                        for i in 0..n {
                            let k = want[i].1;
                            let bit = k.id().wrapping_sub(base);
                            if resolved[i] || want[i].0 != e.ns || Some(k.kind()) != e.tag.kind() || bit >= e.span {
                                continue;
                            }
                            let mut byte = [0u8; 1];
                            self.read(Self::addr(p, e.off + TAG_LEN as u32 + 4 + bit / 8), &mut byte)
                                .await?;
                            if byte[0] & (1 << (bit % 8)) != 0 {
                                ev[i] = Some(Loc::Absent);
                            }
                        }
                    }
                    RecordType::Clear => {
                        for i in 0..n {
                            if !resolved[i] && want[i].0 == e.ns {
                                ev[i] = Some(Loc::Absent);
                            }
                        }
                    }
                    _ => {}
                }
            }
            for i in 0..n {
                if let Some(l) = ev[i] {
                    out[i] = l;
                    resolved[i] = true;
                }
            }
        }
        Ok(())
    }

    /// Where the newest record of one key is, ignoring pending deferred removals (the record
    /// is still on flash and charged until the removal is written).
    pub async fn locate_raw(&mut self, ns: u64, key: Key) -> Res<Loc, F> {
        let mut out = [Loc::Absent];
        self.locate_inner(&[(ns, key)], &mut out, false).await?;
        Ok(out[0])
    }

    /// The tag of the record at `(page, off)`.
    pub async fn tag_at(&mut self, page: u16, off: u32) -> Res<Tag, F> {
        let word = self.read_u32(Self::addr(page, off)).await?;
        Tag::decode(word).map_err(|_| Error::Corrupted)
    }

    /// The configured value limit.
    pub fn max_value(&self) -> u32 {
        self.max_value
    }

    /// Where the current value of one key is.
    pub async fn locate(&mut self, ns: u64, key: Key) -> Res<Loc, F> {
        let mut out = [Loc::Absent];
        self.locate_inner(&[(ns, key)], &mut out, true).await?;
        Ok(out[0])
    }

    /// Takes a located record's charge off its page's live count.
    pub fn uncharge(&mut self, loc: Loc) {
        if let Loc::At { page, stored, .. } = loc {
            let info = &mut self.pages[page as usize];
            info.live = info.live.saturating_sub(Self::units(stored));
        }
    }

    // ---------------------------------------------------------------- recent puts

    fn recent_find(&self, key: Key) -> Option<usize> {
        self.recent
            .iter()
            .position(|&(id, meta)| meta != RECENT_EMPTY && id == key.id() && meta >> 29 == key.kind().code() as u32)
    }

    /// Remembers that the newest record of `key` (namespace `ns`) starts at `(page, off)`;
    /// records moved by compaction only update an entry that is already there.
    fn recent_put(&mut self, ns: u64, key: Key, page: u16, off: u32, insert: bool) {
        if ns != self.recent_ns {
            if !insert {
                return;
            }
            self.recent_clear();
            self.recent_ns = ns;
        }
        let meta = ((key.kind().code() as u32) << 29) | ((page as u32) << 17) | off;
        let slot = match self.recent_find(key) {
            Some(i) => i,
            None if !insert => return,
            None => {
                let i = self.recent_next as usize;
                self.recent_next = ((i + 1) % RECENT) as u8;
                i
            }
        };
        self.recent[slot] = (key.id(), meta);
    }

    /// Forgets `key` (its newest event is now a removal).
    fn recent_drop(&mut self, ns: u64, key: Key) {
        if ns == self.recent_ns {
            if let Some(i) = self.recent_find(key) {
                self.recent[i].1 = RECENT_EMPTY;
            }
        }
    }

    /// Forgets every entry pointing into page `p` (it left the log).
    fn recent_drop_page(&mut self, p: u16) {
        for e in self.recent.iter_mut() {
            if e.1 != RECENT_EMPTY && (e.1 >> 17) & 0xFFF == p as u32 {
                e.1 = RECENT_EMPTY;
            }
        }
    }

    fn recent_clear(&mut self) {
        self.recent = [(0, RECENT_EMPTY); RECENT];
    }

    /// The location of `key` if it is a recent put: read its tag to check and size it.
    async fn recent_loc(&mut self, ns: u64, key: Key) -> Res<Option<Loc>, F> {
        let Some(i) = self.recent_find(key).filter(|_| ns == self.recent_ns) else {
            return Ok(None);
        };
        let meta = self.recent[i].1;
        let (page, off) = (((meta >> 17) & 0xFFF) as u16, meta & 0x1_FFFF);
        let tag = match self.tag_at(page, off).await {
            Ok(t) if t.ty == RecordType::Put(key.kind()) && t.id_low == key.id() as u16 => t,
            _ => return Ok(None),
        };
        Ok(self
            .chain_extent(page, off, tag)
            .await?
            .map(|(stored, len)| Loc::At { page, off, stored, len }))
    }

    // ---------------------------------------------------------------- deferred removals

    /// Whether a deferred removal of `key` in namespace `ns` is waiting to be written.
    pub fn is_pending(&self, ns: u64, key: Key) -> bool {
        ns == self.pending_ns && self.pending[..self.pending_len as usize].contains(&key)
    }

    /// Forgets a pending removal (the key is being written again, or removed durably).
    pub fn unpend(&mut self, key: Key) -> bool {
        let n = self.pending_len as usize;
        if let Some(i) = self.pending[..n].iter().position(|&k| k == key) {
            self.pending[i] = self.pending[n - 1];
            self.pending_len -= 1;
            true
        } else {
            false
        }
    }

    /// Adds a pending removal for namespace `ns`; `false` if the set is full or holds another
    /// namespace's removals (flush first).
    pub fn pend(&mut self, ns: u64, key: Key) -> bool {
        if self.pending_len == 0 {
            self.pending_ns = ns;
        }
        if self.pending_len as usize == BATCH || ns != self.pending_ns {
            return false;
        }
        self.pending[self.pending_len as usize] = key;
        self.pending_len += 1;
        true
    }

    /// Deferred removals not yet on flash.
    pub fn pending(&self) -> &[Key] {
        &self.pending[..self.pending_len as usize]
    }

    /// Writes all pending removals as `Batch` records (up to 256 ids of one kind each) and
    /// charges them off their pages. One pass locates them all; a failure keeps whatever was
    /// not written pending.
    pub async fn flush_pending(&mut self) -> Res<(), F> {
        if self.pending_len == 0 {
            return Ok(());
        }
        let ns = self.pending_ns;
        // Room for the batch records as grouped now; compaction on the way can only make some
        // removals durable and the groups smaller.
        let need = self.batch_bytes() + CTX_COST as u32;
        self.make_room(need, ns, true).await?;
        let n = self.pending_len as usize;
        let keys = self.pending;
        let mut want = [(0u64, Key::sent(0)); BATCH];
        for (w, &k) in want.iter_mut().zip(&keys[..n]) {
            *w = (ns, k);
        }
        let mut locs = [Loc::Absent; BATCH];
        self.locate_many_raw(&want[..n], &mut locs[..n]).await?;
        let mut done = [false; BATCH];
        // A key with no record needs no removal record.
        for i in 0..n {
            if locs[i] == Loc::Absent {
                done[i] = true;
                self.unpend(keys[i]);
            }
        }
        while let Some(first) = (0..n).find(|&i| !done[i]) {
            // A group: one kind, from its smallest pending id, at most 256 ids wide.
            let kind = keys[first].kind();
            let base = (0..n)
                .filter(|&i| !done[i] && keys[i].kind() == kind)
                .map(|i| keys[i].id())
                .min()
                .unwrap_or(0);
            let max_ids = 8 * (MAX_BATCH_DATA - 4) as u32;
            let mut member = [false; BATCH];
            let mut bitmap = [0u8; MAX_BATCH_DATA];
            let mut top = 0u32;
            for i in 0..n {
                let bit = keys[i].id().wrapping_sub(base);
                if !done[i] && keys[i].kind() == kind && bit < max_ids {
                    member[i] = true;
                    bitmap[4 + bit as usize / 8] |= 1 << (bit % 8);
                    top = top.max(bit);
                }
            }
            let len = 4 + round_up(top as usize / 8 + 1, 4);
            bitmap[0..4].copy_from_slice(&base.to_le_bytes());
            let tag = Tag::new(RecordType::Batch, false, len as u16, kind.code() as u16);
            self.append_small(tag, &bitmap[..len], ns, None, true).await?;
            self.pages[self.head as usize].note(kind, base, base + top);
            for i in (0..n).filter(|&i| member[i]) {
                done[i] = true;
                self.unpend(keys[i]);
                self.uncharge(locs[i]);
                self.recent_drop(ns, keys[i]);
            }
        }
        Ok(())
    }

    /// Bytes the pending removals take as `Batch` records, grouped as [`Self::flush_pending`]
    /// groups them.
    fn batch_bytes(&self) -> u32 {
        let n = self.pending_len as usize;
        let keys = &self.pending[..n];
        let max_ids = 8 * (MAX_BATCH_DATA - 4) as u32;
        let mut done = [false; BATCH];
        let mut bytes = 0;
        while let Some(first) = (0..n).find(|&i| !done[i]) {
            let kind = keys[first].kind();
            let base = (0..n)
                .filter(|&i| !done[i] && keys[i].kind() == kind)
                .map(|i| keys[i].id())
                .min()
                .unwrap_or(0);
            let mut top = 0;
            for i in 0..n {
                let bit = keys[i].id().wrapping_sub(base);
                if !done[i] && keys[i].kind() == kind && bit < max_ids {
                    done[i] = true;
                    top = top.max(bit);
                }
            }
            bytes += stored_len(4 + round_up(top as usize / 8 + 1, 4), ws::<F>()) as u32;
        }
        bytes
    }

    // ---------------------------------------------------------------- space

    /// Consecutive pages from the tail that hold nothing live (exactly known), excluding the
    /// head: they are reclaimed for free at the next page switch.
    fn dead_tail(&self) -> u16 {
        let mut n = 0;
        while n + 1 < self.len {
            let info = self.pages[self.ring_back(self.head, self.len - 1 - n) as usize];
            if info.flags & F_EXACT == 0 || info.live != 0 {
                break;
            }
            n += 1;
        }
        n
    }

    /// Space that compaction must always have: the largest record that can spill out of a
    /// page plus context records for every page.
    fn spill_reserve(&self) -> u32 {
        let maxrec = stored_len(self.max_value as usize, ws::<F>()) as u32 + RECORD_OVERHEAD as u32 + 32;
        maxrec + (CTX_COST as u32) * 2 + 16 * (N as u32 + 4)
    }

    /// Bytes that may still be charged to live data: one page is compaction's reserve and the
    /// spill reserve stays free.
    pub fn usable_units(&self) -> u32 {
        let bytes = (N as u32 - 1) * Self::payload() - self.spill_reserve().min((N as u32 - 1) * Self::payload());
        bytes / 8
    }

    /// Live units charged now (upper bound where pages are not exact).
    pub fn live_units(&self) -> u32 {
        (0..self.len)
            .map(|d| self.pages[self.ring_back(self.head, d) as usize].live as u32)
            .sum()
    }

    /// Whether any page of the log has only an upper bound for its live bytes.
    pub fn has_inexact(&self) -> bool {
        (0..self.len).any(|d| self.pages[self.ring_back(self.head, d) as usize].flags & F_EXACT == 0)
    }

    /// Free bytes at the head before compaction must run.
    fn avail(&self) -> u32 {
        let head_room = if self.len > 0 {
            page_size::<F>() - self.head_off
        } else {
            0
        };
        let spare = (N as u32 - self.len as u32 + self.dead_tail() as u32).saturating_sub(1);
        head_room + spare * Self::payload()
    }

    /// Compacts until `need` bytes can be appended with the spill reserve still free.
    /// Puts leave the spill reserve free, so compaction has room for what it copies. Writes
    /// that only remove (`shrinking`: tombstones, batches, clears) need just their own bytes:
    /// they were paid for with the values they remove (the tombstone reserve in
    /// [`Self::units`]), and they may use the spill reserve because compaction never starts
    /// unless it can finish ([`Self::compact_oldest`]).
    pub async fn make_room(&mut self, need: u32, ns: u64, shrinking: bool) -> Res<(), F> {
        self.check_head().await?;
        let keep = if shrinking { 0 } else { self.spill_reserve() };
        for _ in 0..=N {
            if self.avail() >= need + keep {
                return Ok(());
            }
            self.compact_oldest(ns).await?;
        }
        Err(Error::Full)
    }

    /// Makes every page's live count exact by checking each put against newer records. Only
    /// needed after a mount when the upper bounds claim the store is full.
    pub async fn refine(&mut self) -> Res<(), F> {
        for d in (0..self.len).rev() {
            let p = self.ring_back(self.head, d);
            if self.pages[p as usize].flags & F_EXACT == 0 {
                let (live, _) = self.walk_live(p, None).await?;
                let info = &mut self.pages[p as usize];
                info.live = live;
                info.flags |= F_EXACT;
            }
        }
        Ok(())
    }

    /// Visits the live puts of page `p` in order, in chunks of [`BATCH`]; moves each one to the
    /// head when `move_ns` is given. Returns the live units found.
    async fn walk_live(&mut self, p: u16, move_ns: Option<u64>) -> Res<(u16, u32), F> {
        let Some(mut c) = self.log_cursor(p).await? else {
            return Ok((0, 0));
        };
        let mut live = 0u16;
        let mut bytes = 0u32;
        loop {
            // Offsets and origin stamps only: the chunk lives across awaits, in the future.
            let mut chunk = [(0u32, (0u32, 0u32)); BATCH];
            let mut want = [(0u64, Key::sent(0)); BATCH];
            let mut n = 0;
            while n < BATCH {
                let Some(e) = self.next_entry(&mut c).await? else { break };
                if let (RecordType::Put(_), Some(k)) = (e.tag.ty, e.key) {
                    chunk[n] = (e.off, (e.stamp.0, e.stamp.1));
                    want[n] = (e.ns, k);
                    n += 1;
                }
            }
            if n == 0 {
                return Ok((live, bytes));
            }
            // Where the records are, pending removals included: they stay charged to their
            // page until their batch is written (counting them keeps `refine` and the flush
            // from charging them off twice).
            let mut locs = [Loc::Absent; BATCH];
            self.locate_many_raw(&want[..n], &mut locs[..n]).await?;
            for i in 0..n {
                let (at, origin) = chunk[i];
                if move_ns.is_some() && self.is_pending(want[i].0, want[i].1) {
                    // Compaction drops it: the erase makes its removal durable.
                    continue;
                }
                if let Loc::At { page, off, stored, len } = locs[i] {
                    if page == p && off == at {
                        live = live.saturating_add(Self::units(stored));
                        bytes += stored;
                        if move_ns.is_some() {
                            let (ns, key) = want[i];
                            self.move_record(p, at, key, ns, origin, len).await?;
                        }
                    }
                }
            }
            if n < BATCH {
                return Ok((live, bytes));
            }
        }
    }

    /// Reclaims the oldest page that holds live records: its live puts are copied to the head
    /// (keeping their insertion stamps), a Retire record makes its end durable, and it and any
    /// dead pages before it leave the log. Pending removals of its keys become durable by this.
    async fn compact_oldest(&mut self, ns: u64) -> Res<(), F> {
        let dead = self.dead_tail();
        if dead + 1 >= self.len {
            return Err(Error::Full);
        }
        let p = self.ring_back(self.head, self.len - 1 - dead);
        let seq = self.seq_of(p);
        // Never start a compaction that cannot finish: a half-done one holds the free pages it
        // copied into and frees nothing. `live` (8-byte units, tombstone reserves included)
        // bounds the bytes to copy; context and Retire records come on top.
        if self.pages[p as usize].flags & F_EXACT == 0 {
            let (live, _) = self.walk_live(p, None).await?;
            let info = &mut self.pages[p as usize];
            info.live = live;
            info.flags |= F_EXACT;
            if live == 0 {
                // Dead after all: the next page switch retires it without copying.
                return Ok(());
            }
        }
        // Copies split at any page end, so each page in use loses at most its context
        // records and a continuation header; the Retire record comes last.
        let w = ws::<F>();
        let ns_ctx = if matches!(self.log_ns, Some(Some(_))) {
            0
        } else {
            stored_len(8, w)
        };
        let per_page = (stored_len(8, w) + stored_len(0, w) + ns_ctx + RECORD_OVERHEAD + w) as u32;
        let head_room = (page_size::<F>() - self.head_off).saturating_sub(per_page);
        let room = head_room + (N as u32 - self.len as u32) * (Self::payload() - per_page);
        let retire = stored_len(4, ws::<F>()) as u32;
        if self.pages[p as usize].live as u32 * 8 + retire > room {
            // The bound counts tombstone reserves too: count the bytes themselves first.
            let (_, bytes) = self.walk_live(p, None).await?;
            if bytes + retire > room {
                return Err(Error::Full);
            }
        }
        // Removals waiting in RAM for keys whose live record is here are made durable by the
        // erase: drop them from the pending set only after the Retire record is written.
        let mut dropped = [Key::sent(0); BATCH];
        let mut nd = 0;
        {
            let pend = self.pending_len as usize;
            let mut want = [(0u64, Key::sent(0)); BATCH];
            for (w, &k) in want.iter_mut().zip(&self.pending[..pend]) {
                *w = (self.pending_ns, k);
            }
            let mut locs = [Loc::Absent; BATCH];
            self.locate_many_raw(&want[..pend], &mut locs[..pend]).await?;
            for i in 0..pend {
                if matches!(locs[i], Loc::At { page, .. } if page == p) {
                    dropped[nd] = want[i].1;
                    nd += 1;
                }
            }
        }
        self.walk_live(p, Some(ns)).await?;
        let mut data = [0u8; 4];
        data.copy_from_slice(&seq.to_le_bytes());
        self.append_small(Tag::new(RecordType::Retire, false, 4, 0), &data, ns, None, false)
            .await?;
        for k in &dropped[..nd] {
            self.unpend(*k);
        }
        // Page switches while copying may already have retired the dead pages before `p`
        // (and `p` itself if nothing in it was live): leave the log exactly up to and
        // including `p`, counted now.
        let Some(age) = self.age(p) else { return Ok(()) };
        for d in age..self.len {
            let q = self.ring_back(self.head, d);
            self.recent_drop_page(q);
            self.pages[q as usize] = PageInfo {
                flags: F_DIRTY,
                ..PageInfo::FREE
            };
        }
        self.len = age;
        Ok(())
    }

    /// Copies one live put to the head, unchanged but for its fragmentation.
    async fn move_record(&mut self, p: u16, off: u32, key: Key, ns: u64, origin: Origin, len: u32) -> Res<(), F> {
        let tag = self.tag_at(p, off).await?;
        // Check the source before writing anything: a damaged record is not copied.
        let mut check = Source::Flash(Chain::start(p, off, tag));
        let mut sink = [0u8; 64];
        let mut left = len;
        while left > 0 {
            let n = left.min(64) as usize;
            if self.pull(&mut check, &mut sink[..n]).await? != n {
                return Err(Error::Corrupted);
            }
            left -= n as u32;
        }
        // One more pull reaches the last fragment's CRC when the value ends exactly there.
        if self.pull(&mut check, &mut sink[..1]).await? != 0 {
            return Err(Error::Corrupted);
        }
        let mut src = Source::Flash(Chain::start(p, off, tag));
        let (page, _, _) = self.append_value(key, ns, Some(origin), len, &mut src).await?;
        self.pages[page as usize].flags |= F_MOVED;
        Ok(())
    }

    // ---------------------------------------------------------------- appending

    /// Writes the context records a record needs (namespace, id high bits, origin) and returns
    /// with the head able to take `first` more bytes, switching pages if needed.
    async fn prepare_head(&mut self, mut want: Ctx, key: Option<Key>, first: u32, compacting: bool) -> Res<(), F> {
        let ctx_bytes = |log: &Self| -> u32 {
            let c = &log.head_ctx;
            let mut b = 0;
            if c.ns != want.ns {
                b += stored_len(8, ws::<F>());
            }
            if c.hi_c != want.hi_c {
                b += stored_len(0, ws::<F>());
            }
            if c.hi_q != want.hi_q {
                b += stored_len(0, ws::<F>());
            }
            if c.origin != want.origin {
                b += stored_len(8, ws::<F>());
            }
            b as u32
        };
        if self.len == 0 || self.head_off + ctx_bytes(self) + first > page_size::<F>() || !self.head_checked {
            self.check_head().await?;
            if self.len == 0 || self.head_off + ctx_bytes(self) + first > page_size::<F>() {
                self.open_page(want, key, compacting).await?;
                // The new page's context is its header's: only the record's own needs matter.
                want = self.want_ctx(want.ns, key, want.origin);
            }
        }
        if self.head_ctx.ns != want.ns {
            let data = want.ns.to_le_bytes();
            self.write_record(
                Tag::new(RecordType::Namespace, false, 8, 0),
                &mut Source::ram(&[&data]),
                8,
            )
            .await?;
            self.head_ctx.ns = want.ns;
        }
        for (kind, have, need) in [
            (Kind::Command, self.head_ctx.hi_c, want.hi_c),
            (Kind::Queued, self.head_ctx.hi_q, want.hi_q),
        ] {
            if have != need {
                let tag = Tag::new(RecordType::IdHigh, false, kind.code() as u16, need);
                self.write_record(tag, &mut Source::ram(&[]), 0).await?;
            }
        }
        self.head_ctx.hi_c = want.hi_c;
        self.head_ctx.hi_q = want.hi_q;
        if self.head_ctx.origin != want.origin {
            let (seq, ord) = want.origin.unwrap_or((u32::MAX, u32::MAX));
            let mut data = [0u8; 8];
            data[0..4].copy_from_slice(&seq.to_le_bytes());
            data[4..8].copy_from_slice(&ord.to_le_bytes());
            self.write_record(Tag::new(RecordType::Origin, false, 8, 0), &mut Source::ram(&[&data]), 8)
                .await?;
            self.head_ctx.origin = want.origin;
        }
        Ok(())
    }

    /// Moves the head to the next page: erases it if it is not known blank, writes its header,
    /// and retires (in that same header) the dead pages at the tail.
    async fn open_page(&mut self, want: Ctx, key: Option<Key>, compacting: bool) -> Res<(), F> {
        let next = if self.len == 0 { 0 } else { Self::next_page(self.head) };
        // Never wrap: mount orders pages by sequence number. Checked before anything changes.
        let seq = if self.len == 0 {
            1
        } else {
            self.head_seq.checked_add(1).ok_or(Error::Exhausted)?
        };
        let free = N as u16 - self.len;
        if free == 0 || (!compacting && free < 2 && self.dead_tail() == 0) {
            return Err(Error::Full);
        }
        let info = self.pages[next as usize];
        let mut erase_count = self.erase_max;
        let mut erased_now = false;
        if info.flags & F_BLANK == 0 {
            let old = self.read_header(next).await?;
            let must_erase = info.flags & F_DIRTY != 0 || !self.is_blank(next, 0).await?;
            if must_erase {
                erase_count = match old {
                    HeaderState::Valid(h) => h.erase_count + 1,
                    _ => self.erase_max + 1,
                };
                let a = Self::addr(next, 0);
                self.flash.erase(a, a + page_size::<F>()).await.map_err(Error::Flash)?;
                self.erase_max = self.erase_max.max(erase_count);
                erased_now = true;
            }
        }
        let dead = if self.len > 0 { self.dead_tail_upto_head() } else { 0 };
        let tail_seq = if self.len == 0 {
            seq
        } else {
            self.head_seq - (self.len - 1) as u32 + dead as u32
        };
        // One id-high field for both sequence kinds: the one the first record needs.
        let hi = match key.map(|k| k.kind()) {
            Some(Kind::Queued) => want.hi_q,
            _ => want.hi_c,
        };
        let mut header = PageHeader {
            seq,
            tail_seq,
            erase_count,
            namespace: want.ns,
            id_high: hi,
            prev_torn: self.prev_torn,
        };
        // Dirty until the header is whole: a failed or dropped write means erase before reuse.
        self.pages[next as usize] = PageInfo {
            flags: F_DIRTY,
            ..PageInfo::FREE
        };
        let a = Self::addr(next, 0);
        if let Err(e) = self.flash.write(a, &header.encode()).await {
            if erased_now {
                return Err(Error::Flash(e));
            }
            // A header write cut off earlier may have programmed words that still read 0xFF,
            // which ECC flash refuses to program again: erase the page and try once more.
            header.erase_count = self.erase_max + 1;
            self.flash.erase(a, a + page_size::<F>()).await.map_err(Error::Flash)?;
            self.erase_max = header.erase_count;
            self.flash.write(a, &header.encode()).await.map_err(Error::Flash)?;
        }
        self.pages[next as usize].flags = F_EXACT;
        for d in 0..dead {
            let q = self.ring_back(self.head, self.len - 1 - d);
            self.recent_drop_page(q);
            self.pages[q as usize] = PageInfo {
                flags: F_DIRTY,
                ..PageInfo::FREE
            };
        }
        self.len = self.len + 1 - dead;
        self.head = next;
        self.head_seq = seq;
        self.head_off = PAGE_HEADER_LEN as u32;
        self.head_checked = true;
        self.head_ctx = Ctx::from_header(&header);
        self.head_puts = 0;
        self.prev_torn = false;
        Ok(())
    }

    /// Before the first write after mount: the rest of the head page must read as erased, or
    /// it holds the remains of an interrupted write and the page is sealed.
    async fn check_head(&mut self) -> Res<(), F> {
        if self.in_flight {
            // A write future was dropped part-way: treat its remains like those of a power cut.
            self.in_flight = false;
            self.head_checked = false;
        }
        if self.len == 0 || self.head_checked {
            return Ok(());
        }
        self.head_checked = true;
        let page = page_size::<F>();
        if self.head_off as usize + TAG_LEN > page as usize {
            return Ok(());
        }
        // Whatever an interrupted write left after the last valid record.
        let mut last_used = None;
        let mut buf = [0u8; 64];
        let mut off = self.head_off;
        while off < page {
            let n = (page - off).min(64) as usize;
            self.read(Self::addr(self.head, off), &mut buf[..n]).await?;
            if let Some(i) = buf[..n].iter().rposition(|&b| b != 0xFF) {
                last_used = Some(off + i as u32);
            }
            off += n as u32;
        }
        let w = ws::<F>();
        // Words a write programmed may still read 0xFF, so resume past the most an interrupted
        // write can have covered. Reading all 0xFF, at most the first tag word was touched
        // (a written tag's top byte is never 0xFF). Otherwise: past the record the garbage
        // starts with (one staging buffer if its tag is unreadable) and past the last visible
        // byte plus one staging buffer, the most a single write call covers beyond it.
        let resume = match last_used {
            None => self.head_off + round_up(TAG_LEN, w) as u32,
            Some(last) => {
                let word = self.read_u32(Self::addr(self.head, self.head_off)).await?;
                let record_end = self.head_off
                    + match Tag::decode(word) {
                        Ok(t) => stored_len(t.data_len(), w),
                        Err(_) => STAGE,
                    } as u32;
                let at = round_up(record_end.max(last + 1) as usize, w) as u32 + STAGE as u32;
                self.seal_torn();
                at
            }
        };
        let sync_len = stored_len(8, w) as u32;
        if resume + sync_len + stored_len(MIN_SPLIT, w) as u32 > page {
            self.head_off = page;
            return Ok(());
        }
        // Resume behind a Sync record that readers find by searching.
        self.head_off = resume;
        let mut data = [0u8; 8];
        data[0..4].copy_from_slice(&crate::codec::SYNC_MAGIC.to_le_bytes());
        data[4..8].copy_from_slice(&self.head_seq.to_le_bytes());
        let tag = Tag::new(RecordType::Sync, false, 8, 0);
        if self.write_record(tag, &mut Source::ram(&[&data]), 8).await.is_err() {
            // An earlier attempt may have programmed this word without a visible trace (ECC
            // flash then refuses it). The page is sealed by the failed write; the caller moves
            // on to a fresh page, where a real power failure would fail again.
            return Ok(());
        }
        Ok(())
    }

    /// Marks the head page as holding the remains of an interrupted or failed write: readers
    /// check CRCs there, the next page header says so, and nothing more is written to it
    /// unless [`Self::check_head`] resumes past the damage behind a `Sync` record.
    fn seal_torn(&mut self) {
        self.head_off = page_size::<F>();
        self.prev_torn = true;
        self.pages[self.head as usize].flags |= F_TORN;
    }

    /// Like [`Self::dead_tail`] but the current head counts too (it is about to stop being the
    /// head).
    fn dead_tail_upto_head(&self) -> u16 {
        let mut n = 0;
        while n < self.len {
            let info = self.pages[self.ring_back(self.head, self.len - 1 - n) as usize];
            if info.flags & F_EXACT == 0 || info.live != 0 {
                break;
            }
            n += 1;
        }
        n
    }

    fn want_ctx(&self, ns: u64, key: Option<Key>, origin: Option<Origin>) -> Ctx {
        let mut c = Ctx {
            ns,
            origin,
            ..self.head_ctx
        };
        if let Some(k) = key {
            match k.kind() {
                Kind::Command => c.hi_c = id_high_of(k),
                Kind::Queued => c.hi_q = id_high_of(k),
                _ => {}
            }
        }
        c
    }

    /// Appends a record that never fragments (removals, retire markers). Callers reserve room
    /// first with [`Self::make_room`] (`user`), except compaction, whose records may use the
    /// reserve.
    pub async fn append_small(&mut self, tag: Tag, data: &[u8], ns: u64, key: Option<Key>, user: bool) -> Res<(), F> {
        let stored = stored_len(data.len(), ws::<F>()) as u32;
        if matches!(tag.ty, RecordType::Tombstone | RecordType::Batch | RecordType::Clear) {
            self.note_ns(ns);
        }
        // Only puts consume the origin context: leave it as it is.
        let origin = self.head_ctx.origin;
        let want = self.want_ctx(
            if tag.ty == RecordType::Retire {
                self.head_ctx.ns
            } else {
                ns
            },
            key,
            origin,
        );
        self.prepare_head(want, key, stored, !user).await?;
        let len = data.len();
        self.write_record(tag, &mut Source::ram(&[data]), len).await?;
        let info = &mut self.pages[self.head as usize];
        if tag.ty == RecordType::Clear {
            info.flags |= F_CLEAR;
        }
        if let Some(k) = key {
            info.note(k.kind(), k.id(), k.id());
        }
        match tag.ty {
            RecordType::Tombstone => {
                if let Some(k) = key {
                    self.recent_drop(ns, k);
                }
            }
            RecordType::Clear if ns == self.recent_ns => self.recent_clear(),
            _ => {}
        }
        Ok(())
    }

    /// Appends a value for `key`, split into fragments at page ends and at
    /// [`MAX_FRAGMENT_DATA`]. Returns (page, offset, stored bytes) of the record. The put is
    /// committed when its last fragment is written; a cut before leaves an incomplete chain
    /// that every reader ignores.
    pub async fn append_value(
        &mut self,
        key: Key,
        ns: u64,
        origin: Option<Origin>,
        len: u32,
        src: &mut Source<'_>,
    ) -> Res<(u16, u32, u32), F> {
        self.note_ns(ns);
        let want = self.want_ctx(ns, Some(key), origin);
        let whole = stored_len((len as usize).min(MAX_FRAGMENT_DATA), ws::<F>()) as u32;
        // Client values keep small pieces whole; copies by compaction use every byte, so the
        // room compaction checks for is the room it gets.
        let min_split = if origin.is_some() { 1 } else { MIN_SPLIT };
        let first_min = whole.min(stored_len(min_split, ws::<F>()) as u32);
        self.prepare_head(want, Some(key), first_min, origin.is_some()).await?;
        let (start_page, start_off) = (self.head, self.head_off);
        // Charge the start page before the first fragment: a page switch for a continuation
        // must not see it as dead and retire it under the record being written.
        self.pages[start_page as usize].live = self.pages[start_page as usize].live.saturating_add(1);
        let mut left = len;
        let mut stored_total = 0u32;
        let mut index = 0u16;
        loop {
            let room = page_size::<F>() - self.head_off;
            let max_data = room.saturating_sub(RECORD_OVERHEAD as u32) as usize;
            let frag = (left as usize).min(MAX_FRAGMENT_DATA).min(max_data);
            if index > 0 && (frag == 0 && left > 0) {
                let cont_ctx = self.head_ctx;
                self.open_page(
                    Ctx {
                        origin: None,
                        ..cont_ctx
                    },
                    Some(key),
                    true,
                )
                .await?;
                continue;
            }
            let more = (frag as u32) < left;
            let tag = if index == 0 {
                Tag::new(RecordType::Put(key.kind()), more, frag as u16, key.id() as u16)
            } else {
                Tag::new(RecordType::Cont, more, frag as u16, index)
            };
            stored_total += self.write_record(tag, src, frag).await?;
            left -= frag as u32;
            index = index.wrapping_add(1);
            if !more {
                break;
            }
        }
        self.head_puts += 1;
        if let Some((seq, ord)) = self.head_ctx.origin {
            self.head_ctx.origin = Some((seq, ord.wrapping_add(1)));
        }
        let info = &mut self.pages[start_page as usize];
        info.note(key.kind(), key.id(), key.id());
        info.live = info.live.saturating_add(Self::units(stored_total)).saturating_sub(1);
        self.recent_put(ns, key, start_page, start_off, origin.is_none());
        Ok((start_page, start_off, stored_total))
    }

    /// Writes one record at the head from `src`: tag, `n` data bytes, CRC, padding, through a
    /// small staging buffer. A failed write seals the head page so no word is written twice.
    async fn write_record(&mut self, tag: Tag, src: &mut Source<'_>, n: usize) -> Res<u32, F> {
        let stored = stored_len(n, ws::<F>());
        if self.head_off as usize + stored > page_size::<F>() as usize {
            return Err(Error::LogicBug);
        }
        let base = Self::addr(self.head, self.head_off);
        // Cleared when the record is complete: if this future is dropped part-way, the next
        // operation re-checks the head instead of programming these words again.
        self.in_flight = true;
        let word = tag.encode().to_le_bytes();
        let mut digest = CRC.digest();
        digest.update(&word);
        let mut stage = [0xFFu8; STAGE];
        stage[..4].copy_from_slice(&word);
        let mut fill = 4usize;
        let mut flushed = 0u32;
        let mut left = n;
        let r: Res<(), F> = async {
            while left > 0 {
                let take = left.min(STAGE - fill);
                let got = self.pull(src, &mut stage[fill..fill + take]).await?;
                if got != take {
                    return Err(Error::LogicBug);
                }
                digest.update(&stage[fill..fill + take]);
                fill += take;
                left -= take;
                if fill == STAGE {
                    self.flash.write(base + flushed, &stage).await.map_err(Error::Flash)?;
                    flushed += STAGE as u32;
                    stage = [0xFF; STAGE];
                    fill = 0;
                }
            }
            let crc = digest.finalize().to_le_bytes();
            for b in crc {
                if fill == STAGE {
                    self.flash.write(base + flushed, &stage).await.map_err(Error::Flash)?;
                    flushed += STAGE as u32;
                    stage = [0xFF; STAGE];
                    fill = 0;
                }
                stage[fill] = b;
                fill += 1;
            }
            let last = round_up(fill, ws::<F>());
            self.flash
                .write(base + flushed, &stage[..last])
                .await
                .map_err(Error::Flash)?;
            Ok(())
        }
        .await;
        self.in_flight = false;
        if let Err(e) = r {
            self.seal_torn();
            return Err(e);
        }
        self.head_off += stored as u32;
        Ok(stored as u32)
    }

    // ---------------------------------------------------------------- reading values

    /// Fills `out` from a source; returns the bytes produced (fewer only at the source's end).
    /// A fragment whose CRC does not match gives [`Error::Corrupted`].
    pub async fn pull(&mut self, src: &mut Source<'_>, out: &mut [u8]) -> Res<usize, F> {
        match src {
            Source::Ram { parts, idx, pos } => {
                let mut done = 0;
                while done < out.len() && *idx < parts.len() {
                    let part = parts[*idx];
                    let take = (part.len() - *pos).min(out.len() - done);
                    out[done..done + take].copy_from_slice(&part[*pos..*pos + take]);
                    done += take;
                    *pos += take;
                    if *pos == part.len() {
                        *idx += 1;
                        *pos = 0;
                    }
                }
                Ok(done)
            }
            Source::Flash(chain) => {
                let mut done = 0;
                while done < out.len() && !chain.done {
                    let flen = chain.tag.data_len() as u32;
                    if chain.pos == flen {
                        self.finish_fragment(chain).await?;
                        continue;
                    }
                    let take = ((flen - chain.pos) as usize).min(out.len() - done);
                    let at = Self::addr(chain.page, chain.frag_off + TAG_LEN as u32 + chain.pos);
                    self.read(at, &mut out[done..done + take]).await?;
                    chain.crc_state = crc_update(chain.crc_state, &out[done..done + take]);
                    chain.pos += take as u32;
                    done += take;
                }
                Ok(done)
            }
        }
    }

    /// Checks the CRC of the fragment just read and steps to the next one.
    async fn finish_fragment(&mut self, chain: &mut Chain) -> Res<(), F> {
        let flen = chain.tag.data_len() as u32;
        let stored = self
            .read_u32(Self::addr(chain.page, chain.frag_off + TAG_LEN as u32 + flen))
            .await?;
        if stored != crc_final(chain.crc_state) {
            return Err(Error::Corrupted);
        }
        if !chain.tag.more {
            chain.done = true;
            return Ok(());
        }
        let end = chain.frag_off + stored_len(flen as usize, ws::<F>()) as u32;
        let Some((p, off, word)) = self.next_fragment_at(chain.page, end).await? else {
            return Err(Error::Corrupted);
        };
        let expect = if chain.tag.ty == RecordType::Cont {
            chain.tag.id_low.wrapping_add(1)
        } else {
            1
        };
        let tag = match Tag::decode(word) {
            Ok(t) if t.ty == RecordType::Cont && t.id_low == expect => t,
            _ => return Err(Error::Corrupted),
        };
        *chain = Chain::start(p, off, tag);
        Ok(())
    }

    // ---------------------------------------------------------------- keys in insertion order

    /// Up to `out.len()` (at most [`BATCH`]) live keys of namespace `ns` with a stamp after
    /// `after`, in insertion order. Returns how many were written and the stamp to continue
    /// from; `(0, _)` means there are no more.
    pub async fn next_keys(&mut self, ns: u64, after: Stamp, out: &mut [Key]) -> Res<(usize, Stamp), F> {
        let b = out.len().min(KEYS_BATCH);
        let mut after = after;
        if b == 0 {
            return Ok((0, after));
        }
        loop {
            let mut cands = [((0u32, 0u32, 0u64), Key::sent(0), 0u16, 0u32); KEYS_BATCH];
            let mut n = 0usize;
            for d in (0..self.len).rev() {
                let p = self.ring_back(self.head, d);
                let info = self.pages[p as usize];
                let seq = self.seq_of(p);
                let moved = info.flags & F_MOVED != 0;
                if !moved && seq < after.0 {
                    continue;
                }
                // Pages in order hold increasing stamps except for moved runs.
                let later_moved =
                    (0..d).any(|dd| self.pages[self.ring_back(self.head, dd) as usize].flags & F_MOVED != 0);
                if n == b && !moved && !later_moved && (seq, 0, 0) > cands[b - 1].0 {
                    break;
                }
                let Some(mut c) = self.log_cursor(p).await? else {
                    continue;
                };
                while let Some(e) = self.next_entry(&mut c).await? {
                    let (RecordType::Put(_), Some(k)) = (e.tag.ty, e.key) else {
                        continue;
                    };
                    if e.ns != ns || e.stamp <= after || (n == b && e.stamp >= cands[b - 1].0) {
                        continue;
                    }
                    let mut i = n.min(b - 1);
                    if n < b {
                        n += 1;
                    }
                    while i > 0 && cands[i - 1].0 > e.stamp {
                        cands[i] = cands[i - 1];
                        i -= 1;
                    }
                    cands[i] = (e.stamp, k, p, e.off);
                }
            }
            if n == 0 {
                return Ok((0, after));
            }
            let mut want = [(0u64, Key::sent(0)); KEYS_BATCH];
            for i in 0..n {
                want[i] = (ns, cands[i].1);
            }
            let mut locs = [Loc::Absent; KEYS_BATCH];
            self.locate_many(&want[..n], &mut locs[..n]).await?;
            let mut m = 0;
            for i in 0..n {
                if let Loc::At { page, off, .. } = locs[i] {
                    if page == cands[i].2 && off == cands[i].3 {
                        out[m] = cands[i].1;
                        m += 1;
                    }
                }
            }
            after = cands[n - 1].0;
            if m > 0 || n < b {
                return Ok((m, after));
            }
        }
    }

    /// After a clear of namespace `ns`: if the log holds no other namespace, nothing is live;
    /// otherwise every page's count is now only an upper bound (other clients' records in it
    /// are still live, and RAM does not say which pages hold them).
    pub fn cleared(&mut self, ns: u64) {
        let single = self.log_ns == Some(Some(ns));
        for d in 0..self.len {
            let p = self.ring_back(self.head, d) as usize;
            if single {
                self.pages[p].live = 0;
                self.pages[p].flags |= F_EXACT;
            } else {
                self.pages[p].flags &= !F_EXACT;
            }
        }
    }

    /// Records that a key-bearing record of namespace `ns` is in the log.
    fn note_ns(&mut self, ns: u64) {
        self.log_ns = match self.log_ns {
            None => Some(Some(ns)),
            Some(Some(x)) if x == ns => Some(Some(x)),
            _ => Some(None),
        };
    }
}

impl Chain {
    /// A reader positioned at the start of the fragment at `(page, off)` with `tag`.
    pub fn start(page: u16, off: u32, tag: Tag) -> Chain {
        Chain {
            page,
            frag_off: off,
            tag,
            pos: 0,
            crc_state: crc_update(CRC_INIT, &tag.encode().to_le_bytes()),
            done: false,
        }
    }
}

impl<'a> Source<'a> {
    /// A source over caller memory.
    pub fn ram(parts: &'a [&'a [u8]]) -> Source<'a> {
        Source::Ram { parts, idx: 0, pos: 0 }
    }
}

// CRC-32C kept as a plain u32 state so a `Chain` is `Copy` and holds no borrow.
const CRC_INIT: u32 = 0xFFFF_FFFF;

fn crc_update(state: u32, data: &[u8]) -> u32 {
    let mut s = state;
    for &b in data {
        s ^= b as u32;
        for _ in 0..8 {
            s = if s & 1 != 0 { (s >> 1) ^ 0x82F6_3B78 } else { s >> 1 };
        }
    }
    s
}

fn crc_final(state: u32) -> u32 {
    !state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitwise_crc_matches_the_crc_crate() {
        let word = 0x1234_5678u32.to_le_bytes();
        let data = b"some payload bytes";
        let s = crc_update(crc_update(CRC_INIT, &word), data);
        use crate::codec::record_crc;
        assert_eq!(crc_final(s), record_crc(0x1234_5678, &[data]));
    }
}
