//! The key-value store: Paho's semantics (namespaces, atomic put, remove, clear, keys in
//! insertion order) on top of the log.

use embedded_storage_async::nor_flash::NorFlash;

use crate::codec::namespace_hash;
use crate::error::Error;
use crate::identity::REGISTRY_NS;
use crate::key::Key;
use crate::log::{Chain, CursorPos, KEYS_BATCH, Loc, Log, Maintenance, MountReport, Source};

type Res<T, F> = Result<T, Error<<F as embedded_storage_async::nor_flash::ErrorType>::Error>>;

/// Store configuration. Build it in a `const` to catch mistakes at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The largest value `put` accepts, in bytes. Compaction keeps room for one value of this
    /// size in reserve, so a smaller limit leaves more room for data. At most one page minus
    /// framing (see [`Store::max_value_limit`]).
    pub max_value_len: usize,
}

impl Config {
    /// A configuration with the given value limit (must not be 0).
    pub const fn new(max_value_len: usize) -> Config {
        assert!(max_value_len > 0, "max_value_len must be at least 1");
        Config { max_value_len }
    }
}

/// Where [`Store::keys`] continues from: start with `KeyCursor::default()`.
///
/// A cursor belongs to the store instance that handed it out (not to a remount). Writes between
/// two calls are fine: the store keeps the [`KEY_CURSORS`](crate::KEY_CURSORS) most recently
/// used cursors exact while compaction moves records, so each key live throughout an
/// iteration is listed exactly once, in order (a key put again meanwhile is listed again, at
/// its new place). An older cursor gets [`Error::CursorExpired`] once compaction has moved a
/// record since it was handed out: start again from `KeyCursor::default()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCursor(CursorPos);

/// A Paho-style persistence store on NOR flash of `PAGES` erase pages.
///
/// It owns the flash ([`Store::into_flash`] gives it back). RAM use is this struct: 20 bytes
/// per page plus a fixed ~900 bytes; every operation works in bounded stack buffers.
///
/// ```
/// use mqtt_persist::flash::{SimFlash, block_on};
/// use mqtt_persist::{Config, Error, Key, Store};
///
/// // 8 pages of 1 KiB, 4-byte words, ECC rules (no word programmed twice between erases).
/// let mut flash = SimFlash::<1024, 8, 4, 4>::boxed();
/// flash.set_ecc(true);
/// block_on(async {
///     let mut store: Store<_, 8> = Store::mount(&mut *flash, Config::new(256)).await.map_err(|(_, e)| e)?;
///     store.open("sensor-17", "tcp://broker.local:1883").await?;
///     store.put(Key::sent(7), &[b"plant/temp", b"21.5"]).await?;
///     let mut buf = [0u8; 256];
///     assert_eq!(store.get(Key::sent(7), &mut buf).await?, b"plant/temp21.5");
///     store.remove(Key::sent(7)).await?; // PUBACK
///     assert_eq!(store.contains(Key::sent(7)).await, Ok(false));
///     store.close().await
/// })?;
/// # Ok::<(), Error<mqtt_persist::flash::SimFlashError>>(())
/// ```
pub struct Store<F: NorFlash, const PAGES: usize> {
    pub(crate) log: Log<F, PAGES>,
    pub(crate) ns: Option<u64>,
    /// The identity registry holds no entry of an empty namespace other than the open one
    /// (checked since the open): a `Full` put need not look for entries to remove.
    pub(crate) registry_clean: bool,
}

impl<F: NorFlash, const PAGES: usize> Store<F, PAGES> {
    /// Mounts the store: reads every page header and the newest page, rebuilds the RAM index,
    /// and recovers from an interrupted write. Writes nothing. On failure the flash is given
    /// back with the error.
    ///
    /// A default `max_value_len` of a quarter page is used by [`Store::mount_default`].
    pub async fn mount(flash: F, config: Config) -> Result<Self, (F, Error<F::Error>)> {
        let log = Log::mount(flash, config.max_value_len as u32).await?;
        Ok(Store {
            log,
            ns: None,
            registry_clean: false,
        })
    }

    /// [`Store::mount`] with `max_value_len` a quarter of the page payload.
    pub async fn mount_default(flash: F) -> Result<Self, (F, Error<F::Error>)> {
        let max = (Log::<F, PAGES>::payload() / 4) as usize;
        Self::mount(flash, Config { max_value_len: max }).await
    }

    /// The largest `max_value_len` this flash geometry supports.
    pub fn max_value_limit() -> usize {
        Log::<F, PAGES>::max_value_limit() as usize
    }

    /// What the mount found: damaged pages or records, an interrupted write.
    pub fn mount_report(&self) -> MountReport {
        self.log.report()
    }

    /// Gives the flash back (pending deferred removals are lost: call `close` first).
    pub fn into_flash(self) -> F {
        self.log.into_flash()
    }

    /// The flash, for its statistics.
    pub fn flash(&self) -> &F {
        self.log.flash()
    }

    /// Records compaction has moved since mount (a diagnostic: each is one copy).
    pub fn moved_records(&self) -> u32 {
        self.log.moves()
    }

    /// Space figures: bytes still available to values, and live bytes charged now.
    pub fn usage(&self) -> Usage {
        Usage {
            capacity_bytes: self.log.capacity() as u64,
            live_bytes: (self.log.charged() - self.log.damaged()) as u64,
            damaged_bytes: self.log.damaged() as u64,
            degraded: self.log.degraded(),
            log_pages: self.log.log_pages(),
        }
    }

    /// The bytes of capacity a value of `len` bytes is charged while it is live, as counted in
    /// [`Usage::live_bytes`]: a `put` of it is refused with [`Error::Full`] only when
    /// `live_bytes + damaged_bytes + charge_for(len)` would exceed [`Usage::capacity_bytes`]
    /// (a value it replaces counts until the new one is written: a put is atomic, so both take
    /// space at once; damage left by power cuts counts until compaction, which such a put
    /// tries first, reclaims it).
    pub fn charge_for(&self, len: usize) -> u64 {
        Log::<F, PAGES>::value_bytes(len.min(u32::MAX as usize) as u32) as u64
    }

    /// Test support: recomputes the live charges from the flash and returns the first page
    /// whose running count differed, as `(page, counted, exact)`. `None` means the running
    /// counts are exact. Reads the whole log.
    #[doc(hidden)]
    pub async fn audit_charges(&mut self) -> Res<Option<(u16, u32, u32)>, F> {
        self.log.audit_charges().await
    }

    fn ns(&self) -> Res<u64, F> {
        self.ns.ok_or(Error::NotOpen)
    }

    /// Opens the namespace of `client_id` at `server_uri`. Keys of other namespaces on the
    /// same flash stay invisible and untouched. Opening again with the same identity is a
    /// no-op; with another identity it is [`Error::AlreadyOpen`].
    ///
    /// The first `open` of an identity registers its client id and server URI (a small value
    /// in the store's registry, [`crate::identity`]) so that a backlog left under another
    /// spelling of the identity can be found again with [`Store::identities`]. Later opens
    /// only look the entry up.
    pub async fn open(&mut self, client_id: &str, server_uri: &str) -> Res<(), F> {
        let ns = namespace_hash(client_id, server_uri);
        if ns == REGISTRY_NS {
            return Err(Error::ReservedNamespace);
        }
        match self.ns {
            Some(cur) if cur == ns => Ok(()),
            Some(_) => Err(Error::AlreadyOpen),
            None => {
                self.register(ns, client_id, server_uri).await?;
                self.ns = Some(ns);
                self.registry_clean = false;
                Ok(())
            }
        }
    }

    /// Makes deferred removals durable and closes the namespace.
    pub async fn close(&mut self) -> Res<(), F> {
        self.ns()?;
        self.log.flush_pending().await?;
        self.ns = None;
        Ok(())
    }

    /// Whether a namespace is open.
    pub fn is_open(&self) -> bool {
        self.ns.is_some()
    }

    /// Stores the concatenation of `parts` under `key`, replacing any value, as one atomic
    /// record: after a power cut the key holds the old or the new value, nothing else.
    ///
    /// Cancellation: dropping the future part-way is a power cut as far as the flash is
    /// concerned; the key keeps its old value.
    pub async fn put(&mut self, key: Key, parts: &[&[u8]]) -> Res<(), F> {
        let ns = self.ns()?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.max_value() {
            return Err(Error::TooLarge { max: self.max_value() });
        }
        match self.log.put(ns, key, parts, len as u32).await {
            // Entries of namespaces emptied since are space a drained store must get back.
            Err(Error::Full) if !self.registry_clean => {
                self.registry_clean = true;
                if self.collect_stale(ns).await? {
                    self.log.put(ns, key, parts, len as u32).await
                } else {
                    Err(Error::Full)
                }
            }
            r => r,
        }
    }

    /// Copies the value of `key` into `buf` and returns it. [`Error::BufferTooSmall`] names the
    /// size needed; [`Error::Corrupted`] means the stored bytes failed their CRC.
    pub async fn get<'b>(&mut self, key: Key, buf: &'b mut [u8]) -> Res<&'b [u8], F> {
        let ns = self.ns()?;
        self.get_in(ns, key, buf).await
    }

    /// [`Self::get`] in namespace `ns`.
    pub(crate) async fn get_in<'b>(&mut self, ns: u64, key: Key, buf: &'b mut [u8]) -> Res<&'b [u8], F> {
        match self.log.locate(ns, key).await? {
            Loc::Absent => Err(Error::NotFound),
            Loc::At { page, off, len, .. } => {
                let len = len as usize;
                if buf.len() < len {
                    return Err(Error::BufferTooSmall { needed: len });
                }
                let tag = self.log.tag_at(page, off).await?;
                let mut src = Source::Flash(Chain::value(page, off, tag, ns, key));
                let got = self.log.pull(&mut src, &mut buf[..len]).await?;
                if got != len {
                    return Err(Error::Corrupted);
                }
                // Reading the last byte does not reach the last CRC when the value ends a
                // fragment exactly: pull once more to check it.
                let mut end = [0u8; 1];
                if self.log.pull(&mut src, &mut end).await? != 0 {
                    return Err(Error::Corrupted);
                }
                Ok(&buf[..len])
            }
        }
    }

    /// The stored length of the value of `key`.
    pub async fn len_of(&mut self, key: Key) -> Res<usize, F> {
        let ns = self.ns()?;
        match self.log.locate(ns, key).await? {
            Loc::Absent => Err(Error::NotFound),
            Loc::At { len, .. } => Ok(len as usize),
        }
    }

    /// Removes `key` durably: when this returns, a power cut cannot bring it back.
    /// [`Error::NotFound`] if it is absent (also when a deferred removal already took it).
    /// Never fails with [`Error::Full`] below capacity: the space model reserves what any
    /// removal appends (DESIGN.md section 9); above it (an older image, repeated power cuts in
    /// a row) a removal that fits in the free space still goes ahead.
    pub async fn remove(&mut self, key: Key) -> Res<(), F> {
        let ns = self.ns()?;
        self.log.remove(ns, key).await
    }

    /// Removes `key` now as far as every read is concerned, but writes the removal later, in a
    /// batch with up to 31 others (when the set is full, at `flush`/`close`, or when a put
    /// needs the room). A power cut before then brings the key back: use this only
    /// where a duplicate is harmless, such as a QoS 1 PUBACK (the message is resent, which
    /// at-least-once allows). Does not read flash and does not check that the key exists.
    pub async fn remove_deferred(&mut self, key: Key) -> Res<(), F> {
        let ns = self.ns()?;
        if self.log.is_pending(ns, key) {
            return Err(Error::NotFound);
        }
        if !self.log.pend(ns, key) {
            self.log.flush_pending().await?;
            if !self.log.pend(ns, key) {
                return Err(Error::LogicBug);
            }
        }
        Ok(())
    }

    /// Writes deferred removals now.
    pub async fn flush(&mut self) -> Res<(), F> {
        self.ns()?;
        self.log.flush_pending().await
    }

    /// Does one step of the work a later write would otherwise do on its way, and says which:
    /// the recovery of the head page after a mount, erasing (or checking blank) the next pages
    /// the log will open, or one compaction step. Call it while the device is idle (between
    /// publishes), until it returns [`Maintenance::Idle`]: then, until writes use up the pages
    /// it prepared (at least a page of records), a `put` of up to `max_value_len` bytes erases
    /// nothing and compacts nothing, so its device time is that of programming its own record.
    ///
    /// Bounded: at most one page erase per call, or one compaction step (at most a page of
    /// copies); called in a loop with no write between the calls it returns `Idle` after at most
    /// [`Store::maintain_bound`] calls. Needs no open namespace.
    ///
    /// Nothing on flash differs from what writes do: a page erased ahead is an erased page
    /// outside the log. Power loss or cancellation part-way leaves what it would during the put
    /// that would have done the same step; after a remount nothing prepared is trusted, and a
    /// page is checked or erased again before use (DESIGN.md section 23). Never [`Error::Full`].
    pub async fn maintain(&mut self) -> Res<Maintenance, F> {
        self.log.maintain().await
    }

    /// The most [`Store::maintain`] calls in a row, with no write between them, before one
    /// returns [`Maintenance::Idle`].
    pub fn maintain_bound() -> usize {
        Log::<F, PAGES>::maintain_bound()
    }

    /// Deferred removals not yet written.
    pub fn pending_removals(&self) -> usize {
        self.log.pending().len()
    }

    /// Whether `key` has a value.
    pub async fn contains(&mut self, key: Key) -> Res<bool, F> {
        let ns = self.ns()?;
        Ok(self.log.locate(ns, key).await? != Loc::Absent)
    }

    /// Removes every key of the open namespace with one record: after a power cut either all
    /// keys are there or none.
    pub async fn clear(&mut self) -> Res<(), F> {
        let ns = self.ns()?;
        self.log.clear(ns).await
    }

    /// Fills `out` with the next keys in insertion order (the order of their latest `put`,
    /// kept across compaction) and returns how many: `out.len()` unless fewer keys are left,
    /// 0 when there are no more. `cursor` remembers the position for the next call. The log is
    /// read in batches of [`KEYS_BATCH`] keys (the stack holds one batch
    /// whatever the slice's length), so a long slice costs more reads, not more RAM.
    /// Allocates nothing.
    pub async fn keys(&mut self, cursor: &mut KeyCursor, out: &mut [Key]) -> Res<usize, F> {
        let ns = self.ns()?;
        self.keys_in(ns, cursor, out).await
    }

    /// [`Self::keys`] in namespace `ns`: batches of [`KEYS_BATCH`] until `out` is full or the
    /// log says the listing reached its end.
    pub(crate) async fn keys_in(&mut self, ns: u64, cursor: &mut KeyCursor, out: &mut [Key]) -> Res<usize, F> {
        let mut filled = 0;
        while filled < out.len() {
            let take = (out.len() - filled).min(KEYS_BATCH);
            let (n, next, end) = self
                .log
                .next_keys(ns, cursor.0, &mut out[filled..filled + take], filled > 0)
                .await?;
            debug_assert!(n <= take, "next_keys returned more keys than its slice holds");
            cursor.0 = next;
            filled += n;
            if end {
                break;
            }
        }
        Ok(filled)
    }

    fn max_value(&self) -> usize {
        self.log.max_value() as usize
    }
}

/// Space use of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Usage {
    /// Bytes that live records (with their framing) may take in all.
    pub capacity_bytes: u64,
    /// Bytes charged to live records now: exact, also right after a mount.
    pub live_bytes: u64,
    /// Bytes interrupted writes (power cuts) left in pages not yet reclaimed, charged like live
    /// data: a put is refused only when `live_bytes + damaged_bytes` plus its charge exceeds
    /// `capacity_bytes`, after compaction tried to reclaim the damage. Zero without cuts.
    pub damaged_bytes: u64,
    /// Power cuts in a row (two or more interrupted operations with none completed between
    /// them, near full) took more free space than the store reserves for one: a put may then
    /// be refused below capacity until removals or compaction restore the reserve. Removals
    /// always go through (DESIGN.md section 9).
    pub degraded: bool,
    /// Pages in the log.
    pub log_pages: u32,
}
