//! Deferred removals: the RAM set and its flush as Batch records.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
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
    /// charges them off their pages. Each record is one operation of the space model (room for
    /// it first, then its keys located where compaction left them); a failure keeps whatever
    /// was not written pending.
    pub async fn flush_pending(&mut self) -> Res<(), F> {
        let ns = self.pending_ns;
        while self.pending_len > 0 {
            let actual = Self::costs().ctx + stored_len(MAX_BATCH_DATA, ws::<F>()) as u32;
            let user = self.room_to_remove(Self::costs().x, actual, ns).await?;
            let n = self.pending_len as usize;
            let keys = self.pending;
            let mut locs = [Loc::Absent; BATCH];
            self.locate_keys_raw(ns, &keys[..n], &mut locs[..n]).await?;
            // Bit i: keys[i] needs no (more) removal record; `member`: it is in this record.
            // Bitmasks, not arrays, keep the future small (DESIGN.md section 22).
            const { assert!(BATCH <= 32, "flush bitmasks hold BATCH keys") };
            let mut done = 0u32;
            // A key with no record needs no removal record.
            for i in 0..n {
                if locs[i] == Loc::Absent {
                    done |= 1 << i;
                    self.unpend(keys[i]);
                }
            }
            let open = |done: u32, i: usize| done & (1 << i) == 0;
            let Some(first) = (0..n).find(|&i| open(done, i)) else {
                return Ok(());
            };
            // A group: one kind, from its smallest pending id, at most 256 ids wide.
            let kind = keys[first].kind();
            let base = (0..n)
                .filter(|&i| open(done, i) && keys[i].kind() == kind)
                .map(|i| keys[i].id())
                .min()
                .unwrap_or(0);
            let max_ids = 8 * (MAX_BATCH_DATA - 4) as u32;
            let mut member = 0u32;
            let mut bitmap = [0u8; MAX_BATCH_DATA];
            let mut top = 0u32;
            for (i, key) in keys[..n].iter().enumerate() {
                let bit = key.id().wrapping_sub(base);
                if open(done, i) && key.kind() == kind && bit < max_ids {
                    member |= 1 << i;
                    bitmap[4 + bit as usize / 8] |= 1 << (bit % 8);
                    top = top.max(bit);
                }
            }
            let len = 4 + round_up(top as usize / 8 + 1, 4);
            bitmap[0..4].copy_from_slice(&base.to_le_bytes());
            let tag = Tag::new(RecordType::Batch, false, len as u16, kind.code() as u16);
            self.append_small(tag, &bitmap[..len], ns, None, user).await?;
            self.pages[self.head as usize].note_in(ns, kind, base, base + top);
            for i in (0..n).filter(|&i| member & (1 << i) != 0) {
                self.unpend(keys[i]);
                self.uncharge(locs[i]);
                self.recent_drop(ns, keys[i]);
            }
        }
        Ok(())
    }
}
