//! The census: live keys and bytes per namespace, for finding identities again.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

/// Live keys of one namespace, as counted by [`Log::census`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NsCount {
    /// The namespace hash.
    pub ns: u64,
    /// Live keys.
    pub keys: u32,
    /// Bytes of their values (without framing).
    pub bytes: u64,
}

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Whether the log can afford to keep a value of `extra` bytes in a namespace of its own
    /// (an identity registry entry) next to the client's data: its charge, with the context
    /// records its namespace costs a page, is at most 1/32 of the capacity, and a drained log
    /// holding it still admits a value of `len` bytes (space.rs).
    pub fn affords(&self, extra: u32, len: u32) -> bool {
        let own = Self::value_bytes(extra) as u64 + 2 * Self::costs().ctx as u64;
        let cap = self.capacity() as u64;
        own <= cap / 32 && own + Self::value_bytes(len) as u64 <= cap
    }

    /// Counts the live keys of every namespace in the log into `out`, one entry per namespace
    /// in the order their first live put is met from the tail page on. Returns how many
    /// entries were filled and whether namespaces were left out because `out` was full.
    /// Pending deferred removals count as removed; namespace `skip` is not counted.
    ///
    /// Cost: one pass over the log, and per [`BATCH`] puts one lookup (like mount's charge
    /// refinement). Reads only.
    pub async fn census(&mut self, skip: u64, out: &mut [NsCount]) -> Res<(usize, bool), F> {
        let mut filled = 0usize;
        let mut more = false;
        for age in (0..self.len).rev() {
            let p = self.ring_back(self.head, age);
            let Some(mut c) = self.log_cursor(p).await? else {
                continue;
            };
            loop {
                let mut at = [0u32; BATCH];
                let mut want = [(0u64, Key::sent(0)); BATCH];
                let mut n = 0;
                while n < BATCH {
                    let Some(e) = self.next_entry(&mut c).await? else { break };
                    if let (RecordType::Put(_), Some(k)) = (e.tag.ty, e.key)
                        && e.ns != skip
                    {
                        at[n] = e.off;
                        want[n] = (e.ns, k);
                        n += 1;
                    }
                }
                if n == 0 {
                    break;
                }
                let mut locs = [Loc::Absent; BATCH];
                self.locate_many(&want[..n], &mut locs[..n]).await?;
                for i in 0..n {
                    let Loc::At { page, off, len, .. } = locs[i] else {
                        continue;
                    };
                    if page != p || off != at[i] {
                        continue;
                    }
                    let ns = want[i].0;
                    let slot = match out[..filled].iter().position(|c| c.ns == ns) {
                        Some(j) => j,
                        None if filled < out.len() => {
                            out[filled] = NsCount { ns, keys: 0, bytes: 0 };
                            filled += 1;
                            filled - 1
                        }
                        None => {
                            more = true;
                            continue;
                        }
                    };
                    out[slot].keys += 1;
                    out[slot].bytes += len as u64;
                }
                if n < BATCH {
                    break;
                }
            }
        }
        Ok((filled, more))
    }
}
