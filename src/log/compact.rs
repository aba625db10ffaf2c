//! Compaction: the oldest page's live puts copied to the head, then the page retired.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Visits the live puts of page `p` in order, in chunks of [`BATCH`]: charges each to `p`
    /// (`moving == false`, for [`Self::refine`]) or copies it to the head (compaction).
    /// Records whose removal is still pending are live here: they are on flash and charged
    /// until their batch is written, and compaction copies them like any other (their removal
    /// stays pending), which keeps copies' insertion stamps gap-free.
    pub(super) async fn walk_live(&mut self, p: u16, moving: bool) -> Res<(), F> {
        let Some(mut c) = self.log_cursor(p).await? else {
            return Ok(());
        };
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
                return Ok(());
            }
            let mut locs = [Loc::Absent; BATCH];
            self.locate_many_raw(&want[..n], &mut locs[..n]).await?;
            for i in 0..n {
                let (at, origin) = chunk[i];
                if let Loc::At { page, off, len, .. } = locs[i]
                    && page == p
                    && off == at
                {
                    if moving {
                        let (ns, key) = want[i];
                        self.move_record(p, at, key, ns, origin, len).await?;
                    } else {
                        self.charge(p, len);
                    }
                }
            }
            if n < BATCH {
                return Ok(());
            }
        }
    }

    /// Reclaims the oldest page that holds live records: its live puts are copied to the head
    /// (keeping their insertion order), a Retire record makes its end durable, and it and any
    /// dead pages before it leave the log.
    pub(super) async fn compact_oldest(&mut self, ns: u64) -> Res<(), F> {
        let dead = self.dead_tail();
        if dead + 1 >= self.len {
            // Everything older is reclaimable for free, and the rest is in the head page, which
            // cannot be compacted while it is the head: move the head on (an empty page), so
            // the next step retires or compacts it. Without this a head page full of dead
            // records would hold a page's worth of space that no rotation frees.
            if self.len == 0 || self.head_off <= PAGE_HEADER_LEN as u32 || N as u16 - self.len + dead < 2 {
                return Err(Error::Full);
            }
            let ctx = self.head_ctx;
            return self.open_page(Ctx { origin: None, ..ctx }, None, true).await;
        }
        let p = self.ring_back(self.head, self.len - 1 - dead);
        let seq = self.seq_of(p);
        // Never start a compaction that cannot finish: a half-done one holds the free pages it
        // copied into and frees nothing. The space model keeps this much free (space.rs).
        if self.copy_bound(p) > self.avail() {
            debug_assert!(
                !self.op_sound || self.charged() > self.capacity(),
                "compaction without room below capacity: copy of {} into {} free ({} of {} charged)",
                self.copy_bound(p),
                self.avail(),
                self.charged(),
                self.capacity()
            );
            return Err(Error::Full);
        }
        let before = self.avail();
        self.walk_live(p, true).await?;
        let mut data = [0u8; 4];
        data.copy_from_slice(&seq.to_le_bytes());
        self.append_small(Tag::new(RecordType::Retire, false, 4, 0), &data, ns, None, false)
            .await?;
        debug_assert!(
            before - self.avail().min(before) <= self.copy_bound(p),
            "compaction wrote more than its bound"
        );
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

    /// Compacts until no page of the log holds damage (interrupted writes' remains), or until
    /// compaction finds no room. A put that fits the capacity only without the damage calls
    /// this before it is refused: the damage is charged while it is on flash, and this is how
    /// it leaves, also when it sits in the head page (the head moves on first). At most one
    /// rotation of the log.
    pub(super) async fn reclaim_damage(&mut self, ns: u64) -> Res<(), F> {
        self.check_head().await?;
        for _ in 0..=2 * N + 1 {
            if self.damaged() == 0 {
                break;
            }
            match self.compact_oldest(ns).await {
                // No room, or a damaged value blocks its page: the put is judged as it stands.
                Err(Error::Full | Error::Corrupted) => break,
                r => r?,
            }
        }
        Ok(())
    }

    /// Copies one live put to the head, unchanged but for its fragmentation.
    pub(super) async fn move_record(
        &mut self,
        p: u16,
        off: u32,
        key: Key,
        ns: u64,
        origin: Origin,
        len: u32,
    ) -> Res<(), F> {
        let tag = self.tag_at(p, off).await?;
        // Check the source before writing anything: a damaged record is not copied.
        let mut check = Source::Flash(Chain::value(p, off, tag, ns, key));
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
        // Insertion stamps of copies are compressed: a run of copies from one origin page takes
        // consecutive ordinals from its first, so a dead put between two live ones needs no new
        // Origin record (order is kept: ordinals only ever move down, never past an earlier
        // copy's). DESIGN.md section 11.
        let old = origin;
        let origin = match self.head_ctx.origin {
            Some((s, next)) if s == origin.0 && next <= origin.1 => (s, next),
            _ => origin,
        };
        let mut src = Source::Flash(Chain::value(p, off, tag, ns, key));
        let (page, at, _) = self.append_value(key, ns, Some(origin), len, &mut src).await?;
        self.pages[page as usize].flags |= F_MOVED;
        let loc = |p: u16, off: u32| ((self.seq_of(p) as u64) << 32) | off as u64;
        self.cursors_moved((old.0, old.1, loc(p, off)), (origin.0, origin.1, loc(page, at)));
        Ok(())
    }
}
