//! Paho's `before_write` / `after_read` hooks used for encryption at rest: a ChaCha20-Poly1305
//! transform (nonce from a per-write counter, stored in front of the ciphertext, tag behind it,
//! the key as associated data) wrapped around a store with `Transformed`, used through the
//! `Persistence` trait.

// Dropping a store without `close` is how these tests model a reboot: the point is that its
// RAM state (pending deferred removals, summaries) is lost, even though it has no `Drop` impl.
#![allow(clippy::drop_non_drop)]

use std::cell::Cell;
use std::rc::Rc;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag as AeadTag};
use mqtt_persist::codec::{Binding, RecordType, Tag, namespace_hash, record_crc};
use mqtt_persist::flash::{SimFlash, SimFlashError, block_on};
use mqtt_persist::{Config, Error, Key, KeyCursor, Kind, Persistence, Store, Transform, Transformed};

type Sim = SimFlash<1024, 8, 4, 4>;
type S<'a> = Store<&'a mut Sim, 8>;
type E = Error<SimFlashError>;

const URI: &str = "mqtts://broker.example:8883";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes the transform adds to a value.
const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// A distinctive plaintext of exactly 40 bytes.
const SECRET: &[u8; 40] = b"TOP-SECRET: launch code 0451-7781-2209!!";
/// The first four nonce bytes: a per-device salt, so nonces are easy to find in an image.
const SALT: [u8; 4] = *b"NcE$";

/// Switches shared with a test while the hooks are owned by the `Transformed` wrapper.
#[derive(Default)]
struct Switches {
    fail_write: Cell<bool>,
    fail_read: Cell<bool>,
}

/// The transform. The nonce counter lives in RAM here; a device must never reuse a nonce under
/// one key, so it would restore the counter at boot (for example from the largest nonce found in
/// its stored values) or mix in a boot counter.
struct Sealer {
    cipher: ChaCha20Poly1305,
    counter: u64,
    switches: Rc<Switches>,
}

impl Sealer {
    fn new(switches: Rc<Switches>) -> Sealer {
        let key = [0x42u8; 32];
        Sealer {
            cipher: ChaCha20Poly1305::new(&key.into()),
            counter: 0,
            switches,
        }
    }
}

/// The key as associated data: a stored value moved to another key does not decrypt.
fn aad(key: Key) -> [u8; 5] {
    let id = key.id().to_le_bytes();
    [key.kind().code(), id[0], id[1], id[2], id[3]]
}

fn nonce_bytes(counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&SALT);
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

impl Transform for Sealer {
    fn before_write(&mut self, key: Key, plain: &[&[u8]], out: &mut [u8]) -> Result<usize, ()> {
        if self.switches.fail_write.get() {
            return Err(());
        }
        let len: usize = plain.iter().map(|p| p.len()).sum();
        let total = len + OVERHEAD;
        if out.len() < total {
            return Err(());
        }
        self.counter += 1;
        let nonce = nonce_bytes(self.counter);
        out[..NONCE_LEN].copy_from_slice(&nonce);
        let mut at = NONCE_LEN;
        for p in plain {
            out[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        let (body, rest) = out[NONCE_LEN..].split_at_mut(len);
        let tag = self
            .cipher
            .encrypt_inout_detached(&Nonce::from(nonce), &aad(key), body.into())
            .map_err(|_| ())?;
        rest[..TAG_LEN].copy_from_slice(&tag);
        Ok(total)
    }

    fn after_read(&mut self, key: Key, data: &mut [u8]) -> Result<usize, ()> {
        if self.switches.fail_read.get() {
            return Err(());
        }
        let len = data.len().checked_sub(OVERHEAD).ok_or(())?;
        let nonce = Nonce::try_from(&data[..NONCE_LEN]).map_err(|_| ())?;
        let tag = AeadTag::try_from(&data[NONCE_LEN + len..]).map_err(|_| ())?;
        self.cipher
            .decrypt_inout_detached(&nonce, &aad(key), (&mut data[NONCE_LEN..NONCE_LEN + len]).into(), &tag)
            .map_err(|_| ())?;
        data.copy_within(NONCE_LEN..NONCE_LEN + len, 0);
        Ok(len)
    }
}

type Sealed<'a> = Transformed<S<'a>, Sealer, 1024>;

fn flash() -> Box<Sim> {
    let mut f = Sim::boxed();
    f.set_ecc(true);
    f
}

fn mount(f: &mut Sim) -> S<'_> {
    match block_on(Store::mount(f, Config::new(256))) {
        Ok(s) => s,
        Err((_, e)) => panic!("mount: {e:?}"),
    }
}

fn sealed<'a>(f: &'a mut Sim, switches: &Rc<Switches>) -> Sealed<'a> {
    let mut t = Transformed::<_, _, 1024>::new(mount(f), Sealer::new(switches.clone()));
    block_on(t.open("dev", URI)).unwrap();
    t
}

fn find(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Puts the secret as the first write (nonce counter 1), then enough other values that the
/// secret's page is no longer the head (the head page is CRC-checked at mount, others on read).
fn write_secret_and_filler(t: &mut Sealed<'_>) {
    block_on(t.put(Key::sent(1), &[&SECRET[..15], &SECRET[15..]])).unwrap();
    for i in 0..24u32 {
        block_on(t.put(Key::queued(i), &[&[i as u8; 90]])).unwrap();
    }
}

/// Where the secret's record is: (offset of its tag word, offset of its data, data length).
fn locate_secret_record(img: &[u8]) -> (usize, usize, usize) {
    let hits = find(img, &nonce_bytes(1));
    assert_eq!(hits.len(), 1, "the nonce of the first write is stored once");
    let data = hits[0];
    let tag_at = data - 4;
    let word = u32::from_le_bytes(img[tag_at..data].try_into().unwrap());
    let tag = Tag::decode(word).expect("a valid record tag before the value");
    assert_eq!(tag.ty, RecordType::Put(Kind::Sent));
    assert_eq!(tag.id_low, 1);
    assert!(!tag.more, "the value is stored in one fragment");
    let len = tag.data_len();
    assert_eq!(len, SECRET.len() + OVERHEAD);
    // Layout check: [tag u32 LE][data][CRC-32C over binding (namespace, id) + tag bytes + data,
    // u32 LE].
    let crc = u32::from_le_bytes(img[data + len..data + len + 4].try_into().unwrap());
    assert_eq!(crc, secret_crc(img, tag_at, data, len), "record CRC as documented");
    (tag_at, data, len)
}

/// The CRC the secret's record must carry with its bytes as they are in `img` (SPEC section 4:
/// namespace and full id, then the tag word, then the data).
fn secret_crc(img: &[u8], tag_at: usize, data: usize, len: usize) -> u32 {
    let word = u32::from_le_bytes(img[tag_at..data].try_into().unwrap());
    let binding = Binding::of(RecordType::Put(Kind::Sent), namespace_hash("dev", URI), 1);
    record_crc(&binding, word, &[&img[data..data + len]])
}

/// Gives the flash back from a sealed store, lets `f` change the image, and mounts again.
fn tamper<'a>(t: Sealed<'a>, f: impl FnOnce(&mut [u8])) -> Sealed<'a> {
    let (store, hooks) = t.into_parts();
    let flash = store.into_flash();
    f(flash.as_bytes_mut());
    let mut t = Transformed::<_, _, 1024>::new(mount(flash), hooks);
    block_on(t.open("dev", URI)).unwrap();
    t
}

#[test]
fn the_flash_holds_no_plaintext_but_get_returns_it() {
    let switches = Rc::new(Switches::default());
    let mut f = flash();
    let mut t = sealed(&mut f, &switches);
    block_on(t.put(Key::sent(1), &[&SECRET[..15], &SECRET[15..]])).unwrap();
    block_on(t.put(Key::command(70_000), &[SECRET])).unwrap();

    let mut buf = [0u8; 128];
    assert_eq!(block_on(t.get(Key::sent(1), &mut buf)), Ok(&SECRET[..]));
    assert_eq!(block_on(t.get(Key::command(70_000), &mut buf)), Ok(&SECRET[..]));
    // The stored form is nonce + ciphertext + tag.
    assert_eq!(block_on(t.inner().len_of(Key::sent(1))), Ok(SECRET.len() + OVERHEAD));
    let mut raw = [0u8; 128];
    let stored = block_on(t.inner().get(Key::sent(1), &mut raw)).unwrap().to_vec();
    assert_eq!(&stored[..NONCE_LEN], &nonce_bytes(1));
    // Same plaintext, other nonce: other ciphertext.
    let stored2 = block_on(t.inner().get(Key::command(70_000), &mut raw))
        .unwrap()
        .to_vec();
    assert_ne!(stored[NONCE_LEN..], stored2[NONCE_LEN..]);

    let img = t.inner().flash().as_bytes();
    for w in SECRET.windows(6) {
        assert!(
            find(img, w).is_empty(),
            "plaintext fragment {:?} on flash",
            String::from_utf8_lossy(w)
        );
    }
    assert_eq!(find(img, &stored).len(), 1, "the ciphertext is what is stored");

    // keys() and contains() pass through.
    let mut cur = KeyCursor::default();
    let mut out = [Key::sent(0); 4];
    let n = block_on(t.keys(&mut cur, &mut out)).unwrap();
    assert_eq!(&out[..n], &[Key::sent(1), Key::command(70_000)]);
    assert_eq!(block_on(t.contains(Key::sent(1))), Ok(true));

    // And after a remount with a fresh sealer (same key) it still decrypts.
    drop(t);
    let mut t = sealed(&mut f, &switches);
    assert_eq!(block_on(t.get(Key::sent(1), &mut buf)), Ok(&SECRET[..]));
}

#[test]
fn the_get_buffer_must_hold_the_stored_form() {
    let switches = Rc::new(Switches::default());
    let mut f = flash();
    let mut t = sealed(&mut f, &switches);
    block_on(t.put(Key::sent(1), &[SECRET])).unwrap();
    let mut small = [0u8; 40];
    assert_eq!(
        block_on(t.get(Key::sent(1), &mut small)),
        Err(E::BufferTooSmall { needed: 40 + OVERHEAD })
    );
    let mut exact = [0u8; 40 + OVERHEAD];
    assert_eq!(block_on(t.get(Key::sent(1), &mut exact)), Ok(&SECRET[..]));
}

#[test]
fn a_flipped_ciphertext_bit_fails_the_record_crc() {
    let switches = Rc::new(Switches::default());
    let mut f = flash();
    let mut t = sealed(&mut f, &switches);
    write_secret_and_filler(&mut t);
    let mut t = tamper(t, |img| {
        let (_, data, _) = locate_secret_record(img);
        img[data + NONCE_LEN + 7] ^= 0x10;
    });
    let mut buf = [0u8; 128];
    // CRC-32C catches every single-bit error before the hook runs.
    assert_eq!(block_on(t.get(Key::sent(1), &mut buf)), Err(E::Corrupted));
    // The other values are intact.
    for i in 0..24u32 {
        assert_eq!(
            block_on(t.get(Key::queued(i), &mut buf)),
            Ok(&[i as u8; 90][..]),
            "q-{i}"
        );
    }
}

#[test]
fn a_flipped_ciphertext_bit_with_a_matching_crc_is_caught_by_the_aead() {
    let switches = Rc::new(Switches::default());
    let mut f = flash();
    let mut t = sealed(&mut f, &switches);
    write_secret_and_filler(&mut t);
    let mut t = tamper(t, |img| {
        let (tag_at, data, len) = locate_secret_record(img);
        img[data + NONCE_LEN + 7] ^= 0x10;
        let crc = secret_crc(img, tag_at, data, len);
        img[data + len..data + len + 4].copy_from_slice(&crc.to_le_bytes());
    });
    let mut buf = [0u8; 128];
    // The store's CRC passes: the stored bytes come back, changed in one bit...
    let mut raw = [0u8; 128];
    let stored = block_on(t.inner().get(Key::sent(1), &mut raw)).unwrap();
    assert_eq!(stored.len(), SECRET.len() + OVERHEAD);
    // ...and only the AEAD tag stands between them and the application.
    assert_eq!(block_on(t.get(Key::sent(1), &mut buf)), Err(E::TransformFailed));
    assert_eq!(block_on(t.get(Key::queued(3), &mut buf)), Ok(&[3u8; 90][..]));
}

#[test]
fn a_value_moved_to_another_key_does_not_decrypt() {
    let switches = Rc::new(Switches::default());
    let mut f = flash();
    let mut t = sealed(&mut f, &switches);
    block_on(t.put(Key::sent(1), &[SECRET])).unwrap();
    let mut raw = [0u8; 128];
    let stored = block_on(t.inner().get(Key::sent(1), &mut raw)).unwrap().to_vec();
    block_on(t.inner().put(Key::sent(2), &[&stored])).unwrap();
    let mut buf = [0u8; 128];
    assert_eq!(block_on(t.get(Key::sent(2), &mut buf)), Err(E::TransformFailed));
    assert_eq!(block_on(t.get(Key::sent(1), &mut buf)), Ok(&SECRET[..]));
}

#[test]
fn a_refusing_before_write_changes_nothing() {
    let switches = Rc::new(Switches::default());
    let mut f = flash();
    let mut t = sealed(&mut f, &switches);
    block_on(t.put(Key::sent(1), &[SECRET])).unwrap();
    let before = t.inner().flash().stats();

    switches.fail_write.set(true);
    assert_eq!(
        block_on(t.put(Key::sent(1), &[b"replacement"])),
        Err(E::TransformFailed)
    );
    assert_eq!(block_on(t.put(Key::sent(2), &[b"new key"])), Err(E::TransformFailed));
    assert_eq!(t.inner().flash().stats(), before, "a refused put touched the flash");
    switches.fail_write.set(false);

    let mut buf = [0u8; 128];
    assert_eq!(block_on(t.get(Key::sent(1), &mut buf)), Ok(&SECRET[..]));
    assert_eq!(block_on(t.contains(Key::sent(2))), Ok(false));
    let mut cur = KeyCursor::default();
    let mut out = [Key::sent(0); 4];
    assert_eq!(block_on(t.keys(&mut cur, &mut out)), Ok(1));
    assert_eq!(out[0], Key::sent(1));
}

#[test]
fn a_stored_form_larger_than_the_scratch_buffer_is_refused() {
    let switches = Rc::new(Switches::default());
    let mut f = flash();
    let store = mount(&mut f);
    // 64 bytes of scratch: a 40-byte value needs 68.
    let mut t = Transformed::<_, _, 64>::new(store, Sealer::new(switches.clone()));
    block_on(t.open("dev", URI)).unwrap();
    assert_eq!(block_on(t.put(Key::sent(1), &[SECRET])), Err(E::TransformFailed));
    assert_eq!(block_on(t.contains(Key::sent(1))), Ok(false));
    block_on(t.put(Key::sent(1), &[&SECRET[..36]])).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(block_on(t.get(Key::sent(1), &mut buf)), Ok(&SECRET[..36]));
}

/// Hooks that misreport lengths: the wrapper must not trust them.
struct Liar {
    write_len: usize,
    read_extra: usize,
}

impl Transform for Liar {
    fn before_write(&mut self, _key: Key, plain: &[&[u8]], out: &mut [u8]) -> Result<usize, ()> {
        let mut at = 0;
        for p in plain {
            out[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        Ok(if self.write_len == 0 { at } else { self.write_len })
    }

    fn after_read(&mut self, _key: Key, data: &mut [u8]) -> Result<usize, ()> {
        Ok(data.len() + self.read_extra)
    }
}

#[test]
fn hooks_reporting_impossible_lengths_are_transform_failures() {
    let mut f = flash();
    let store = mount(&mut f);
    let mut t = Transformed::<_, _, 32>::new(
        store,
        Liar {
            write_len: 33,
            read_extra: 0,
        },
    );
    block_on(t.open("dev", URI)).unwrap();
    assert_eq!(block_on(t.put(Key::sent(1), &[b"abc"])), Err(E::TransformFailed));
    assert_eq!(block_on(t.contains(Key::sent(1))), Ok(false));
    let (store, _) = t.into_parts();
    let mut t = Transformed::<_, _, 32>::new(
        store,
        Liar {
            write_len: 0,
            read_extra: 1,
        },
    );
    block_on(t.put(Key::sent(1), &[b"abc"])).unwrap();
    let mut buf = [0u8; 32];
    assert_eq!(block_on(t.get(Key::sent(1), &mut buf)), Err(E::TransformFailed));
}

#[test]
fn a_refusing_after_read_is_transform_failed() {
    let switches = Rc::new(Switches::default());
    let mut f = flash();
    let mut t = sealed(&mut f, &switches);
    block_on(t.put(Key::sent(1), &[SECRET])).unwrap();
    let mut buf = [0u8; 128];
    switches.fail_read.set(true);
    assert_eq!(block_on(t.get(Key::sent(1), &mut buf)), Err(E::TransformFailed));
    // A missing key is still NotFound: the hook only sees stored values.
    assert_eq!(block_on(t.get(Key::sent(2), &mut buf)), Err(E::NotFound));
    switches.fail_read.set(false);
    assert_eq!(block_on(t.get(Key::sent(1), &mut buf)), Ok(&SECRET[..]));
}
