//! The client operations that write: put, remove, clear. Each asks the space model for room
//! ([`Log::room_for`]) and nothing else decides about space; the store layer above only maps
//! Paho's API onto these.

use embedded_storage_async::nor_flash::NorFlash;

use super::*;

impl<F: NorFlash, const N: usize> Log<F, N> {
    /// Room for one client operation that appends at most `need` bytes (its charge plus `X`),
    /// compacting as needed. Below capacity this cannot fail with `Full` (space.rs); that it
    /// does not is checked in debug builds.
    pub(super) async fn room_for(&mut self, need: u32, ns: u64) -> Res<(), F> {
        self.check_head().await?;
        let sound = self.sound();
        self.op_sound = sound;
        let r = self.make_room(need, ns).await;
        self.op_sound = false;
        self.check_room(r, need, sound)
    }

    /// [`Self::room_for`] for a write that only removes. Where the model's reserve cannot be
    /// restored (an image over capacity, written by something else, or a damaged live value
    /// that blocks compaction of its page: it is never copied into a valid-looking record), a
    /// removal that still fits in the free space goes ahead: removing keys is how such a store
    /// gets back below capacity.
    ///
    /// Returns whether the write is a normal client write (`true`) or such a fallback, which
    /// may also take the last free page: a removal adds no live data, and the pages it makes
    /// dead are retired by the next page header.
    pub(super) async fn room_to_remove(&mut self, need: u32, actual: u32, ns: u64) -> Res<bool, F> {
        self.check_head().await?;
        let sound = self.sound();
        self.op_sound = sound;
        let r = self.make_room(need, ns).await;
        self.op_sound = false;
        match r {
            Err(Error::Corrupted | Error::Full) if !sound && self.avail() >= actual => Ok(false),
            Err(Error::Corrupted) if self.avail() >= actual => Ok(false),
            r => self.check_room(r, need, sound).map(|()| true),
        }
    }

    /// Whether the log is inside the space model: the charge (live data and the damage of
    /// interrupted writes) within capacity and the reserve free. Every sequence of operations
    /// from an empty store stays inside it, with any number of power cuts: what each cut
    /// wastes beyond its own record is charged (space.rs), so no count of cuts is assumed.
    fn sound(&self) -> bool {
        self.charged() <= self.capacity() && self.avail() >= self.keep
    }

    fn check_room(&self, r: Res<(), F>, need: u32, sound: bool) -> Res<(), F> {
        debug_assert!(
            !matches!(r, Err(Error::Full)) || !sound,
            "room for {need} bytes refused below capacity ({} of {}; avail {}, keep {}, head {} at {}, {} log pages)",
            self.charged(),
            self.capacity(),
            self.avail(),
            self.keep,
            self.head,
            self.head_off,
            self.len
        );
        r
    }

    /// Stores the concatenation of `parts` (`len` bytes) under `key` in namespace `ns`,
    /// replacing any value. Refused with [`Error::Full`] only when the charge (live data and
    /// damage, space.rs) plus this value would exceed the capacity (a value it replaces counts:
    /// both are on flash until the new one is whole), after pending deferred removals were
    /// written and, if the value fits without the damage, after compaction tried to reclaim
    /// it. An admitted put always completes (unless the flash fails).
    pub async fn put(&mut self, ns: u64, key: Key, parts: &[&[u8]], len: u32) -> Res<(), F> {
        // Recovery first: admission counts the damage it makes.
        self.check_head().await?;
        if !self.admits(len) {
            if self.pending_len > 0 {
                self.flush_pending().await?;
            }
            if !self.admits(len) && self.charged() - self.damaged() + Self::value_bytes(len) <= self.cap {
                self.reclaim_damage(ns).await?;
            }
            if !self.admits(len) {
                return Err(Error::Full);
            }
        }
        self.room_for(Self::value_bytes(len) + Self::costs().x, ns).await?;
        // Compaction may have moved the old value: find it again.
        let old = self.locate_raw(ns, key).await?;
        let mut src = Source::ram(parts);
        self.append_value(key, ns, None, len, &mut src).await?;
        self.unpend(key);
        self.uncharge(old);
        Ok(())
    }

    /// Removes `key` durably with a tombstone. [`Error::NotFound`] if it has no value (a
    /// pending deferred removal counts as removed). Never [`Error::Full`] below capacity.
    pub async fn remove(&mut self, ns: u64, key: Key) -> Res<(), F> {
        if self.is_pending(ns, key) || self.locate(ns, key).await? == Loc::Absent {
            return Err(Error::NotFound);
        }
        let actual = Self::costs().ctx + stored_len(0, ws::<F>()) as u32;
        let user = self.room_to_remove(Self::costs().x, actual, ns).await?;
        let loc = self.locate(ns, key).await?;
        let tag = Tag::new(RecordType::Tombstone, false, key.kind().code() as u16, key.id() as u16);
        self.append_small(tag, &[], ns, Some(key), user).await?;
        self.uncharge(loc);
        Ok(())
    }

    /// Removes every key of namespace `ns` with one `Clear` record; pending removals of it are
    /// dropped. Never [`Error::Full`] below capacity.
    pub async fn clear(&mut self, ns: u64) -> Res<(), F> {
        let actual = Self::costs().ctx + stored_len(0, ws::<F>()) as u32;
        let user = self.room_to_remove(Self::costs().x, actual, ns).await?;
        self.append_small(Tag::new(RecordType::Clear, false, 0, 0), &[], ns, None, user)
            .await?;
        if self.pending_ns == ns {
            self.pending_len = 0;
        }
        self.cleared(ns).await
    }
}
