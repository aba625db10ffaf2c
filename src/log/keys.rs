//! Keys in insertion order.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
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
                if let Loc::At { page, off, .. } = locs[i]
                    && page == cands[i].2
                    && off == cands[i].3
                {
                    out[m] = cands[i].1;
                    m += 1;
                }
            }
            after = cands[n - 1].0;
            if m > 0 || n < b {
                return Ok((m, after));
            }
        }
    }
}
