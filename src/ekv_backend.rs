//! [`Persistence`] over an existing [`ekv::Database`] (feature `ekv`), for devices that
//! already keep one and would rather not give the MQTT client a partition of its own.
//!
//! Keys are stored as 13 bytes: `[namespace hash u64 BE][kind code u8][id u32 BE]`, so ekv's
//! sorted keys group a namespace and, inside it, a kind, in id order.
//!
//! What this backend provides, and what it does not, compared with [`crate::Store`]:
//! - `keys()` returns keys sorted by kind, then id — not in insertion order, which ekv cannot
//!   give. For `c-` and `q-` keys (sequence numbers) that is publish order as long as the
//!   sequence does not wrap; for `s-`/`sc-`/`r-` keys (packet ids, which are reused) it is not.
//!   A [`KeyCursor`] cannot carry an ekv position, so the backend keeps the position itself:
//!   one iteration at a time, starting after the previous one returned 0 or after
//!   [`EkvPersistence::rewind_keys`].
//! - Every `put` and `remove` is one ekv write transaction; ekv writes a new file per
//!   transaction, so each one costs several erases (see BENCHMARKS.md: two to four per
//!   message, about 20x the write amplification of [`crate::Store`]). Once ekv is full it cannot
//!   record a delete either.
//! - `remove_deferred` is the trait's default: a durable remove (ekv has no cheaper one).
//! - `clear` deletes up to 32 keys per transaction: atomic only for namespaces of at most 32 keys.
//! - Values are concatenated into a `MAX`-byte buffer inside the backend (ekv takes one slice),
//!   so RAM is `MAX` bytes plus ekv's own database state.
//!
//! Cancellation and power loss: those of ekv (a transaction that did not commit has no effect).

use core::fmt::Debug;
use core::ops::Bound;

use ekv::flash::Flash;
use ekv::{CommitError, CursorError, Database, ReadError, WriteError};
use embassy_sync_ekv::blocking_mutex::raw::RawMutex;

// Paths through the crate root only, so examples can include this file with `#[path]`.
use crate::codec::namespace_hash;
use crate::{Error, Key, KeyCursor, Kind, Persistence};

/// Bytes of an encoded key.
pub const KEY_LEN: usize = 13;

/// Keys deleted per transaction by `clear`.
const CLEAR_BATCH: usize = 32;
/// Keys returned per `keys()` call at most, as for [`crate::Store::keys`].
const KEYS_PER_CALL: usize = 32;

/// Paho persistence over an ekv database; `MAX` is the largest value accepted (at most ekv's
/// `MAX_VALUE_SIZE`).
pub struct EkvPersistence<'d, F: Flash, M: RawMutex, const MAX: usize> {
    db: &'d Database<F, M>,
    ns: Option<u64>,
    scratch: [u8; MAX],
    /// The last key `keys()` returned in the current iteration.
    after: Option<[u8; KEY_LEN]>,
}

impl<'d, F: Flash, M: RawMutex, const MAX: usize> EkvPersistence<'d, F, M, MAX> {
    /// Wraps a database that is already formatted (the backend never formats).
    pub fn new(db: &'d Database<F, M>) -> Self {
        EkvPersistence {
            db,
            ns: None,
            scratch: [0; MAX],
            after: None,
        }
    }

    /// Starts the next `keys()` iteration from the first key.
    pub fn rewind_keys(&mut self) {
        self.after = None;
    }

    fn ns(&self) -> Result<u64, Error<F::Error>> {
        self.ns.ok_or(Error::NotOpen)
    }

    fn encode(ns: u64, key: Key) -> [u8; KEY_LEN] {
        let mut k = [0u8; KEY_LEN];
        k[..8].copy_from_slice(&ns.to_be_bytes());
        k[8] = key.kind().code();
        k[9..].copy_from_slice(&key.id().to_be_bytes());
        k
    }

    fn decode(k: &[u8]) -> Option<Key> {
        if k.len() != KEY_LEN {
            return None;
        }
        let id = u32::from_be_bytes([k[9], k[10], k[11], k[12]]);
        Key::new(Kind::from_code(k[8])?, id)
    }

    /// The range of encoded keys of namespace `ns`.
    fn bounds(ns: u64) -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
        let mut lo = [0u8; KEY_LEN];
        lo[..8].copy_from_slice(&ns.to_be_bytes());
        let mut hi = [0xFFu8; KEY_LEN];
        hi[..8].copy_from_slice(&ns.to_be_bytes());
        (lo, hi)
    }

    async fn exists(&self, k: &[u8; KEY_LEN]) -> Result<bool, Error<F::Error>> {
        let rtx = self.db.read_transaction().await;
        match rtx.read(k, &mut []).await {
            Ok(_) | Err(ReadError::BufferTooSmall) => Ok(true),
            Err(ReadError::KeyNotFound) => Ok(false),
            Err(e) => Err(read_err(e)),
        }
    }

    async fn delete(&self, k: &[u8; KEY_LEN]) -> Result<(), Error<F::Error>> {
        let mut wtx = self.db.write_transaction().await;
        wtx.delete(k).await.map_err(write_err)?;
        wtx.commit().await.map_err(commit_err)
    }
}

fn read_err<E>(e: ReadError<E>) -> Error<E> {
    match e {
        ReadError::Flash(e) => Error::Flash(e),
        ReadError::KeyNotFound => Error::NotFound,
        ReadError::BufferTooSmall => Error::BufferTooSmall {
            needed: ekv::config::MAX_VALUE_SIZE,
        },
        ReadError::Corrupted => Error::Corrupted,
        _ => Error::LogicBug,
    }
}

fn write_err<E>(e: WriteError<E>) -> Error<E> {
    match e {
        WriteError::Flash(e) => Error::Flash(e),
        WriteError::Full => Error::Full,
        WriteError::Corrupted => Error::Corrupted,
        WriteError::ValueTooBig => Error::TooLarge {
            max: ekv::config::MAX_VALUE_SIZE,
        },
        _ => Error::LogicBug,
    }
}

fn commit_err<E>(e: CommitError<E>) -> Error<E> {
    match e {
        CommitError::Flash(e) => Error::Flash(e),
        CommitError::Corrupted => Error::Corrupted,
        _ => Error::LogicBug,
    }
}

fn cursor_err<E>(e: CursorError<E>) -> Error<E> {
    match e {
        CursorError::Flash(e) => Error::Flash(e),
        CursorError::Corrupted => Error::Corrupted,
        _ => Error::LogicBug,
    }
}

fn ekv_err<E>(e: ekv::Error<E>) -> Error<E> {
    match e {
        ekv::Error::Flash(e) => Error::Flash(e),
        _ => Error::Corrupted,
    }
}

impl<F: Flash, M: RawMutex, const MAX: usize> Persistence for EkvPersistence<'_, F, M, MAX>
where
    F::Error: Debug,
{
    type FlashError = F::Error;

    async fn open(&mut self, client_id: &str, server_uri: &str) -> Result<(), Error<F::Error>> {
        let ns = namespace_hash(client_id, server_uri);
        match self.ns {
            Some(cur) if cur == ns => Ok(()),
            Some(_) => Err(Error::AlreadyOpen),
            None => {
                self.ns = Some(ns);
                self.after = None;
                Ok(())
            }
        }
    }

    async fn close(&mut self) -> Result<(), Error<F::Error>> {
        self.ns()?;
        self.ns = None;
        self.after = None;
        Ok(())
    }

    async fn put(&mut self, key: Key, parts: &[&[u8]]) -> Result<(), Error<F::Error>> {
        let k = Self::encode(self.ns()?, key);
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let max = MAX.min(ekv::config::MAX_VALUE_SIZE);
        if len > max {
            return Err(Error::TooLarge { max });
        }
        let mut at = 0;
        for p in parts {
            self.scratch[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        let mut wtx = self.db.write_transaction().await;
        wtx.write(&k, &self.scratch[..len]).await.map_err(write_err)?;
        wtx.commit().await.map_err(commit_err)
    }

    async fn get<'b>(&mut self, key: Key, buf: &'b mut [u8]) -> Result<&'b [u8], Error<F::Error>> {
        let k = Self::encode(self.ns()?, key);
        let rtx = self.db.read_transaction().await;
        let n = rtx.read(&k, buf).await.map_err(read_err)?;
        Ok(&buf[..n])
    }

    async fn remove(&mut self, key: Key) -> Result<(), Error<F::Error>> {
        let k = Self::encode(self.ns()?, key);
        if !self.exists(&k).await? {
            return Err(Error::NotFound);
        }
        self.delete(&k).await
    }

    async fn keys(&mut self, _cursor: &mut KeyCursor, out: &mut [Key]) -> Result<usize, Error<F::Error>> {
        let ns = self.ns()?;
        let (lo, hi) = Self::bounds(ns);
        let start = match &self.after {
            Some(a) => Bound::Excluded(&a[..]),
            None => Bound::Included(&lo[..]),
        };
        let rtx = self.db.read_transaction().await;
        let mut cur = rtx
            .read_range((start, Bound::Included(&hi[..])))
            .await
            .map_err(ekv_err)?;
        let mut n = 0;
        let mut kb = [0u8; KEY_LEN];
        let mut last = None;
        while n < out.len().min(KEYS_PER_CALL) {
            match cur.next(&mut kb, &mut self.scratch).await {
                Ok(Some((klen, _))) => {
                    let Some(key) = Self::decode(&kb[..klen]) else {
                        continue;
                    };
                    out[n] = key;
                    n += 1;
                    last = Some(kb);
                }
                Ok(None) => break,
                Err(CursorError::ValueBufferTooSmall) => return Err(Error::BufferTooSmall { needed: MAX }),
                Err(e) => return Err(cursor_err(e)),
            }
        }
        self.after = if n == 0 { None } else { last };
        Ok(n)
    }

    async fn clear(&mut self) -> Result<(), Error<F::Error>> {
        let ns = self.ns()?;
        let (lo, hi) = Self::bounds(ns);
        loop {
            let mut batch = [[0u8; KEY_LEN]; CLEAR_BATCH];
            let mut n = 0;
            {
                let rtx = self.db.read_transaction().await;
                let mut cur = rtx
                    .read_range((Bound::Included(&lo[..]), Bound::Included(&hi[..])))
                    .await
                    .map_err(ekv_err)?;
                let mut kb = [0u8; KEY_LEN];
                while n < CLEAR_BATCH {
                    match cur.next(&mut kb, &mut self.scratch).await {
                        Ok(Some((KEY_LEN, _))) => {
                            batch[n] = kb;
                            n += 1;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => return Err(cursor_err(e)),
                    }
                }
            }
            if n == 0 {
                self.after = None;
                return Ok(());
            }
            // Keys come sorted from the cursor, as a transaction requires.
            let mut wtx = self.db.write_transaction().await;
            for k in &batch[..n] {
                wtx.delete(k).await.map_err(write_err)?;
            }
            wtx.commit().await.map_err(commit_err)?;
        }
    }

    async fn contains(&mut self, key: Key) -> Result<bool, Error<F::Error>> {
        let k = Self::encode(self.ns()?, key);
        self.exists(&k).await
    }
}
