//! Lookups: the newest event of a key, newest page first, skipping pages by their summary.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

/// The keys a lookup resolves: `(namespace, key)` pairs, or keys of one namespace (which
/// needs no array of pairs in the caller's future).
#[derive(Clone, Copy)]
pub(super) enum Want<'a> {
    Pairs(&'a [(u64, Key)]),
    Keys(u64, &'a [Key]),
}

impl Want<'_> {
    fn len(&self) -> usize {
        match self {
            Want::Pairs(w) => w.len(),
            Want::Keys(_, k) => k.len(),
        }
    }

    fn at(&self, i: usize) -> (u64, Key) {
        match *self {
            Want::Pairs(w) => w[i],
            Want::Keys(ns, k) => (ns, k[i]),
        }
    }
}

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Resolves the newest event of each wanted `(namespace, key)`, newest page first, skipping
    /// pages whose summary cannot hold the key. Pending deferred removals count as removed.
    pub async fn locate_many(&mut self, want: &[(u64, Key)], out: &mut [Loc]) -> Res<(), F> {
        self.locate_inner(Want::Pairs(want), out, true).await
    }

    /// [`Self::locate_many`] ignoring pending deferred removals: where the records still are.
    pub(super) async fn locate_many_raw(&mut self, want: &[(u64, Key)], out: &mut [Loc]) -> Res<(), F> {
        self.locate_inner(Want::Pairs(want), out, false).await
    }

    /// [`Self::locate_many_raw`] for keys of one namespace.
    pub(super) async fn locate_keys_raw(&mut self, ns: u64, keys: &[Key], out: &mut [Loc]) -> Res<(), F> {
        self.locate_inner(Want::Keys(ns, keys), out, false).await
    }

    // `i` is the key's index in `want`, in `out` and the bit in the masks at once.
    #[allow(clippy::needless_range_loop)]
    pub(super) async fn locate_inner(&mut self, want: Want<'_>, out: &mut [Loc], honor_pending: bool) -> Res<(), F> {
        // Bit i of `resolved`: want[i]'s newest event is known (in `out[i]`). Bit i of `seen`:
        // the page being scanned has an event of want[i], the latest of them in `out[i]` (a
        // later record of the page replaces it); at the page's end seen keys are resolved.
        // Bitmasks and `out` instead of per-key arrays keep every lookup's future small.
        const { assert!(BATCH <= 32, "lookup bitmasks hold BATCH keys") };
        let n = want.len().min(BATCH).min(out.len());
        let all = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
        let mut resolved = 0u32;
        for i in 0..n {
            out[i] = Loc::Absent;
            if honor_pending && self.is_pending(want.at(i).0, want.at(i).1) {
                resolved |= 1 << i;
            } else if let Some(loc) = self.recent_loc(want.at(i).0, want.at(i).1).await? {
                out[i] = loc;
                resolved |= 1 << i;
            }
        }
        let open = |resolved: u32, i: usize| resolved & (1 << i) == 0;
        for d in 0..self.len {
            if resolved == all {
                break;
            }
            let p = self.ring_back(self.head, d);
            let info = self.pages[p as usize];
            if !(0..n).any(|i| open(resolved, i) && info.may_hold_in(want.at(i).0, want.at(i).1)) {
                continue;
            }
            let Some(mut c) = self.log_cursor(p).await? else {
                continue;
            };
            let mut seen = 0u32;
            while let Some(e) = self.next_entry(&mut c).await? {
                match e.tag.ty {
                    RecordType::Put(_) => {
                        for i in 0..n {
                            if open(resolved, i)
                                && Some(want.at(i).1) == e.key
                                && want.at(i).0 == e.ns
                                && let Some((stored, len)) = self.chain_extent(p, e.off, e.tag).await?
                            {
                                out[i] = Loc::At {
                                    page: p,
                                    off: e.off,
                                    stored,
                                    len,
                                };
                                seen |= 1 << i;
                            }
                        }
                    }
                    RecordType::Tombstone => {
                        for i in 0..n {
                            if open(resolved, i) && Some(want.at(i).1) == e.key && want.at(i).0 == e.ns {
                                out[i] = Loc::Absent;
                                seen |= 1 << i;
                            }
                        }
                    }
                    RecordType::Batch => {
                        let base = le32(&e.aux[0..4]);
                        for i in 0..n {
                            let k = want.at(i).1;
                            let bit = k.id().wrapping_sub(base);
                            if !open(resolved, i)
                                || want.at(i).0 != e.ns
                                || Some(k.kind()) != e.tag.kind()
                                || bit >= e.span
                            {
                                continue;
                            }
                            let mut byte = [0u8; 1];
                            self.read(Self::addr(p, e.off + TAG_LEN as u32 + 4 + bit / 8), &mut byte)
                                .await?;
                            if byte[0] & (1 << (bit % 8)) != 0 {
                                out[i] = Loc::Absent;
                                seen |= 1 << i;
                            }
                        }
                    }
                    RecordType::Clear => {
                        for i in 0..n {
                            if open(resolved, i) && want.at(i).0 == e.ns {
                                out[i] = Loc::Absent;
                                seen |= 1 << i;
                            }
                        }
                    }
                    _ => {}
                }
            }
            resolved |= seen;
        }
        Ok(())
    }

    /// Where the newest record of one key is, ignoring pending deferred removals (the record
    /// is still on flash and charged until the removal is written).
    pub async fn locate_raw(&mut self, ns: u64, key: Key) -> Res<Loc, F> {
        let mut out = [Loc::Absent];
        self.locate_inner(Want::Keys(ns, &[key]), &mut out, false).await?;
        Ok(out[0])
    }

    /// The tag of the record at `(page, off)`.
    pub async fn tag_at(&mut self, page: u16, off: u32) -> Res<Tag, F> {
        let word = self.read_u32(Self::addr(page, off)).await?;
        Tag::decode(word).map_err(|_| Error::Corrupted)
    }

    /// Where the current value of one key is.
    pub async fn locate(&mut self, ns: u64, key: Key) -> Res<Loc, F> {
        let mut out = [Loc::Absent];
        self.locate_inner(Want::Keys(ns, &[key]), &mut out, true).await?;
        Ok(out[0])
    }
}
