//! Idle-time maintenance: the work a put would otherwise do on its way, done ahead of it in
//! small steps (docs/DESIGN.md section 23). Each call of [`Log::maintain`] does one step:
//!
//! 1. the recovery of the head page after a mount or an interrupted write (`check_head`), which
//!    may move the head back (a retraction) and so must come before anything that depends on
//!    where the head is;
//! 2. the next [`AHEAD`] pages the head will open are made known blank ([`F_BLANK`]): a free
//!    page is erased, or read back blank if nothing marks it dirty; a dead page at the tail
//!    that is in the way first leaves the log with a `Retire` record (or, if the head page has
//!    no room left for one, the head moves on to the next page, which is what the next put
//!    would do). The one page that may need an erase although it reads blank (the page after
//!    the head at mount, [`F_SUSPECT`]) is erased only once the next write may reach it, so a
//!    boot loop that calls maintenance does not erase it at every boot;
//! 3. compaction, one `compact_oldest` step per call, while the free space is below what a put
//!    of the largest admissible value needs without compacting (`room_for`'s target for it),
//!    or while a put would first reclaim the damage of interrupted writes (`reclaim_damage`);
//! 4. otherwise [`Maintenance::Idle`]: until a write uses the prepared pages up, a put of up to
//!    `max_value` bytes erases nothing and compacts nothing.
//!
//! At most one erase per call outside a compaction step, and a compaction step copies at most
//! one page; a loop of calls with no client write between them reaches `Idle` within
//! [`Log::maintain_bound`] calls: the recovery, then at most `3 * N + 3` compaction steps (the
//! bound `make_room` itself has), each preceded, and `Idle` too, by at most `3 * AHEAD + 1`
//! preparing calls (per prepared page a retirement, a read that flags it suspect, and an erase
//! or a read; the head moved on).
//!
//! Nothing changes on flash that a put would not write: an erased page is an erased page, and
//! the `Retire` record is the one a page switch or a compaction writes. [`F_BLANK`] is RAM only.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

/// Pages ahead of the head that maintenance keeps known blank. A put of up to a page opens at
/// most two pages (its first fragment's, if the head page cannot take it, and its
/// continuation's), and so does one compaction step (a page of copies across a boundary).
pub(super) const AHEAD: u16 = 2;

/// What one call of [`crate::Store::maintain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Maintenance {
    /// Recovered the head page after a mount or an interrupted write (reads it; writes at most
    /// a `Sync` record).
    Recovered,
    /// Dead pages at the tail left the log with a `Retire` record (one small write), so the page
    /// after them can be erased.
    Retired,
    /// Erased this free page, which the head opens next (one erase).
    Erased(u16),
    /// Read this free page back blank: no erase needed (reads only).
    Verified(u16),
    /// The head page was full and the next page still in the log: the head moved on to that
    /// page, erasing it, as the next write would have (one erase, one header write).
    Advanced(u16),
    /// One compaction step: the live records of the oldest page copied to the head, the page
    /// retired (programs at most a page of copies; the pages it opens are prepared ones).
    Compacted,
    /// Nothing left to do: until writes use up the prepared pages, a put erases and compacts
    /// nothing.
    Idle,
}

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Does one step of the work a later put would otherwise do (module docs) and says which.
    /// Call it while the device is idle, until it returns [`Maintenance::Idle`].
    ///
    /// Power loss: every step is one a client write makes too, in the same order and with the
    /// same records, so a cut leaves what a cut during that write would; a page erased ahead is
    /// outside the log. Cancellation: dropping the future is a power cut as far as the flash is
    /// concerned; RAM marks the page as needing an erase until the erase has returned.
    pub async fn maintain(&mut self) -> Res<Maintenance, F> {
        if self.len > 0 && (self.in_flight || !self.head_checked) {
            self.check_head().await?;
            return Ok(Maintenance::Recovered);
        }
        for i in 1..=AHEAD.min(N as u16) {
            let q = self.upcoming(i);
            if self.age(q).is_some() {
                match self.clear_way(i).await? {
                    Some(step) => return Ok(step),
                    None => break,
                }
            }
            let flags = self.pages[q as usize].flags;
            if flags & F_BLANK != 0 {
                continue;
            }
            let needed = self.needed(i);
            if flags & F_SUSPECT != 0 && !needed {
                continue;
            }
            return self.prepare(q, needed).await;
        }
        self.maintain_compaction().await
    }

    /// What the next write may append: a put of the largest value with its context and the
    /// waste at a page end, and, when the free space calls for compaction, the copy of the
    /// page compaction takes next (a page, when it moves the head on instead).
    fn reach(&self) -> u32 {
        let need = self.need();
        if !self.compaction_due() {
            return need;
        }
        let dead = self.dead_tail();
        let copy = if dead + 1 >= self.len {
            page_size::<F>()
        } else {
            self.copy_bound(self.ring_back(self.head, self.len - 1 - dead))
        };
        need.saturating_add(copy)
    }

    /// What `room_for` asks for the largest put the log admits now: a value of `max_value`
    /// bytes, or less when the capacity left is less (a larger put is refused before it asks),
    /// plus `X`. By the space model's invariant, compaction can always make that room
    /// (space.rs), so maintenance never chases a target no put would set.
    fn need(&self) -> u32 {
        let left = self.capacity().saturating_sub(self.charged());
        Self::value_bytes(self.max_value).min(left) + Self::costs().x
    }

    /// Whether a put may compact: the free space is below what the largest admissible put
    /// asks for, or a put may first reclaim the damage of interrupted writes (ops.rs: when its
    /// value fits the capacity only without the damage).
    fn compaction_due(&self) -> bool {
        self.len > 0 && (self.damage_due() || self.avail() < self.need().saturating_add(self.keep))
    }

    /// Whether a put of some admissible size would reclaim damage before it is admitted.
    fn damage_due(&self) -> bool {
        self.damaged() > 0 && self.charged() + Self::value_bytes(self.max_value) > self.capacity()
    }

    /// Whether the next write may reach the `i`-th upcoming page.
    fn needed(&self, i: u16) -> bool {
        let room = if self.len == 0 {
            0
        } else {
            page_size::<F>() - self.head_off
        };
        self.reach() as u64 > room as u64 + (i as u64 - 1) * Self::payload() as u64
    }

    /// The most calls of [`Self::maintain`] in a row, with no client write between them, before
    /// one returns [`Maintenance::Idle`].
    pub fn maintain_bound() -> usize {
        1 + (3 * N + 4) * (3 * AHEAD as usize + 2)
    }

    /// The page the `i`-th next page switch opens (`i >= 1`).
    fn upcoming(&self, i: u16) -> u16 {
        if self.len == 0 {
            ((i as usize - 1) % N) as u16
        } else {
            ((self.head as usize + i as usize) % N) as u16
        }
    }

    /// The `i`-th upcoming page is still in the log: if it and every page older than it are dead,
    /// they leave the log (a `Retire` record, or the head moves on into the first of them when
    /// the head page has no room for the record). `None` if they cannot leave now (a page holds
    /// live data: compaction's business), or if leaving would take the reserve.
    async fn clear_way(&mut self, i: u16) -> Res<Option<Maintenance>, F> {
        // Pages from the tail up to and including the upcoming one.
        let behind = self.len + i - N as u16;
        if self.dead_tail() < behind {
            return Ok(None);
        }
        let ret = stored_len(4, ws::<F>()) as u32;
        if self.head_off + ret <= page_size::<F>() {
            if self.avail() < self.keep + ret {
                return Ok(None);
            }
            let len = self.len;
            self.retire_dead_tail().await?;
            debug_assert!(self.len < len, "retire_dead_tail retired nothing");
            return Ok(Some(Maintenance::Retired));
        }
        if i != 1 {
            // The next page is prepared; the page switch into it retires these in its header.
            return Ok(None);
        }
        // The head page is full: the next write opens the next page anyway, and with the log
        // filling the ring that page is the dead tail, erased before the header that retires
        // it (append.rs, `retire_dead_tail`). Do it now.
        let q = self.upcoming(1);
        let ctx = self.head_ctx;
        match self.open_page(Ctx { origin: None, ..ctx }, None, false).await {
            Ok(()) => Ok(Some(Maintenance::Advanced(q))),
            Err(Error::Full) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes the free page `q` known blank: read back blank if nothing marks it dirty, else
    /// erased, with the erase count `open_page` would have given it. A dirty page that reads
    /// blank (the page after the head at mount, which a torn header write may have programmed
    /// invisibly) is erased only if the next write may reach it (`needed`): erasing it ahead at
    /// every boot would wear it once per boot; otherwise it is flagged [`F_SUSPECT`] and left.
    async fn prepare(&mut self, q: u16, needed: bool) -> Res<Maintenance, F> {
        debug_assert!(self.age(q).is_none(), "preparing a page in the log");
        let info = self.pages[q as usize];
        let old = self.header_ok(q).await?;
        if info.flags & F_DIRTY == 0 && self.is_blank(q, 0).await? {
            self.pages[q as usize] = PageInfo {
                flags: F_BLANK,
                ..PageInfo::FREE
            };
            return Ok(Maintenance::Verified(q));
        }
        if !needed && info.flags & F_SUSPECT == 0 && old == HeaderState::Erased && self.is_blank(q, 0).await? {
            self.pages[q as usize].flags |= F_SUSPECT;
            return Ok(Maintenance::Verified(q));
        }
        // Counts come from flash: a damaged one must not overflow (informational only).
        let count = match old {
            HeaderState::Valid(h) => h.erase_count.saturating_add(1),
            _ => self.erase_max.saturating_add(1),
        };
        // Dirty until the erase has returned: a failed or dropped erase leaves garbage.
        self.pages[q as usize] = PageInfo {
            flags: F_DIRTY,
            ..PageInfo::FREE
        };
        let a = Self::addr(q, 0);
        self.flash.erase(a, a + page_size::<F>()).await.map_err(Error::Flash)?;
        self.erase_max = self.erase_max.max(count);
        self.pages[q as usize] = PageInfo {
            flags: F_BLANK | F_ERASED,
            lo: count,
            ..PageInfo::FREE
        };
        Ok(Maintenance::Erased(q))
    }

    /// One compaction step if the free space is below what a put of the largest value needs
    /// (so that put would compact), as `make_room` would make it; `Idle` otherwise, or when
    /// compaction cannot go on (no room, a damaged value, or the step bound reached).
    async fn maintain_compaction(&mut self) -> Res<Maintenance, F> {
        if self.len == 0 {
            return Ok(Maintenance::Idle);
        }
        let step = self.maint_steps as usize;
        if !self.compaction_due() || step > 3 * N + 2 {
            return Ok(Maintenance::Idle);
        }
        // Reclaiming damage is `reclaim_damage`'s loop, one step per call.
        let reclaim = self.damage_due();
        self.maint_steps += 1;
        let last = self.avail();
        let ns = self.head_ctx.ns;
        match self.compact_oldest(ns).await {
            Err(Error::Full | Error::Corrupted) => {
                // Not now: the put will judge its own case. No more tries until a client write.
                self.maint_steps = (3 * N + 3) as u16;
                return Ok(Maintenance::Idle);
            }
            r => r?,
        }
        if reclaim {
            return Ok(Maintenance::Compacted);
        }
        // The same escape from chasing the tail as make_room's.
        self.escape_chase(last, step).await?;
        Ok(Maintenance::Compacted)
    }
}
