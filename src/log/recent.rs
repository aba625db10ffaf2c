//! The cache of the newest puts, so lookups of recent keys need no scan.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
    pub(super) fn recent_find(&self, key: Key) -> Option<usize> {
        self.recent
            .iter()
            .position(|&(id, meta)| meta != RECENT_EMPTY && id == key.id() && meta >> 29 == key.kind().code() as u32)
    }

    /// Remembers that the newest record of `key` (namespace `ns`) starts at `(page, off)`;
    /// records moved by compaction only update an entry that is already there.
    pub(super) fn recent_put(&mut self, ns: u64, key: Key, page: u16, off: u32, insert: bool) {
        if ns != self.recent_ns {
            if !insert {
                return;
            }
            self.recent_clear();
            self.recent_ns = ns;
        }
        let meta = ((key.kind().code() as u32) << 29) | ((page as u32) << 17) | off;
        let slot = match self.recent_find(key) {
            Some(i) => i,
            None if !insert => return,
            None => {
                let i = self.recent_next as usize;
                self.recent_next = ((i + 1) % RECENT) as u8;
                i
            }
        };
        self.recent[slot] = (key.id(), meta);
    }

    /// Forgets `key` (its newest event is now a removal).
    pub(super) fn recent_drop(&mut self, ns: u64, key: Key) {
        if ns == self.recent_ns
            && let Some(i) = self.recent_find(key)
        {
            self.recent[i].1 = RECENT_EMPTY;
        }
    }

    /// Forgets every entry pointing into page `p` (it left the log).
    pub(super) fn recent_drop_page(&mut self, p: u16) {
        for e in self.recent.iter_mut() {
            if e.1 != RECENT_EMPTY && (e.1 >> 17) & 0xFFF == p as u32 {
                e.1 = RECENT_EMPTY;
            }
        }
    }

    pub(super) fn recent_clear(&mut self) {
        self.recent = [(0, RECENT_EMPTY); RECENT];
    }

    /// The location of `key` if it is a recent put: read its tag to check and size it.
    pub(super) async fn recent_loc(&mut self, ns: u64, key: Key) -> Res<Option<Loc>, F> {
        let Some(i) = self.recent_find(key).filter(|_| ns == self.recent_ns) else {
            return Ok(None);
        };
        let meta = self.recent[i].1;
        let (page, off) = (((meta >> 17) & 0xFFF) as u16, meta & 0x1_FFFF);
        let tag = match self.tag_at(page, off).await {
            Ok(t) if t.ty == RecordType::Put(key.kind()) && t.id_low == key.id() as u16 => t,
            _ => return Ok(None),
        };
        Ok(self
            .chain_extent(page, off, tag)
            .await?
            .map(|(stored, len)| Loc::At { page, off, stored, len }))
    }
}
