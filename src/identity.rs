//! Identities that can be found again: the registry of client id and server URI per namespace.
//!
//! A namespace is a 64-bit hash of the client id and server URI given to [`Store::open`]
//! (SPEC.md section 10.2). Open the store with another spelling of the same server
//! (`localhost:1883` for `127.0.0.1:1883`) and the keys written before are in another
//! namespace: invisible, never replayed. So the store keeps, per namespace, the identity that
//! opened it, in a reserved namespace of its own ([`REGISTRY_NS`], SPEC.md section 10.3), and
//! lets an application list the namespaces that hold live keys ([`Store::identities`]), read
//! their names ([`Store::identity_name`]), move an orphaned backlog into the open namespace
//! ([`Store::adopt`]) or drop it ([`Store::discard`]).
//!
//! The registry costs one small value per identity that holds keys (at most
//! [`MAX_ENTRY_LEN`] bytes), written by the first `open` of an identity and never again while
//! it is unchanged; the stale entries of namespaces left without keys are removed when a new
//! identity is registered, so the registry never holds more than one entry per namespace with
//! live keys plus the open one.

use embedded_storage_async::nor_flash::NorFlash;

use crate::codec::namespace_hash;
use crate::error::Error;
use crate::key::{Key, Kind};
use crate::log::{KEYS_BATCH, NsCount};
use crate::store::{KeyCursor, Store};

type Res<T, F> = Result<T, Error<<F as embedded_storage_async::nor_flash::ErrorType>::Error>>;

/// The namespace holding the identity registry (the bytes `mp-ident`, little-endian). No
/// client can open it ([`Error::ReservedNamespace`]).
pub const REGISTRY_NS: u64 = u64::from_le_bytes(*b"mp-ident");
/// Bytes of a client id the registry keeps (longer ones are cut at a character boundary and
/// the entry is marked truncated).
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// Bytes of a server URI the registry keeps (as for [`MAX_CLIENT_ID_LEN`]).
pub const MAX_SERVER_URI_LEN: usize = 128;
/// The largest registry entry: version, namespace, flags, two lengths and both strings.
pub const MAX_ENTRY_LEN: usize = ENTRY_FIXED + MAX_CLIENT_ID_LEN + MAX_SERVER_URI_LEN;
const ENTRY_FIXED: usize = 12;
const ENTRY_VERSION: u8 = 1;
const F_TRUNCATED: u8 = 1;
/// Namespaces one registration's clean-up can tell apart (more: no stale entry is removed).
const CENSUS: usize = 8;

/// A namespace with live keys, from [`Store::identities`].
pub type Identity = NsCount;

/// The identity registered for a namespace, borrowed from the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityName<'a> {
    /// The client id given to `open` (cut to [`MAX_CLIENT_ID_LEN`] bytes if `truncated`).
    pub client_id: &'a str,
    /// The server URI given to `open` (cut to [`MAX_SERVER_URI_LEN`] bytes if `truncated`).
    pub server_uri: &'a str,
    /// A string was longer than the registry keeps, or the entry was shortened to fit the
    /// store's `max_value_len`: open this namespace with [`Store::open_namespace`].
    pub truncated: bool,
}

/// What [`Store::adopt`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Adopted {
    /// Queued messages (`c-` and `q-` keys) now in the open namespace, after its own.
    pub moved: u32,
    /// Session state of the other namespace's broker connection (`s-`, `sc-`, `r-` keys),
    /// removed: it means nothing under another identity.
    pub dropped: u32,
}

/// The registry entry of namespace `ns`, encoded into `out` (at least [`MAX_ENTRY_LEN`]
/// bytes) and cut to at most `limit` bytes: its length, or `None` if `limit` cannot hold even
/// the fixed part. The URI is cut first, then the client id, each at a character boundary.
pub fn encode_entry(ns: u64, client_id: &str, server_uri: &str, limit: usize, out: &mut [u8]) -> Option<usize> {
    let room = limit.min(out.len()).checked_sub(ENTRY_FIXED)?;
    let c = cut(client_id, MAX_CLIENT_ID_LEN.min(room));
    let u = cut(server_uri, MAX_SERVER_URI_LEN.min(room - c.len()));
    let truncated = c.len() < client_id.len() || u.len() < server_uri.len();
    out[0] = ENTRY_VERSION;
    out[1..9].copy_from_slice(&ns.to_le_bytes());
    out[9] = if truncated { F_TRUNCATED } else { 0 };
    out[10] = c.len() as u8;
    out[11..11 + c.len()].copy_from_slice(c.as_bytes());
    out[11 + c.len()] = u.len() as u8;
    let end = ENTRY_FIXED + c.len() + u.len();
    out[ENTRY_FIXED + c.len()..end].copy_from_slice(u.as_bytes());
    Some(end)
}

/// Decodes a registry entry: its namespace and names, or `None` if the bytes are not one.
pub fn decode_entry(b: &[u8]) -> Option<(u64, IdentityName<'_>)> {
    if b.len() < ENTRY_FIXED || b[0] != ENTRY_VERSION || b[9] & !F_TRUNCATED != 0 {
        return None;
    }
    let ns = u64::from_le_bytes(b[1..9].try_into().ok()?);
    let c = b[10] as usize;
    let u = *b.get(11 + c)? as usize;
    if c > MAX_CLIENT_ID_LEN || u > MAX_SERVER_URI_LEN || b.len() != ENTRY_FIXED + c + u {
        return None;
    }
    let client_id = core::str::from_utf8(&b[11..11 + c]).ok()?;
    let server_uri = core::str::from_utf8(&b[12 + c..]).ok()?;
    Some((
        ns,
        IdentityName {
            client_id,
            server_uri,
            truncated: b[9] & F_TRUNCATED != 0,
        },
    ))
}

/// The registry key of namespace `ns`: `c-` and the low 32 bits of the hash.
pub fn registry_key(ns: u64) -> Key {
    Key::command(ns as u32)
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl<F: NorFlash, const PAGES: usize> Store<F, PAGES> {
    /// The namespace `open(client_id, server_uri)` opens.
    pub fn namespace_of(client_id: &str, server_uri: &str) -> u64 {
        namespace_hash(client_id, server_uri)
    }

    /// The open namespace, if any.
    pub fn namespace(&self) -> Option<u64> {
        self.ns
    }

    /// Opens namespace `ns` by its hash, as [`Store::open`] does for an identity: for the
    /// backlog of an identity listed by [`Store::identities`] whose names are unknown or
    /// truncated. Registers nothing.
    pub async fn open_namespace(&mut self, ns: u64) -> Res<(), F> {
        if ns == REGISTRY_NS {
            return Err(Error::ReservedNamespace);
        }
        match self.ns {
            Some(cur) if cur == ns => Ok(()),
            Some(_) => Err(Error::AlreadyOpen),
            None => {
                self.ns = Some(ns);
                self.registry_clean = false;
                Ok(())
            }
        }
    }

    /// Lists the namespaces holding live keys (the registry excepted) into `out`, with their
    /// key counts and value bytes, in the order their oldest live key was written. Returns
    /// how many were filled and whether more namespaces exist than `out` holds. Works open or
    /// closed; pending deferred removals count as done.
    ///
    /// Cost: one pass over the log with one lookup per 32 puts, like mount. Reads only.
    pub async fn identities(&mut self, out: &mut [Identity]) -> Res<(usize, bool), F> {
        self.log.census(REGISTRY_NS, out).await
    }

    /// The client id and server URI registered for namespace `ns`, read into `buf` (at most
    /// [`MAX_ENTRY_LEN`] bytes are needed), or `None` if the namespace has no entry (it was
    /// written before the registry existed, opened with [`Store::open_namespace`], or the
    /// store had no room for the entry).
    pub async fn identity_name<'b>(&mut self, ns: u64, buf: &'b mut [u8]) -> Res<Option<IdentityName<'b>>, F> {
        let bytes = match self.get_in(REGISTRY_NS, registry_key(ns), buf).await {
            Ok(b) => b,
            Err(Error::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        match decode_entry(bytes) {
            Some((found, name)) if found == ns => Ok(Some(name)),
            // Another namespace with the same low 32 bits registered since (a 2^-32 chance).
            Some(_) => Ok(None),
            None => Err(Error::Corrupted),
        }
    }

    /// Moves the backlog of namespace `from` into the open namespace: every `c-` and `q-` key
    /// is copied in insertion order behind the open namespace's own keys of its kind
    /// (renumbered from one above the highest id there, or keeping its id if there are
    /// none), then removed from `from`; the `s-`, `sc-` and `r-` keys of `from` (the QoS 2
    /// state of a broker session of another identity) are removed. Then `from`'s registry
    /// entry is removed. `buf` must hold the largest value moved ([`Error::BufferTooSmall`]
    /// names the size; nothing more was moved).
    ///
    /// Power loss: each key is copied, then removed, so a cut between the two leaves that one
    /// message in both namespaces and a second `adopt` copies it again: at least once, as
    /// MQTT QoS 1. [`Error::Full`] part-way leaves the rest in `from`; call again when there
    /// is room.
    pub async fn adopt(&mut self, from: u64, buf: &mut [u8]) -> Res<Adopted, F> {
        let to = self.ns.ok_or(Error::NotOpen)?;
        if from == REGISTRY_NS {
            return Err(Error::ReservedNamespace);
        }
        let mut done = Adopted::default();
        if from == to {
            return Ok(done);
        }
        // The highest sequence id of each kind in the open namespace.
        let mut top: [Option<u32>; 2] = [None, None];
        let mut keys = [Key::sent(0); KEYS_BATCH];
        let mut cursor = KeyCursor::default();
        loop {
            let n = self.keys_in(to, &mut cursor, &mut keys).await?;
            if n == 0 {
                break;
            }
            for k in &keys[..n] {
                if let Some(i) = seq_slot(k.kind()) {
                    top[i] = Some(top[i].map_or(k.id(), |t| t.max(k.id())));
                }
            }
        }
        let mut cursor = KeyCursor::default();
        loop {
            let n = self.keys_in(from, &mut cursor, &mut keys).await?;
            if n == 0 {
                break;
            }
            for &k in &keys[..n] {
                if let Some(i) = seq_slot(k.kind()) {
                    let id = match top[i] {
                        None => k.id(),
                        Some(t) => t.checked_add(1).ok_or(Error::Exhausted)?,
                    };
                    let to_key = Key::new(k.kind(), id).ok_or(Error::LogicBug)?;
                    let len = self.get_in(from, k, buf).await?.len();
                    self.log.put(to, to_key, &[&buf[..len]], len as u32).await?;
                    if top[i].is_some() {
                        top[i] = Some(id);
                    }
                    done.moved += 1;
                } else {
                    done.dropped += 1;
                }
                self.log.remove(from, k).await?;
            }
        }
        self.unregister(from).await?;
        Ok(done)
    }

    /// Removes every key of namespace `ns` (open or not) with one record, and its registry
    /// entry: for an orphaned backlog the application does not want.
    pub async fn discard(&mut self, ns: u64) -> Res<(), F> {
        if ns == REGISTRY_NS {
            return Err(Error::ReservedNamespace);
        }
        self.log.clear(ns).await?;
        self.unregister(ns).await
    }

    /// Registers the identity of namespace `ns` (called by `open`). Writes only when the
    /// entry is missing or differs; then first removes the entries of namespaces without live
    /// keys. Best effort: only a flash error fails; no room, a damaged image or used-up
    /// sequence numbers leave the identity unregistered (listed unnamed).
    pub(crate) async fn register(&mut self, ns: u64, client_id: &str, server_uri: &str) -> Res<(), F> {
        match self.try_register(ns, client_id, server_uri).await {
            Err(Error::Flash(e)) => Err(Error::Flash(e)),
            _ => Ok(()),
        }
    }

    async fn try_register(&mut self, ns: u64, client_id: &str, server_uri: &str) -> Res<(), F> {
        let mut entry = [0u8; MAX_ENTRY_LEN];
        let Some(len) = encode_entry(ns, client_id, server_uri, self.log.max_value() as usize, &mut entry) else {
            return Ok(());
        };
        // The registry takes at most 1/32 of the capacity per entry, and a drained store must
        // still take a value of max_value_len beside it (DESIGN.md sections 9 and 21): a
        // smaller store keeps no entries; every byte of it is the backlog's.
        if !self.log.affords(len as u32, self.log.max_value()) {
            return Ok(());
        }
        let mut cur = [0u8; MAX_ENTRY_LEN];
        match self.get_in(REGISTRY_NS, registry_key(ns), &mut cur).await {
            Ok(b) if *b == entry[..len] => return Ok(()),
            Ok(_) | Err(Error::NotFound | Error::Corrupted | Error::BufferTooSmall { .. }) => {}
            Err(e) => return Err(e),
        }
        self.collect_stale(ns).await?;
        self.log
            .put(REGISTRY_NS, registry_key(ns), &[&entry[..len]], len as u32)
            .await
    }

    /// Removes the registry entries of namespaces that hold no live key, except `keep`'s,
    /// and says whether it removed any. Only when every namespace was counted (at most
    /// [`CENSUS`]).
    pub(crate) async fn collect_stale(&mut self, keep: u64) -> Res<bool, F> {
        let mut live = [NsCount::default(); CENSUS];
        let (n, more) = self.log.census(REGISTRY_NS, &mut live).await?;
        let mut removed = false;
        if more {
            return Ok(removed);
        }
        let mut keys = [Key::sent(0); KEYS_BATCH];
        let mut cursor = KeyCursor::default();
        loop {
            let got = self.keys_in(REGISTRY_NS, &mut cursor, &mut keys).await?;
            if got == 0 {
                return Ok(removed);
            }
            for &k in &keys[..got] {
                let named = |ns: u64| ns as u32 == k.id();
                if !named(keep) && !live[..n].iter().any(|c| named(c.ns)) {
                    self.log.remove(REGISTRY_NS, k).await?;
                    removed = true;
                }
            }
        }
    }

    /// Removes the registry entry of namespace `ns`, if it has one.
    async fn unregister(&mut self, ns: u64) -> Res<(), F> {
        match self.log.remove(REGISTRY_NS, registry_key(ns)).await {
            Ok(()) | Err(Error::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Which of the two sequence-numbered kinds `kind` is.
fn seq_slot(kind: Kind) -> Option<usize> {
    match kind {
        Kind::Command => Some(0),
        Kind::Queued => Some(1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_cut_at_character_boundaries() {
        let mut b = [0u8; MAX_ENTRY_LEN];
        let n = encode_entry(7, "dev-1", "tcp://127.0.0.1:1883", 1000, &mut b).unwrap();
        assert_eq!(n, 12 + 5 + 20);
        let (ns, name) = decode_entry(&b[..n]).unwrap();
        assert_eq!(
            (ns, name.client_id, name.server_uri, name.truncated),
            (7, "dev-1", "tcp://127.0.0.1:1883", false)
        );
        // Long strings: cut to the registry's bounds.
        let long_id = "é".repeat(40); // 80 bytes
        let long_uri = "u".repeat(200);
        let n = encode_entry(9, &long_id, &long_uri, 1000, &mut b).unwrap();
        let (_, name) = decode_entry(&b[..n]).unwrap();
        assert_eq!(name.client_id, "é".repeat(32));
        assert_eq!(name.server_uri.len(), MAX_SERVER_URI_LEN);
        assert!(name.truncated);
        assert_eq!(n, MAX_ENTRY_LEN);
        // A small max_value_len: the URI goes first, then the client id.
        let n = encode_entry(9, "client", "tcp://h:1", 20, &mut b).unwrap();
        let (_, name) = decode_entry(&b[..n]).unwrap();
        assert_eq!(
            (name.client_id, name.server_uri, name.truncated),
            ("client", "tc", true)
        );
        assert_eq!(n, 20);
        let n = encode_entry(9, "client", "tcp://h:1", 14, &mut b).unwrap();
        let (_, name) = decode_entry(&b[..n]).unwrap();
        assert_eq!((name.client_id, name.server_uri), ("cl", ""));
        assert_eq!(encode_entry(9, "c", "u", 11, &mut b), None);
        // Not entries.
        assert_eq!(decode_entry(&b[..11]), None);
        let n = encode_entry(9, "c", "u", 100, &mut b).unwrap();
        assert!(decode_entry(&b[..n - 1]).is_none());
        b[0] = 2;
        assert!(decode_entry(&b[..n]).is_none());
    }
}
