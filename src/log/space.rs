//! Space: what a record is charged, the capacity, the reserve compaction keeps, and admission.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Live units charged for a record that takes `stored` bytes: its size in 8-byte units
    /// plus the size of the tombstone that will remove it, held back so a remove never meets
    /// "full".
    pub fn units(stored: u32) -> u16 {
        let tombstone = stored_len(0, F::WRITE_SIZE) as u32;
        (stored.div_ceil(8) + tombstone.div_ceil(8)).min(u16::MAX as u32) as u16
    }

    /// Bytes of a page available to records.
    pub fn payload() -> u32 {
        page_size::<F>() - PAGE_HEADER_LEN as u32
    }

    /// The largest value length the log accepts with the given configuration.
    pub fn max_value_limit() -> u32 {
        Self::payload() - 2 * (RECORD_OVERHEAD as u32 + 32)
    }

    /// Takes a located record's charge off its page's live count.
    pub fn uncharge(&mut self, loc: Loc) {
        if let Loc::At { page, stored, .. } = loc {
            let info = &mut self.pages[page as usize];
            info.live = info.live.saturating_sub(Self::units(stored));
        }
    }

    /// Consecutive pages from the tail that hold nothing live (exactly known), excluding the
    /// head: they are reclaimed for free at the next page switch.
    pub(super) fn dead_tail(&self) -> u16 {
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
    pub(super) fn spill_reserve(&self) -> u32 {
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
    pub(super) fn avail(&self) -> u32 {
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

    /// Like [`Self::dead_tail`] but the current head counts too (it is about to stop being the
    /// head).
    pub(super) fn dead_tail_upto_head(&self) -> u16 {
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
    pub(super) fn note_ns(&mut self, ns: u64) {
        self.log_ns = match self.log_ns {
            None => Some(Some(ns)),
            Some(Some(x)) if x == ns => Some(Some(x)),
            _ => Some(None),
        };
    }
}
