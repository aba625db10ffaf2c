//! Appending: page switches, context records, record writes, recovery of the head after a cut.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Writes the context records a record needs (namespace, id high bits, origin) and returns
    /// with the head able to take `first` more bytes, switching pages if needed.
    pub(super) async fn prepare_head(
        &mut self,
        mut want: Ctx,
        key: Option<Key>,
        first: u32,
        compacting: bool,
    ) -> Res<(), F> {
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
            let b = self
                .write_record(
                    Tag::new(RecordType::Namespace, false, 8, 0),
                    &mut Source::ram(&[&data]),
                    8,
                )
                .await?;
            self.count_ctx(b);
            self.head_ctx.ns = want.ns;
        }
        for (kind, have, need) in [
            (Kind::Command, self.head_ctx.hi_c, want.hi_c),
            (Kind::Queued, self.head_ctx.hi_q, want.hi_q),
        ] {
            if have != need {
                let tag = Tag::new(RecordType::IdHigh, false, kind.code() as u16, need);
                let b = self.write_record(tag, &mut Source::ram(&[]), 0).await?;
                self.count_ctx(b);
            }
        }
        self.head_ctx.hi_c = want.hi_c;
        self.head_ctx.hi_q = want.hi_q;
        if self.head_ctx.origin != want.origin {
            let (seq, ord) = want.origin.unwrap_or((u32::MAX, u32::MAX));
            let mut data = [0u8; 8];
            data[0..4].copy_from_slice(&seq.to_le_bytes());
            data[4..8].copy_from_slice(&ord.to_le_bytes());
            let b = self
                .write_record(Tag::new(RecordType::Origin, false, 8, 0), &mut Source::ram(&[&data]), 8)
                .await?;
            self.count_ctx(b);
            self.head_ctx.origin = rebuilt_origin(want.origin);
        }
        Ok(())
    }

    /// Context records are charged to their page while it holds anything live.
    fn count_ctx(&mut self, bytes: u32) {
        let info = &mut self.pages[self.head as usize];
        info.ctx = info.ctx.saturating_add(bytes as u16);
    }

    /// Moves the head to the next page: erases it if it is not known blank, writes its header,
    /// and retires (in that same header) the dead pages at the tail.
    pub(super) async fn open_page(&mut self, want: Ctx, key: Option<Key>, compacting: bool) -> Res<(), F> {
        let next = if self.len == 0 { 0 } else { Self::next_page(self.head) };
        // Never wrap: mount orders pages by sequence number. Checked before anything changes.
        let seq = if self.len == 0 {
            1
        } else {
            self.head_seq.checked_add(1).ok_or(Error::Exhausted)?
        };
        if self.len as usize == N {
            self.retire_dead_tail().await?;
        }
        let free = N as u16 - self.len;
        // The space model keeps a free page for compaction whatever clients write: a client
        // record never needs the last one (space.rs). Refuse rather than fill the ring.
        if free == 0 || (!compacting && free < 2 && self.dead_tail() == 0) {
            debug_assert!(
                self.charged() > self.capacity() || compacting,
                "a client write below capacity reached the last free page"
            );
            return Err(Error::Full);
        }
        let info = self.pages[next as usize];
        let mut erase_count = self.erase_max;
        let mut erased_now = false;
        if info.flags & F_BLANK != 0 {
            // Known blank (maintain.rs): no read, no erase. A header write that fails on it is
            // a flash failure, not the remains of an earlier cut.
            debug_assert!(self.age(next).is_none(), "a page in the log flagged blank");
            debug_assert!(info.flags & !(F_BLANK | F_ERASED) == 0, "a blank page with other flags");
            if info.flags & F_ERASED != 0 {
                erase_count = info.lo;
                erased_now = true;
            }
        } else {
            // A page left unreadable by an interrupted erase reads as garbage: erased again.
            let old = self.header_ok(next).await?;
            let must_erase = info.flags & F_DIRTY != 0 || !self.is_blank(next, 0).await?;
            if must_erase {
                // Counts come from flash: a damaged one must not overflow (informational only).
                erase_count = match old {
                    HeaderState::Valid(h) => h.erase_count.saturating_add(1),
                    _ => self.erase_max.saturating_add(1),
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
        self.pages[next as usize].flags = 0;
        if self.len > 0 && header.prev_torn {
            // Mount reads a page the next header calls torn up to its last record, and charges
            // the rest as damage (garbage, or space left when the page was sealed): so does this.
            let old = self.head as usize;
            self.pages[old].damage += page_size::<F>() - self.head_end;
        }
        self.forget_dead_tail(dead);
        self.len = self.len + 1 - dead;
        self.head = next;
        self.head_seq = seq;
        self.head_off = PAGE_HEADER_LEN as u32;
        self.head_end = self.head_off;
        self.head_checked = true;
        self.head_ctx = Ctx::from_header(&header);
        self.head_puts = 0;
        self.head_bare = true;
        self.head_prev_torn = header.prev_torn;
        self.prev_torn = false;
        Ok(())
    }

    /// The log fills every page (a compaction cut before its Retire record): the next page is
    /// the tail. If the tail pages hold nothing live, they leave the log now, durably where the
    /// head page has room for a Retire record; otherwise the next page header retires them, and
    /// a cut between their erase and that header leaves the ring position after the head
    /// without a valid header, which mount drops from the log (it held nothing live).
    pub(super) async fn retire_dead_tail(&mut self) -> Res<(), F> {
        let dead = self.dead_tail();
        if dead == 0 {
            return Ok(());
        }
        let last = self.seq_of(self.ring_back(self.head, self.len - dead));
        let w = ws::<F>();
        if self.head_checked && self.head_off + stored_len(4, w) as u32 <= page_size::<F>() {
            let data = last.to_le_bytes();
            self.write_record(Tag::new(RecordType::Retire, false, 4, 0), &mut Source::ram(&[&data]), 4)
                .await?;
        }
        self.forget_dead_tail(dead);
        self.len -= dead;
        Ok(())
    }

    /// Before the first write after mount: the rest of the head page must read as erased, or
    /// it holds the remains of an interrupted write and the page is sealed, retracted, or
    /// written on behind a Sync record. Mount plans it ([`Self::plan_head`]), so that the
    /// damage is charged from the start; this carries the plan out.
    pub(super) async fn check_head(&mut self) -> Res<(), F> {
        if self.in_flight {
            // A write future was dropped part-way: treat its remains like those of a power cut.
            self.in_flight = false;
            self.head_checked = false;
            self.head_plan = None;
        }
        if self.len == 0 || self.head_checked {
            return Ok(());
        }
        let plan = match self.head_plan.take() {
            Some(p) => p,
            None => self.plan_head().await?,
        };
        self.head_checked = true;
        // Mount's charge for this plan gives way to the damage it now makes.
        let info = &mut self.pages[self.head as usize];
        info.damage -= core::mem::take(&mut self.head_guess).min(info.damage);
        let page = page_size::<F>();
        let w = ws::<F>();
        let start = self.head_off;
        let resume = match plan {
            HeadPlan::Done => return Ok(()),
            HeadPlan::Retract => {
                self.retract_head();
                return Ok(());
            }
            HeadPlan::Clean(at) => at,
            HeadPlan::Torn(at) => {
                self.mark_torn();
                at
            }
        };
        let sync_len = stored_len(8, w) as u32;
        if resume + sync_len + stored_len(MIN_SPLIT, w) as u32 > page {
            // Too little room to resume: sealed here. Its rest is charged as damage when the
            // page stops being the head, if the next header calls it torn (open_page).
            self.head_off = page;
            return Ok(());
        }
        // Resume behind a Sync record that readers find by searching; what a later mount skips
        // to reach it, and the Sync itself, are the page's damage (measured alike by the scan).
        self.pages[self.head as usize].damage += resume + sync_len - start;
        self.head_off = resume;
        self.head_end = resume;
        let mut data = [0u8; 8];
        data[0..4].copy_from_slice(&crate::codec::SYNC_MAGIC.to_le_bytes());
        data[4..8].copy_from_slice(&self.head_seq.to_le_bytes());
        let tag = Tag::new(RecordType::Sync, false, 8, 0);
        // A failed write seals the page (write_record) and the operation fails with the
        // flash's error; the next one starts in a fresh page. Swallowing it (as before) let
        // the operation go on and answer `Full` for the room the seal cost, with the power
        // off (the 200-round matrix, 4096 x 5 WRITE 8 ECC): a cause misreported.
        self.write_record(tag, &mut Source::ram(&[&data]), 8).await?;
        Ok(())
    }

    /// What [`Self::check_head`] will do with the head page: reads the rest of it (after the
    /// last valid record) and changes nothing.
    pub(super) async fn plan_head(&mut self) -> Res<HeadPlan, F> {
        let page = page_size::<F>();
        if self.len == 0 || self.head_off as usize + TAG_LEN > page as usize {
            return Ok(HeadPlan::Done);
        }
        // Whatever an interrupted write left after the last valid record.
        let mut last_used = None;
        let mut buf = [0u8; 64];
        let mut off = self.head_off;
        while off < page {
            let n = (page - off).min(64) as usize;
            if self.read_ok(Self::addr(self.head, off), &mut buf[..n]).await? {
                if let Some(i) = buf[..n].iter().rposition(|&b| b != 0xFF) {
                    last_used = Some(off + i as u32);
                }
            } else {
                // Words an interrupted write left unreadable (ECC flash) are used, like any
                // garbage: checked word by word, so resuming behind them wastes no more than
                // visible garbage would (the cut margin of space.rs).
                let w = ws::<F>();
                let mut at = 0usize;
                while at < n {
                    let word = &mut buf[at..(at + w).min(n)];
                    let readable = self.read_ok(Self::addr(self.head, off + at as u32), word).await?;
                    if !readable || word.iter().any(|&b| b != 0xFF) {
                        last_used = Some(off + (at + word.len()) as u32 - 1);
                    }
                    at += w;
                }
            }
            off += n as u32;
        }
        let w = ws::<F>();
        // Words a write programmed may still read 0xFF, so resume past the most an interrupted
        // write can have covered. Reading all 0xFF, at most the first tag word was touched
        // (a written tag's top byte is never 0xFF). Otherwise: past the record the garbage
        // starts with (one staging buffer if its tag is unreadable) and past the last visible
        // byte plus one staging buffer, the most a single write call covers beyond it.
        Ok(match last_used {
            None => HeadPlan::Clean(self.head_off + round_up(TAG_LEN, w) as u32),
            Some(_) if self.head_bare && self.len >= 2 => HeadPlan::Retract,
            Some(last) => {
                let word = self.word_ok(Self::addr(self.head, self.head_off)).await?.unwrap_or(0);
                // A tag whose record would not fit in the page is garbage too.
                let record_end = self.head_off
                    + match Tag::decode(word) {
                        Ok(t) if self.head_off as usize + stored_len(t.data_len(), w) <= page as usize => {
                            stored_len(t.data_len(), w)
                        }
                        _ => STAGE,
                    } as u32;
                HeadPlan::Torn(round_up(record_end.max(last + 1) as usize, w) as u32 + STAGE as u32)
            }
        })
    }

    /// The damage carrying out `plan` leaves on flash that a later mount measures, charged to
    /// the head page from mount on: the skip and the Sync record of a resumption behind
    /// garbage. (The rest of a page sealed is charged when the page stops being the head.)
    pub(super) fn plan_damage(&self, plan: HeadPlan) -> u32 {
        let (page, w) = (page_size::<F>(), ws::<F>());
        let sync_len = stored_len(8, w) as u32;
        match plan {
            // Written by the first write, and charged then: a Sync behind untouched space; the
            // rest of a page too short to resume in, once the page stops being the head.
            HeadPlan::Done | HeadPlan::Retract | HeadPlan::Clean(_) => 0,
            HeadPlan::Torn(at) if at + sync_len + stored_len(MIN_SPLIT, w) as u32 > page => 0,
            HeadPlan::Torn(at) => at + sync_len - self.head_off,
        }
    }

    /// Takes back the head page when it holds only context records and the remains of an
    /// interrupted write (a put or a compaction copy cut off in the page it had just opened):
    /// the page before it is the head again, sealed, and the next write erases this page and
    /// opens it anew, so the interrupted write wastes nothing (DESIGN.md section 12, I6).
    /// Resuming behind the remains instead wastes up to a value per cut, and cuts in a row
    /// during recovery then fill page after page with nothing live, which no compaction can
    /// reclaim while the tail page's copy does not fit.
    pub(super) fn retract_head(&mut self) {
        let h = self.head;
        debug_assert!(
            self.head_bare && self.len >= 2,
            "retracting a head page that holds records"
        );
        self.recent_drop_page(h);
        self.pages[h as usize] = PageInfo {
            flags: F_DIRTY,
            ..PageInfo::FREE
        };
        self.len -= 1;
        self.head = self.ring_back(h, 1);
        self.head_seq -= 1;
        self.head_off = page_size::<F>();
        // Its rest was charged when it stopped being the head (or by mount): not again.
        self.head_end = self.head_off;
        self.head_ctx.origin = None;
        self.head_puts = 0;
        self.head_bare = false;
        // The next page header repeats what this one said about the page before it.
        self.prev_torn = self.head_prev_torn;
    }

    /// Forgets the `dead` oldest pages of the log (nothing live in them): their summaries and
    /// cached puts go, and they are erased before reuse. The caller shrinks the log.
    fn forget_dead_tail(&mut self, dead: u16) {
        for d in 0..dead {
            let q = self.ring_back(self.head, self.len - 1 - d);
            self.recent_drop_page(q);
            self.pages[q as usize] = PageInfo {
                flags: F_DIRTY,
                ..PageInfo::FREE
            };
        }
    }

    /// Marks the head page as holding the remains of an interrupted or failed write: readers
    /// check CRCs there, the next page header says so, and nothing more is written to it
    /// unless [`Self::check_head`] resumes past the damage behind a `Sync` record.
    pub(super) fn seal_torn(&mut self) {
        self.mark_torn();
        self.head_off = page_size::<F>();
    }

    /// The flags of [`Self::seal_torn`]: the page is read with CRCs checked, and the next page
    /// header says it ended torn.
    fn mark_torn(&mut self) {
        self.prev_torn = true;
        self.pages[self.head as usize].flags |= F_TORN;
    }

    pub(super) fn want_ctx(&self, ns: u64, key: Option<Key>, origin: Option<Origin>) -> Ctx {
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
        debug_assert!(
            tag.ty != RecordType::Tombstone || self.head_ctx.key_of(tag) == key,
            "tombstone context"
        );
        debug_assert!(
            !matches!(tag.ty, RecordType::Batch | RecordType::Clear) || self.head_ctx.ns == ns,
            "removal namespace"
        );
        let len = data.len();
        self.write_record(tag, &mut Source::ram(&[data]), len).await?;
        let info = &mut self.pages[self.head as usize];
        if tag.ty == RecordType::Clear {
            info.flags |= F_CLEAR;
        }
        if let Some(k) = key {
            info.note_in(ns, k.kind(), k.id(), k.id());
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
        // must not see it as dead and retire it under the record being written. A write that
        // fails takes the charge back (the incomplete chain is no value).
        self.charge(start_page, len);
        let r = self.append_fragments(key, len, src).await;
        let stored_total = match r {
            Ok(s) => s,
            Err(e) => {
                let info = &mut self.pages[start_page as usize];
                info.live = info.live.saturating_sub(Self::value_bytes(len));
                return Err(e);
            }
        };
        self.head_puts += 1;
        if let Some((seq, ord)) = self.head_ctx.origin {
            self.head_ctx.origin = Some((seq, ord.wrapping_add(1)));
        }
        self.pages[start_page as usize].note_in(ns, key.kind(), key.id(), key.id());
        self.recent_put(ns, key, start_page, start_off, origin.is_none());
        Ok((start_page, start_off, stored_total))
    }

    /// The fragments of a value, the first at the head: returns the bytes written.
    async fn append_fragments(&mut self, key: Key, len: u32, src: &mut Source<'_>) -> Res<u32, F> {
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
            // The key a reader derives from the context written before must be this one.
            debug_assert!(index > 0 || self.head_ctx.key_of(tag) == Some(key), "put context");
            stored_total += self.write_record(tag, src, frag).await?;
            left -= frag as u32;
            index = index.wrapping_add(1);
            if !more {
                break;
            }
        }
        Ok(stored_total)
    }

    /// Writes one record at the head from `src`: tag, `n` data bytes, CRC, padding, through a
    /// small staging buffer. A failed write seals the head page so no word is written twice.
    pub(super) async fn write_record(&mut self, tag: Tag, src: &mut Source<'_>, n: usize) -> Res<u32, F> {
        let stored = stored_len(n, ws::<F>());
        if self.head_off as usize + stored > page_size::<F>() as usize {
            return Err(Error::LogicBug);
        }
        let base = Self::addr(self.head, self.head_off);
        // Before the first word: a cut part-way may leave this record whole on flash.
        self.head_bare &= tag.ty.is_context();
        // Cleared when the record is complete: if this future is dropped part-way, the next
        // operation re-checks the head instead of programming these words again.
        self.in_flight = true;
        let word = tag.encode().to_le_bytes();
        let mut digest = CRC.digest();
        // Bound to the context a reader of this page will see at this offset (the head's).
        digest.update(self.head_ctx.binding(tag).as_bytes());
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
        self.head_end = self.head_off;
        Ok(stored as u32)
    }
}
