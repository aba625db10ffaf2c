//! Space: what a live value is charged, the capacity, the reserve compaction keeps, and the one
//! admission rule. Every space decision of the store is made here (docs/DESIGN.md section 9).
//!
//! The model, in bytes (`sl(n)` is the stored size of a record with `n` data bytes):
//! - A live value of `len` bytes is charged `value_bytes(len)`: its fragments as written in one
//!   piece (split only every 2047 bytes). A page is charged the values whose first fragment it
//!   holds, plus its context records (Namespace, IdHigh, Origin) while it holds anything live.
//!   `charged()` is the sum over the log: exact at all times, also right after mount.
//! - One compaction step copies the live values of the tail page. Its output exceeds what the
//!   page held by at most `K` bytes (context records for the first copy and at two page
//!   boundaries, a split or the waste before a boundary, the Retire record), plus the part of a
//!   value that continued into the next page (at most `V`, the largest value).
//! - [`Self::keep`] is the free space every operation leaves behind: one page, one largest
//!   value, and `K` for every step of a rotation that can lose space (a page so full of live data
//!   that its copy is larger than what it frees), `m` of them at most, plus what recovering from
//!   an interrupted write may waste in the head page.
//! - The capacity `C` is what remains of the ring after `keep`, the overhead of a whole
//!   rotation (`Kr` per page), the most any single operation needs beyond its charge (`X`) and
//!   one dead continuation (`V`: the later fragments of a value compaction moved out of the
//!   page before, dead in the tail page until it is compacted).
//!
//! Invariant (asserted in debug builds by the callers of [`Self::make_room`]): when
//! `charged() <= C`, compacting the whole log once leaves at least `keep + X` bytes free, so
//! every removal, flush, clear and every admitted put finds its room, and every compaction step
//! on the way finds room for its copy.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

/// The per-geometry constants of the space model (bytes).
#[derive(Debug, Clone, Copy)]
pub(super) struct Costs {
    /// Context records a record can need before it: Namespace, its kind's IdHigh, Origin.
    pub(super) ctx: u32,
    /// A Retire record.
    ret: u32,
    /// What a page boundary in compaction's output can cost: a split fragment's extra header or
    /// the waste left when the next record and its context do not fit, plus the context the
    /// new page's header cannot carry (Origin, the other kind's IdHigh).
    bnd: u32,
    /// Most a client operation appends beyond its charge: context records plus the waste or
    /// split at a page end (a put), or a removal record, its context and the waste before it.
    pub(super) x: u32,
    /// What recovering from one interrupted write can waste in the head page: the skip past
    /// the garbage (one staging buffer), the Sync record, or the rest of a page too short to
    /// resume in.
    cut: u32,
}

impl<F: NorFlash, const N: usize> Log<F, N> {
    pub(super) fn costs() -> Costs {
        let w = ws::<F>();
        let sl = |n: usize| stored_len(n, w) as u32;
        let (t0, t8) = (sl(0), sl(8));
        let ctx = t8 + t0 + t8;
        let split = t0 + w as u32;
        let bnd = split.max(ctx + sl(1)) + t8 + t0;
        let x_put = ctx + split.max(ctx + sl(MIN_SPLIT));
        let x_rm = 2 * (ctx + sl(MAX_BATCH_DATA));
        Costs {
            ctx,
            ret: sl(4),
            bnd,
            x: x_put.max(x_rm),
            cut: STAGE as u32 + t8 + sl(MIN_SPLIT),
        }
    }

    /// Bytes of a page available to records.
    pub fn payload() -> u32 {
        page_size::<F>() - PAGE_HEADER_LEN as u32
    }

    /// What a live value of `len` bytes is charged: its fragments, unsplit at page ends (a
    /// split costs a boundary, which the model counts per page).
    pub fn value_bytes(len: u32) -> u32 {
        let frag = MAX_FRAGMENT_DATA as u32;
        let (full, rest) = (len / frag, len % frag);
        let mut b = full * stored_len(MAX_FRAGMENT_DATA, ws::<F>()) as u32;
        if rest > 0 || full == 0 {
            b += stored_len(rest as usize, ws::<F>()) as u32;
        }
        b
    }

    /// `(capacity, keep)` when the largest value takes `v` bytes; `None` if the reserves leave
    /// no room at all.
    pub(super) fn model(v: u32) -> Option<(u32, u32)> {
        let c = Self::costs();
        let p = Self::payload();
        let n = N as u32;
        let k = c.ctx + c.ret + 2 * c.bnd;
        let kr = c.ctx + c.ret + c.bnd;
        if p <= k {
            return None;
        }
        // C(m) = N*P - N*Kr - X - V - (P + V + (m+1)*K) is sound for a charge that makes at
        // most m steps of a rotation lose space, i.e. for C <= (m+1)*(P-K) - 1: the capacity
        // is the largest min(C(m), (m+1)*(P-K) - 1) over m. The V outside `keep` is the dead
        // continuation: compacting a page whose last value straddles into the next page leaves
        // that value's later fragments (up to V) dead in the new tail, where they hold space
        // until that page is compacted in turn; it is never free, so it cannot be part of the
        // reserve `keep` that must be. Every term shrinks as V grows, so the capacity never
        // grows with the value limit (a smaller `max_value_len` never holds less).
        let base = (n * p).checked_sub(n * kr + c.x + p + 2 * v + c.cut)?;
        let mut best: Option<(u32, u32)> = None;
        for m in 0..=n {
            let Some(cap) = base.checked_sub((m + 1) * k) else {
                break;
            };
            let cap = cap.min((m + 1) * (p - k) - 1);
            if best.is_none_or(|(b, _)| cap > b) {
                best = Some((cap, p + v + (m + 1) * k + c.cut));
            }
        }
        best
    }

    /// The largest value length this geometry supports: an empty store takes one value of it
    /// with every reserve kept. `None` if it supports none.
    pub fn value_limit() -> Option<u32> {
        let fits = |len: u32| Self::model(Self::value_bytes(len)).is_some_and(|(cap, _)| Self::value_bytes(len) <= cap);
        if !fits(0) {
            return None;
        }
        let (mut lo, mut hi) = (0u32, Self::payload());
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) { lo = mid } else { hi = mid - 1 }
        }
        Some(lo)
    }

    /// The largest value length the log accepts (0 if the geometry holds no value).
    pub fn max_value_limit() -> u32 {
        Self::value_limit().unwrap_or(0)
    }

    /// Advertised capacity: live data (as [`Self::charged`] counts it) may reach this.
    pub fn capacity(&self) -> u32 {
        self.cap
    }

    /// The free space every operation leaves (see the module docs).
    fn keep(&self) -> u32 {
        self.keep
    }

    /// Recomputes capacity and reserve for the largest value the log may hold: the configured
    /// limit, or a larger live value written under an earlier configuration.
    pub(super) fn set_model(&mut self) {
        let v = Self::value_bytes(self.max_value.max(self.max_live_len));
        let (cap, keep) = Self::model(v).unwrap_or((0, u32::MAX / 4));
        self.cap = cap;
        self.keep = keep;
    }

    /// Bytes page `p` is charged: the values starting in it and, while any is live, its context
    /// records.
    pub(super) fn page_charge(&self, p: u16) -> u32 {
        let info = &self.pages[p as usize];
        if info.live == 0 { 0 } else { info.live + info.ctx as u32 }
    }

    /// What the log is charged now: live data and the damage of interrupted writes. Exact,
    /// also right after mount (the scan measures damage as the recovery that made it did).
    pub fn charged(&self) -> u32 {
        (0..self.len)
            .map(|d| self.page_charge(self.ring_back(self.head, d)))
            .sum::<u32>()
            + self.damaged()
    }

    /// Whether power cuts in a row took more free space than the model reserves for one
    /// interrupted operation (`cut`): every operation from an empty store, and any one cut,
    /// leaves at least `keep - cut` free. Below that, compaction may lack room for its next
    /// copy and a put may be refused below capacity until removals make room. Never wedged:
    /// removals still go through, and compaction restores the reserve once it can.
    pub fn degraded(&self) -> bool {
        self.len > 0 && self.avail() + Self::costs().cut < self.keep
    }

    /// Bytes interrupted writes took beyond their own records, in pages still in the log: the
    /// skips to the Sync records writing resumed behind, the Sync records, the rest of pages
    /// sealed at garbage. Charged like a live value in its page, which compaction drops instead
    /// of copying, so the model's invariant holds after any number of cuts; the one reserve
    /// (`cut`) still covers the recovery that has not measured its damage yet.
    pub fn damaged(&self) -> u32 {
        (0..self.len)
            .map(|d| self.pages[self.ring_back(self.head, d) as usize].damage)
            .sum()
    }

    /// Charges a value of `len` bytes starting in page `p`.
    pub(super) fn charge(&mut self, p: u16, len: u32) {
        let info = &mut self.pages[p as usize];
        info.live = info.live.saturating_add(Self::value_bytes(len));
        self.max_live_len = self.max_live_len.max(len);
    }

    /// Takes a located value's charge off its page.
    pub fn uncharge(&mut self, loc: Loc) {
        if let Loc::At { page, len, .. } = loc {
            let info = &mut self.pages[page as usize];
            debug_assert!(info.live >= Self::value_bytes(len), "uncharge below zero");
            info.live = info.live.saturating_sub(Self::value_bytes(len));
        }
    }

    /// Whether a value of `new` bytes fits the capacity. A value it replaces stays counted: the
    /// old value is live, and takes its space, until the new one is whole (a put is atomic), so
    /// both must fit. (Subtracting it admitted overwrites that no compaction could make room for.)
    pub(super) fn admits(&self, new: u32) -> bool {
        self.charged() + Self::value_bytes(new) <= self.cap
    }

    /// Consecutive pages from the tail that hold nothing live, excluding the head: they are
    /// reclaimed for free at the next page switch.
    pub(super) fn dead_tail(&self) -> u16 {
        let mut n = 0;
        while n + 1 < self.len && self.pages[self.ring_back(self.head, self.len - 1 - n) as usize].live == 0 {
            n += 1;
        }
        n
    }

    /// Like [`Self::dead_tail`] but the current head counts too (it is about to stop being the
    /// head).
    pub(super) fn dead_tail_upto_head(&self) -> u16 {
        let mut n = 0;
        while n < self.len && self.pages[self.ring_back(self.head, self.len - 1 - n) as usize].live == 0 {
            n += 1;
        }
        n
    }

    /// Free bytes: the rest of the head page, the free pages and the dead pages at the tail.
    pub(super) fn avail(&self) -> u32 {
        let head_room = if self.len > 0 {
            page_size::<F>() - self.head_off
        } else {
            0
        };
        let spare = N as u32 - self.len as u32 + self.dead_tail() as u32;
        head_room + spare * Self::payload()
    }

    /// Compacts until `need` bytes can be appended with [`Self::keep`] still free. Every client
    /// write goes through here with a `need` of at most its charge plus `X`, so by the module's
    /// invariant this fails only when the live data exceeds the capacity (an image written by
    /// something else) or the flash fails.
    pub async fn make_room(&mut self, need: u32, ns: u64) -> Res<(), F> {
        // A client write: maintenance may compact again.
        self.maint_steps = 0;
        self.check_head().await?;
        let target = need.saturating_add(self.keep());
        let mut last = self.avail();
        for step in 0..=3 * N + 2 {
            if self.avail() >= target {
                return Ok(());
            }
            self.compact_oldest(ns).await?;
            self.escape_chase(last, step).await?;
            last = self.avail();
        }
        Err(Error::Full)
    }

    /// After compaction step `step` of a run (`last`: the space available before it).
    /// Compaction copies to the head page's end. A value that then straddles into the next page
    /// leaves as much dead space before it in the page it came from, and copying it again from
    /// there chases the tail without ever packing the log: when all that is live sits in the
    /// tail and the head page and a step freed nothing, or when a whole rotation did not make
    /// the room, the next copy starts a fresh page, which leaves no dead space before it (one
    /// head remainder wasted, once). Used by `make_room` and by maintenance's compaction steps.
    pub(super) async fn escape_chase(&mut self, last: u32, step: usize) -> Res<(), F> {
        let chase = self.avail() <= last && self.len - self.dead_tail() == 2;
        let rotation = step % N == N - 1;
        if (chase || rotation)
            && self.len > 0
            && self.head_off > PAGE_HEADER_LEN as u32
            && N as u16 - self.len + self.dead_tail() >= 2
        {
            let ctx = self.head_ctx;
            self.open_page(Ctx { origin: None, ..ctx }, None, true).await?;
        }
        Ok(())
    }

    /// The bound on what compacting page `p` appends (its live values, its context records,
    /// context and a Retire record, two page boundaries). Chains that continue into the next
    /// page are in `live` whole.
    pub(super) fn copy_bound(&self, p: u16) -> u32 {
        let c = Self::costs();
        let info = &self.pages[p as usize];
        info.live + info.ctx as u32 + c.ctx + c.ret + 2 * c.bnd
    }

    /// Sets every page's live charge from the flash: each put in it is looked up. Used by mount
    /// (so [`Self::charged`] is exact from the start) and after a clear of one of several
    /// namespaces.
    pub async fn refine(&mut self) -> Res<(), F> {
        self.max_live_len = 0;
        for d in (0..self.len).rev() {
            let p = self.ring_back(self.head, d);
            self.pages[p as usize].live = 0;
            self.walk_live(p, false).await?;
        }
        self.set_model();
        Ok(())
    }

    /// Recomputes every page's charge from the flash and compares it with the running count:
    /// the first page where they differ, as `(page, counted, exact)`. For tests; changes
    /// nothing (the exact counts replace the running ones, which were equal).
    pub async fn audit_charges(&mut self) -> Res<Option<(u16, u32, u32)>, F> {
        let mut had = [0u32; N];
        for (h, p) in had.iter_mut().zip(self.pages.iter()) {
            *h = p.live;
        }
        let max_live = self.max_live_len;
        self.refine().await?;
        self.max_live_len = self.max_live_len.max(max_live);
        self.set_model();
        for d in 0..self.len {
            let p = self.ring_back(self.head, d);
            if had[p as usize] != self.pages[p as usize].live {
                return Ok(Some((p, had[p as usize], self.pages[p as usize].live)));
            }
        }
        Ok(None)
    }

    /// After a clear of namespace `ns`: if the log holds no other namespace nothing is live;
    /// otherwise the counts are refreshed from the flash ([`Self::refine`]).
    pub async fn cleared(&mut self, ns: u64) -> Res<(), F> {
        if self.log_ns == Some(Some(ns)) {
            for d in 0..self.len {
                let p = self.ring_back(self.head, d) as usize;
                self.pages[p].live = 0;
            }
            Ok(())
        } else {
            self.refine().await
        }
    }

    /// Records that a key-bearing record of namespace `ns` is in the log.
    pub(super) fn note_ns(&mut self, ns: u64) {
        self.log_ns = match self.log_ns {
            None => Some(Some(ns)),
            Some(Some(x)) if x == ns => Some(Some(x)),
            _ => Some(None),
        };
    }
}
