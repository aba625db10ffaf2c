//! The Paho persistence interface (`MQTTClient_persistence`) as a Rust trait, the
//! `before_write` / `after_read` transform hooks, and a blocking facade.

use core::fmt::Debug;

use embedded_storage_async::nor_flash::NorFlash;

use crate::error::Error;
use crate::flash::block_on;
use crate::key::Key;
use crate::log::Maintenance;
use crate::store::{KeyCursor, Store};

/// Paho's persistence callbacks: `open`, `close`, `put`, `get`, `remove`, `keys`, `clear`,
/// `containskey`. Every method keeps Paho's contract: a call that fails leaves the store as
/// it was, and after a power cut during `put`, `remove` or `clear` the affected keys hold their
/// old or their new state and nothing else changed.
///
/// Futures are not `Send`-bounded: embedded executors run them on one core.
///
/// Code written against the trait works on a [`Store`], a [`Transformed`] store (hooks) or
/// another backend:
///
/// ```
/// use mqtt_persist::flash::{SimFlash, block_on};
/// use mqtt_persist::{Config, Error, Key, KeyCursor, Kind, Persistence, Store};
///
/// /// After a reboot: how many outgoing publishes wait for their acknowledgement.
/// async fn unacked<P: Persistence>(p: &mut P) -> Result<usize, Error<P::FlashError>> {
///     let (mut cursor, mut keys, mut count) = (KeyCursor::default(), [Key::sent(0); 16], 0);
///     loop {
///         let n = p.keys(&mut cursor, &mut keys).await?;
///         if n == 0 {
///             return Ok(count);
///         }
///         count += keys[..n].iter().filter(|k| k.kind() == Kind::Sent).count();
///     }
/// }
///
/// let mut flash = SimFlash::<1024, 8, 4, 4>::boxed();
/// let mut store: Store<_, 8> = block_on(Store::mount(&mut *flash, Config::new(64))).map_err(|(_, e)| e)?;
/// block_on(Persistence::open(&mut store, "dev", "tcp://b:1883"))?;
/// for id in 1..=3 {
///     block_on(Persistence::put(&mut store, Key::sent(id), &[b"payload"]))?;
/// }
/// block_on(Persistence::put(&mut store, Key::command(1), &[b"queued"]))?;
/// assert_eq!(block_on(unacked(&mut store))?, 3);
/// # Ok::<(), Error<mqtt_persist::flash::SimFlashError>>(())
/// ```
#[allow(async_fn_in_trait)]
pub trait Persistence {
    /// The flash driver's error.
    type FlashError: Debug;

    /// The most removals [`Self::remove_deferred`] holds before it writes them: after a power
    /// cut at most this many removed keys come back. 0 where deferred removals are durable.
    const MAX_DEFERRED_REMOVALS: usize = 0;

    /// Opens the store for `client_id` at `server_uri`; other identities' keys stay hidden.
    async fn open(&mut self, client_id: &str, server_uri: &str) -> Result<(), Error<Self::FlashError>>;
    /// Makes pending work durable and closes the store.
    async fn close(&mut self) -> Result<(), Error<Self::FlashError>>;
    /// Stores the concatenation of `parts` under `key` atomically, replacing any value.
    async fn put(&mut self, key: Key, parts: &[&[u8]]) -> Result<(), Error<Self::FlashError>>;
    /// Copies the value of `key` into `buf` and returns the filled part.
    async fn get<'b>(&mut self, key: Key, buf: &'b mut [u8]) -> Result<&'b [u8], Error<Self::FlashError>>;
    /// Removes `key` durably.
    async fn remove(&mut self, key: Key) -> Result<(), Error<Self::FlashError>>;
    /// Fills `out` with the next keys in insertion order and returns how many: all of `out`
    /// unless fewer keys are left, 0 when there are no more. `cursor` carries the position.
    async fn keys(&mut self, cursor: &mut KeyCursor, out: &mut [Key]) -> Result<usize, Error<Self::FlashError>>;
    /// Removes every key of the open identity.
    async fn clear(&mut self) -> Result<(), Error<Self::FlashError>>;
    /// Whether `key` has a value.
    async fn contains(&mut self, key: Key) -> Result<bool, Error<Self::FlashError>>;

    /// Removes `key` for every later read, making it durable later (see
    /// [`Store::remove_deferred`]). Only for state whose loss after a power cut is harmless,
    /// such as a QoS 1 publish that was acknowledged. Defaults to a durable [`Self::remove`].
    async fn remove_deferred(&mut self, key: Key) -> Result<(), Error<Self::FlashError>> {
        self.remove(key).await
    }

    /// Makes deferred removals durable. Defaults to nothing to do.
    async fn flush(&mut self) -> Result<(), Error<Self::FlashError>> {
        Ok(())
    }

    /// One step of idle-time maintenance, so that later puts do not erase (see
    /// [`Store::maintain`]); call until it returns [`Maintenance::Idle`]. Defaults to `Idle`:
    /// nothing to do ahead.
    async fn maintain(&mut self) -> Result<Maintenance, Error<Self::FlashError>> {
        Ok(Maintenance::Idle)
    }
}

impl<F: NorFlash, const PAGES: usize> Persistence for Store<F, PAGES> {
    type FlashError = F::Error;
    const MAX_DEFERRED_REMOVALS: usize = crate::log::BATCH;

    async fn open(&mut self, client_id: &str, server_uri: &str) -> Result<(), Error<F::Error>> {
        Store::open(self, client_id, server_uri).await
    }
    async fn close(&mut self) -> Result<(), Error<F::Error>> {
        Store::close(self).await
    }
    async fn put(&mut self, key: Key, parts: &[&[u8]]) -> Result<(), Error<F::Error>> {
        Store::put(self, key, parts).await
    }
    async fn get<'b>(&mut self, key: Key, buf: &'b mut [u8]) -> Result<&'b [u8], Error<F::Error>> {
        Store::get(self, key, buf).await
    }
    async fn remove(&mut self, key: Key) -> Result<(), Error<F::Error>> {
        Store::remove(self, key).await
    }
    async fn keys(&mut self, cursor: &mut KeyCursor, out: &mut [Key]) -> Result<usize, Error<F::Error>> {
        Store::keys(self, cursor, out).await
    }
    async fn clear(&mut self) -> Result<(), Error<F::Error>> {
        Store::clear(self).await
    }
    async fn contains(&mut self, key: Key) -> Result<bool, Error<F::Error>> {
        Store::contains(self, key).await
    }
    async fn remove_deferred(&mut self, key: Key) -> Result<(), Error<F::Error>> {
        Store::remove_deferred(self, key).await
    }
    async fn flush(&mut self) -> Result<(), Error<F::Error>> {
        Store::flush(self).await
    }
    async fn maintain(&mut self) -> Result<Maintenance, Error<F::Error>> {
        Store::maintain(self).await
    }
}

/// Paho's `before_write` / `after_read` hooks, for example to encrypt values. Both see the key
/// and may change the length (an AEAD adds a tag).
pub trait Transform {
    /// Writes the stored form of the value (the concatenation of `plain`) into `out` and
    /// returns its length; `Err(())` refuses the write, which then changes nothing.
    #[allow(clippy::result_unit_err)]
    fn before_write(&mut self, key: Key, plain: &[&[u8]], out: &mut [u8]) -> Result<usize, ()>;

    /// Turns the stored form in `data` into the value, in place, and returns the value's
    /// length (at most `data.len()`); `Err(())` reports data that must not be trusted.
    #[allow(clippy::result_unit_err)]
    fn after_read(&mut self, key: Key, data: &mut [u8]) -> Result<usize, ()>;
}

/// A [`Persistence`] whose values pass through a [`Transform`], with a `BUF`-byte scratch
/// buffer for the transformed value (so `BUF` bounds the stored size of a value).
pub struct Transformed<P, T, const BUF: usize> {
    inner: P,
    hooks: T,
    scratch: [u8; BUF],
}

impl<P, T, const BUF: usize> Transformed<P, T, BUF> {
    /// Wraps `inner` with `hooks`.
    pub const fn new(inner: P, hooks: T) -> Self {
        Transformed {
            inner,
            hooks,
            scratch: [0; BUF],
        }
    }

    /// The wrapped persistence.
    pub fn inner(&mut self) -> &mut P {
        &mut self.inner
    }

    /// Unwraps into the persistence and the hooks.
    pub fn into_parts(self) -> (P, T) {
        (self.inner, self.hooks)
    }
}

impl<P: Persistence, T: Transform, const BUF: usize> Persistence for Transformed<P, T, BUF> {
    type FlashError = P::FlashError;
    const MAX_DEFERRED_REMOVALS: usize = P::MAX_DEFERRED_REMOVALS;

    async fn open(&mut self, client_id: &str, server_uri: &str) -> Result<(), Error<P::FlashError>> {
        self.inner.open(client_id, server_uri).await
    }
    async fn close(&mut self) -> Result<(), Error<P::FlashError>> {
        self.inner.close().await
    }
    async fn put(&mut self, key: Key, parts: &[&[u8]]) -> Result<(), Error<P::FlashError>> {
        let n = self
            .hooks
            .before_write(key, parts, &mut self.scratch)
            .map_err(|()| Error::TransformFailed)?;
        let stored = self.scratch.get(..n).ok_or(Error::TransformFailed)?;
        self.inner.put(key, &[stored]).await
    }
    /// `buf` must hold the stored (transformed) form, which may be longer than the value.
    async fn get<'b>(&mut self, key: Key, buf: &'b mut [u8]) -> Result<&'b [u8], Error<P::FlashError>> {
        let n = self.inner.get(key, buf).await?.len();
        let m = self
            .hooks
            .after_read(key, &mut buf[..n])
            .map_err(|()| Error::TransformFailed)?;
        if m > n {
            return Err(Error::TransformFailed);
        }
        Ok(&buf[..m])
    }
    async fn remove(&mut self, key: Key) -> Result<(), Error<P::FlashError>> {
        self.inner.remove(key).await
    }
    async fn keys(&mut self, cursor: &mut KeyCursor, out: &mut [Key]) -> Result<usize, Error<P::FlashError>> {
        self.inner.keys(cursor, out).await
    }
    async fn clear(&mut self) -> Result<(), Error<P::FlashError>> {
        self.inner.clear().await
    }
    async fn contains(&mut self, key: Key) -> Result<bool, Error<P::FlashError>> {
        self.inner.contains(key).await
    }
    async fn remove_deferred(&mut self, key: Key) -> Result<(), Error<P::FlashError>> {
        self.inner.remove_deferred(key).await
    }
    async fn flush(&mut self) -> Result<(), Error<P::FlashError>> {
        self.inner.flush().await
    }
    async fn maintain(&mut self) -> Result<Maintenance, Error<P::FlashError>> {
        self.inner.maintain().await
    }
}

/// A blocking facade over any [`Persistence`] whose futures never pend, which is the case for
/// a [`Store`] on blocking flash (wrap it in [`crate::flash::BlockingFlash`]). Each method runs
/// the async one to completion with [`block_on`].
///
/// ```
/// use mqtt_persist::flash::{BlockingFlash, SimFlash, block_on};
/// use mqtt_persist::{Blocking, Config, Error, Key, KeyCursor, Store};
///
/// // Any `embedded_storage::nor_flash::NorFlash` (a blocking HAL driver) in `BlockingFlash`.
/// let mut chip = SimFlash::<1024, 8, 4, 4>::boxed();
/// let store: Store<_, 8> = block_on(Store::mount(BlockingFlash(&mut *chip), Config::new(64))).map_err(|(_, e)| e)?;
/// let mut p = Blocking(store);
/// p.open("sensor-17", "tcp://broker.local:1883")?;
/// p.put(Key::command(1), &[b"plant/temp", b"21.5"])?;
/// p.put(Key::command(2), &[b"plant/temp", b"21.7"])?;
/// let mut keys = [Key::sent(0); 4];
/// assert_eq!(p.keys(&mut KeyCursor::default(), &mut keys)?, 2);
/// assert_eq!(keys[..2], [Key::command(1), Key::command(2)]);
/// p.remove(Key::command(1))?;
/// p.close()?;
/// # Ok::<(), Error<mqtt_persist::flash::SimFlashError>>(())
/// ```
pub struct Blocking<P>(pub P);

impl<P: Persistence> Blocking<P> {
    /// See [`Persistence::open`].
    pub fn open(&mut self, client_id: &str, server_uri: &str) -> Result<(), Error<P::FlashError>> {
        block_on(self.0.open(client_id, server_uri))
    }
    /// See [`Persistence::close`].
    pub fn close(&mut self) -> Result<(), Error<P::FlashError>> {
        block_on(self.0.close())
    }
    /// See [`Persistence::put`].
    pub fn put(&mut self, key: Key, parts: &[&[u8]]) -> Result<(), Error<P::FlashError>> {
        block_on(self.0.put(key, parts))
    }
    /// See [`Persistence::get`].
    pub fn get<'b>(&mut self, key: Key, buf: &'b mut [u8]) -> Result<&'b [u8], Error<P::FlashError>> {
        block_on(self.0.get(key, buf))
    }
    /// See [`Persistence::remove`].
    pub fn remove(&mut self, key: Key) -> Result<(), Error<P::FlashError>> {
        block_on(self.0.remove(key))
    }
    /// See [`Persistence::remove_deferred`].
    pub fn remove_deferred(&mut self, key: Key) -> Result<(), Error<P::FlashError>> {
        block_on(self.0.remove_deferred(key))
    }
    /// See [`Persistence::flush`].
    pub fn flush(&mut self) -> Result<(), Error<P::FlashError>> {
        block_on(self.0.flush())
    }
    /// See [`Persistence::maintain`]: one step; call until it returns [`Maintenance::Idle`].
    pub fn maintain(&mut self) -> Result<Maintenance, Error<P::FlashError>> {
        block_on(self.0.maintain())
    }
    /// See [`Persistence::keys`].
    pub fn keys(&mut self, cursor: &mut KeyCursor, out: &mut [Key]) -> Result<usize, Error<P::FlashError>> {
        block_on(self.0.keys(cursor, out))
    }
    /// See [`Persistence::clear`].
    pub fn clear(&mut self) -> Result<(), Error<P::FlashError>> {
        block_on(self.0.clear())
    }
    /// See [`Persistence::contains`].
    pub fn contains(&mut self, key: Key) -> Result<bool, Error<P::FlashError>> {
        block_on(self.0.contains(key))
    }
}
