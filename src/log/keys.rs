//! Keys in insertion order.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Up to `out.len()` (at most [`KEYS_BATCH`]) live keys of namespace `ns` after the cursor
    /// `at`, in insertion order. Returns how many were written, the cursor to continue
    /// from and whether the listing reached the end (no live key after the returned cursor);
    /// `(0, _, true)` means there are no more. A batch can hold fewer keys than `out` and still
    /// not be the last (candidates overwritten since were skipped). `listed_before`: the
    /// caller's current call already listed keys with this cursor (a batch that only finds
    /// the end then leaves the cursor tracked as active: the caller will come back). [`Error::CursorExpired`] if compaction moved
    /// records since `at` was handed out and it is no longer among the [`KEY_CURSORS`] most
    /// recently used cursors.
    pub async fn next_keys(
        &mut self,
        ns: u64,
        at: CursorPos,
        out: &mut [Key],
        listed_before: bool,
    ) -> Res<(usize, CursorPos, bool), F> {
        if out.is_empty() {
            return Ok((0, at, false));
        }
        let after = self.cursor_now(at)?;
        let (n, next, end) = self.next_keys_after(ns, after, out).await?;
        let id = if at.2 != 0 {
            at.2
        } else {
            self.cursor_uses = self.cursor_uses.wrapping_add(1).max(1);
            self.cursor_uses
        };
        let pos = (next, self.moves, id);
        // A listing that reached the end stays tracked (it may poll for new keys) but is the
        // first to give its slot to another.
        self.cursor_track(pos, n > 0 || listed_before);
        Ok((n, pos, end))
    }

    /// Records compaction moved since mount.
    pub fn moves(&self) -> u32 {
        self.moves
    }

    /// Where the cursor `at` is now.
    fn cursor_now(&self, at: CursorPos) -> Res<Stamp, F> {
        let (stamp, moves, _) = at;
        if stamp == (0, 0, 0) || moves == self.moves {
            return Ok(stamp);
        }
        self.cursors
            .iter()
            .flatten()
            .find(|c| c.issued == at)
            .map(|c| c.now)
            .ok_or(Error::CursorExpired)
    }

    /// Tracks the cursor `pos` handed out: in its listing's slot, else in a free one, else in
    /// the least recently used one. A copy of a cursor that another copy moved on since is no
    /// longer tracked.
    fn cursor_track(&mut self, pos: CursorPos, listing: bool) {
        self.cursor_uses = self.cursor_uses.wrapping_add(1).max(1);
        let slot = CursorSlot {
            issued: pos,
            now: pos.0,
            used: if listing { self.cursor_uses } else { 0 },
        };
        let i = self
            .cursors
            .iter()
            .position(|c| c.is_some_and(|c| c.issued.2 == pos.2))
            .or_else(|| self.cursors.iter().position(Option::is_none))
            .unwrap_or_else(|| {
                let age = |c: &Option<CursorSlot>| c.map_or(0, |c| self.cursor_uses.wrapping_sub(c.used));
                (0..KEY_CURSORS).max_by_key(|&i| age(&self.cursors[i])).unwrap_or(0)
            });
        self.cursors[i] = Some(slot);
    }

    /// Compaction moved one live put from stamp `old` to `new`, keeping the order of all live
    /// puts: every tracked cursor keeps exactly the keys before it before it. A cursor after
    /// `old` but not after `new` (ordinals move down) goes just below `new`; one at or after
    /// `old` but below `new` goes to `new`. Stamps of records are unique and at least a record
    /// apart, so the position just below `new` is no record's.
    pub(super) fn cursors_moved(&mut self, old: Stamp, new: Stamp) {
        self.moves = self.moves.wrapping_add(1);
        for c in self.cursors.iter_mut().flatten() {
            if old <= c.now && new > c.now {
                c.now = new;
            } else if old > c.now && new <= c.now {
                c.now = (new.0, new.1, new.2.wrapping_sub(1));
            }
        }
    }

    /// The third value is true when the scan saw fewer than a batch of candidates: every put
    /// after the returned stamp was examined, so the listing is at its end.
    async fn next_keys_after(&mut self, ns: u64, after: Stamp, out: &mut [Key]) -> Res<(usize, Stamp, bool), F> {
        let b = out.len().min(KEYS_BATCH);
        let mut after = after;
        if b == 0 {
            return Ok((0, after, false));
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
                return Ok((0, after, true));
            }
            let mut want = [(0u64, Key::sent(0)); KEYS_BATCH];
            for i in 0..n {
                want[i] = (ns, cands[i].1);
            }
            let mut locs = [Loc::Absent; KEYS_BATCH];
            self.locate_many(&want[..n], &mut locs[..n]).await?;
            let mut m = 0;
            for i in 0..n {
                if let Loc::At { page, off, .. } = locs[i]
                    && page == cands[i].2
                    && off == cands[i].3
                {
                    out[m] = cands[i].1;
                    m += 1;
                }
            }
            after = no_memmove(cands[n - 1].0);
            if m > 0 || n < b {
                return Ok((m, after, n < b));
            }
        }
    }
}
