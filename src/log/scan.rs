//! Reading a page: records in order with their context, Sync search, CRC checks, chains of fragments.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
    pub(super) fn cursor(&self, p: u16, h: PageHeader, end: u32) -> Cursor {
        Cursor {
            page: p,
            off: PAGE_HEADER_LEN as u32,
            end,
            seq: h.seq,
            puts: 0,
            ctx: Ctx::from_header(&h),
            damaged: false,
            skipped: false,
            damage: 0,
            torn_end: false,
        }
    }

    /// A cursor over a page of the log, reading its header again for the context.
    pub(super) async fn log_cursor(&mut self, p: u16) -> Res<Option<Cursor>, F> {
        let end = if p == self.head {
            self.head_off
        } else {
            page_size::<F>()
        };
        match self.header_ok(p).await? {
            HeaderState::Valid(h) if h.seq == self.seq_of(p) => Ok(Some(self.cursor(p, h, end))),
            _ => Ok(None),
        }
    }

    /// The next record of a page, tags only (plus the 4 or 8 data bytes of context and removal
    /// records). Updates the cursor's context. `None` at the end of the written part or at a
    /// structurally impossible tag (`damaged` is then set).
    pub(super) async fn next_entry(&mut self, c: &mut Cursor) -> Res<Option<Entry>, F> {
        let torn = self.pages[c.page as usize].flags & F_TORN != 0;
        let (tag, mut e) = loop {
            if c.off as usize + TAG_LEN > c.end as usize {
                return Ok(None);
            }
            // An unreadable tag word is garbage, like an invalid one.
            let word = self.word_ok(Self::addr(c.page, c.off)).await?.unwrap_or(0);
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
                Some(e) if !(torn || small) || self.crc_ok_at(c.page, e.off, e.tag, &c.ctx.binding(e.tag)).await? => {
                    break (e.tag, e);
                }
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
                    c.damage += at - c.off;
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
        if let RecordType::Sync = tag.ty {
            // Written only by a recovery (append.rs, `check_head`): part of its damage.
            c.damage += stored;
        }
        match tag.ty {
            RecordType::Batch | RecordType::Namespace | RecordType::Origin | RecordType::Retire | RecordType::Sync => {
                let n = tag.data_len().min(8);
                if !self
                    .read_ok(Self::addr(c.page, c.off + TAG_LEN as u32), &mut e.aux[..n])
                    .await?
                {
                    // Checked by its CRC above, so readable; a flash that fails now ends the
                    // page here (damage, not a failure of the store).
                    c.damaged = true;
                    return Ok(None);
                }
            }
            _ => {}
        }
        if tag.ty == RecordType::Batch {
            let mut bitmap = [0u8; MAX_BATCH_DATA - 4];
            let n = tag.data_len() - 4;
            if !self
                .read_ok(Self::addr(c.page, c.off + TAG_LEN as u32 + 4), &mut bitmap[..n])
                .await?
            {
                c.damaged = true;
                return Ok(None);
            }
            e.span = bitmap[..n]
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |j| 8 * j as u32 + 8 - bitmap[j].leading_zeros());
        }
        match tag.ty {
            RecordType::Put(_) => {
                e.key = c.ctx.key_of(tag);
                if let Some((seq, ord)) = c.ctx.origin {
                    e.stamp = (seq, ord, e.stamp.2);
                    c.ctx.origin = Some((seq, ord.wrapping_add(1)));
                }
                c.puts += 1;
            }
            RecordType::Tombstone => e.key = c.ctx.key_of(tag),
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
    pub(super) async fn find_sync(&mut self, p: u16, from: u32, end: u32, seq: u32) -> Res<Option<u32>, F> {
        let w = ws::<F>();
        let sync_len = stored_len(8, w) as u32;
        let tag = Tag::new(RecordType::Sync, false, 8, 0);
        let sync_word = tag.encode();
        let mut buf = [0u8; 68];
        let mut base = round_up(from as usize, w) as u32;
        while base + sync_len <= end {
            let n = (end - base).min(68) as usize;
            // A block with an unreadable word is searched word by word, skipping that word.
            let whole = self.read_ok(Self::addr(p, base), &mut buf[..n]).await?;
            let mut i = 0usize;
            while i < 64 && i + 4 <= n {
                let word = if whole {
                    Some(le32(&buf[i..i + 4]))
                } else {
                    self.word_ok(Self::addr(p, base + i as u32)).await?
                };
                if word == Some(sync_word) && base + i as u32 + sync_len <= end {
                    let at = base + i as u32;
                    let mut data = [0u8; 8];
                    if !self.read_ok(Self::addr(p, at + TAG_LEN as u32), &mut data).await? {
                        i += w;
                        continue;
                    }
                    if le32(&data[0..4]) == crate::codec::SYNC_MAGIC
                        && le32(&data[4..8]) == seq
                        && self.crc_ok_at(p, at, tag, &Binding::NONE).await?
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

    /// Whether a record of `stored` bytes at `off` lies inside page `p`'s readable part (the
    /// page, or the written part of the head page). Offsets and lengths read from flash are
    /// checked with this before they are used.
    pub(super) fn fits(&self, p: u16, off: u32, stored: u32) -> bool {
        let limit = if p == self.head && self.len > 0 {
            self.head_off.max(PAGE_HEADER_LEN as u32)
        } else {
            page_size::<F>()
        };
        off >= PAGE_HEADER_LEN as u32
            && off
                .checked_add(stored)
                .is_some_and(|e| e <= limit.min(page_size::<F>()))
    }

    /// Reads the record at `(p, off)` with `tag` and checks its CRC, which covers `binding`
    /// first. A record that does not fit in its page, or that cannot be read, fails.
    pub(super) async fn crc_ok_at(&mut self, p: u16, off: u32, tag: Tag, binding: &Binding) -> Res<bool, F> {
        if off
            .checked_add(stored_len(tag.data_len(), ws::<F>()) as u32)
            .is_none_or(|e| e > page_size::<F>())
        {
            return Ok(false);
        }
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
        digest.update(binding.as_bytes());
        digest.update(&e.tag.encode().to_le_bytes());
        let mut buf = [0u8; 64];
        let data_at = e.off + TAG_LEN as u32;
        let len = e.tag.data_len() as u32;
        let mut done = 0u32;
        while done < len {
            let n = (len - done).min(64) as usize;
            if !self.read_ok(Self::addr(p, data_at + done), &mut buf[..n]).await? {
                return Ok(false);
            }
            digest.update(&buf[..n]);
            done += n as u32;
        }
        let stored = self.word_ok(Self::addr(p, data_at + len)).await?;
        Ok(stored == Some(digest.finalize()))
    }

    /// Where the fragment after one ending at `(p, end)` starts: later in the same page, or
    /// first in the next page of the log. `None` if the log ends there.
    pub(super) async fn next_fragment_at(&mut self, p: u16, end: u32) -> Res<Option<(u16, u32, u32)>, F> {
        if end > page_size::<F>() {
            return Ok(None);
        }
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
            let Some(word) = self.word_ok(Self::addr(p, end)).await? else {
                return Ok(None);
            };
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
        let Some(word) = self.word_ok(Self::addr(np, off)).await? else {
            return Ok(None);
        };
        Ok(Some((np, off, word)))
    }

    /// Follows a put's continuation fragments: `(stored bytes, value length)` if the chain is
    /// complete, `None` if it was cut short (a torn or abandoned write: the put never happened).
    pub(super) async fn chain_extent(&mut self, p: u16, off: u32, tag: Tag) -> Res<Option<(u32, u32)>, F> {
        let mut stored = stored_len(tag.data_len(), ws::<F>()) as u32;
        let mut len = tag.data_len() as u32;
        if !self.fits(p, off, stored) {
            return Ok(None);
        }
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
            if self.pages[np as usize].flags & F_TORN != 0 && !self.crc_ok_at(np, noff, t, &Binding::NONE).await? {
                return Ok(None);
            }
            let s = stored_len(t.data_len(), ws::<F>()) as u32;
            if !self.fits(np, noff, s) {
                return Ok(None);
            }
            stored += s;
            len += t.data_len() as u32;
            (page, end, more) = (np, noff + s, t.more);
        }
        Ok(Some((stored, len)))
    }
}
