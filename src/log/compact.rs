//! Compaction: the oldest page's live puts copied to the head, then the page retired.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Visits the live puts of page `p` in order, in chunks of [`BATCH`]; moves each one to the
    /// head when `move_ns` is given. Returns the live units found.
    pub(super) async fn walk_live(&mut self, p: u16, move_ns: Option<u64>) -> Res<(u16, u32), F> {
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
    pub(super) async fn compact_oldest(&mut self, ns: u64) -> Res<(), F> {
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
    pub(super) async fn move_record(&mut self, p: u16, off: u32, key: Key, ns: u64, origin: Origin, len: u32) -> Res<(), F> {
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
}
