//! The on-flash format, as pure encode/decode functions (no flash access, no page logic).
//!
//! See `docs/SPEC.md` for the normative description; this is its executable form. All integers
//! are little-endian; the erased value of flash is `0xFF`.
//!
//! ```text
//! Page header (32 bytes, at offset 0 of every page in use):
//!  0      4      5      6        8      12         16            20           28     32
//! +------+------+------+--------+------+----------+-------------+------------+------+
//! |magic |vers. |flags |id_high |seq   |tail_seq  |erase_count  |namespace   |crc32 |
//! |u32   |u8    |u8    |u16     |u32   |u32       |u32          |u64         |u32   |
//! +------+------+------+--------+------+----------+-------------+------------+------+
//!
//! Record (4-byte tag, data, 4-byte CRC trailer, padded with 0xFF to a multiple of the alignment
//! unit, `max(READ_SIZE, WRITE_SIZE)` since format 3):
//!  0                                   4                  4+len      8+len
//! +-----------------------------------+------------------+----------+---------+
//! | tag u32: type:4 | more:1 | arg:11 | data (len bytes) | crc32    | padding |
//! |          | id_low:16              |                  |          |         |
//! +-----------------------------------+------------------+----------+---------+
//! tag bits 31..28 type, bit 27 more, bits 26..16 arg, bits 15..0 id_low.
//! crc32 (CRC-32C) covers the record's binding (format 2: the namespace and full id a Put or
//! Tombstone names, the namespace of a Batch or Clear; nothing for other types), then the 4 tag
//! bytes, then the data bytes. The binding makes the CRC fail when a record is read in a context
//! other than the one it was written in (a damaged context record), instead of naming another
//! key. The CRC trails the data so a record can be streamed to flash (compaction copies without
//! buffering a whole value), and a scan that only skips records reads 4 bytes per record.
//! ```

use crate::key::{Key, Kind};

/// `b"MQPS"` read as a little-endian u32.
pub const PAGE_MAGIC: u32 = u32::from_le_bytes(*b"MQPS");
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 3;
/// Bytes taken by the page header. A multiple of every supported alignment unit (1..=32).
pub const PAGE_HEADER_LEN: usize = 32;
/// Bytes of framing per record: the tag before the data and the CRC after it.
pub const RECORD_OVERHEAD: usize = 8;
/// Bytes of the tag word.
pub const TAG_LEN: usize = 4;
/// The largest data length one fragment can carry (11-bit `arg`).
pub const MAX_FRAGMENT_DATA: usize = (1 << 11) - 1;
/// Largest `Batch` data: base id and a 32-byte bitmap (256 ids).
pub const MAX_BATCH_DATA: usize = 36;
/// A tag word that reads as erased flash: the end of the written part of a page, unless a
/// `Sync` record follows (writing resumed after an interrupted write).
pub const ERASED_TAG: u32 = u32::MAX;

/// The CRC used for page headers and records: CRC-32C (Castagnoli), chosen for its better
/// error detection on short messages than the IEEE polynomial. The crate's one CRC
/// implementation: the `crc` crate with the table variant in [`CrcImpl`] (DESIGN section 25).
pub const CRC: crc::Crc<u32, CrcImpl> = crc::Crc::<u32, CrcImpl>::new(&crc::CRC_32_ISCSI);

/// The `crc` crate's table variant behind [`CRC`], chosen by measured size and speed on
/// thumbv7em (DESIGN section 25): `Table<1>`, one 1 KiB table, a byte per lookup.
pub type CrcImpl = crc::Table<1>;

/// The raw CRC-32C register before any bytes: a streaming CRC kept as a plain `u32` (see
/// [`crc_update`]) starts here.
pub const CRC_INIT: u32 = 0xFFFF_FFFF;

/// Feeds `data` into the raw CRC-32C register `state` (reflected, not yet complemented) with
/// [`CRC`]. A plain `u32` state, unlike a `crc::Digest`, is `Copy` and holds no borrow, so a
/// reader that keeps its CRC across awaits (a fragment chain) stays `Copy`.
/// `crc_final(crc_update(CRC_INIT, d)) == CRC.checksum(d)`, and updates compose over splits.
#[inline]
pub fn crc_update(state: u32, data: &[u8]) -> u32 {
    // For CRC-32C (refin = refout = true) the crate reflects the initial value into its register
    // and `finalize` only applies xorout: so the raw register goes in reflected and comes out
    // with xorout undone.
    let mut digest = CRC.digest_with_initial(state.reverse_bits());
    digest.update(data);
    digest.finalize() ^ crc::CRC_32_ISCSI.xorout
}

/// The CRC-32C value of a raw register from [`crc_update`].
#[inline]
pub fn crc_final(state: u32) -> u32 {
    state ^ crc::CRC_32_ISCSI.xorout
}

/// The page header: identifies a page as part of the log and orders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    /// Monotonic sequence number of the page in the log: higher is newer.
    pub seq: u32,
    /// Sequence number of the oldest page still part of the log when this page was opened.
    /// Pages with a lower sequence number are garbage, whatever their content says.
    pub tail_seq: u32,
    /// How many times this page has been erased.
    pub erase_count: u32,
    /// Namespace (hash of client id and server URI) in force at the first record.
    pub namespace: u64,
    /// High 16 bits of `c-` and `q-` ids in force at the first record.
    pub id_high: u16,
    /// The previous page of the log ended in an interrupted write: only its records whose CRC
    /// verifies are part of the log (header flag bit 0).
    pub prev_torn: bool,
}

/// Header flag bit 0: see [`PageHeader::prev_torn`].
pub const FLAG_PREV_TORN: u8 = 1;

/// What 32 header bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderState {
    /// All `0xFF`: the header was never written.
    Erased,
    /// A valid header of this format version.
    Valid(PageHeader),
    /// A valid header (magic and CRC check) of a format version we do not know.
    UnknownVersion(u8),
    /// Anything else: a torn header write, a torn erase, or foreign data.
    Garbage,
}

impl PageHeader {
    /// Encodes the header into its 32 on-flash bytes.
    pub fn encode(&self) -> [u8; PAGE_HEADER_LEN] {
        let mut b = [0u8; PAGE_HEADER_LEN];
        b[0..4].copy_from_slice(&PAGE_MAGIC.to_le_bytes());
        b[4] = FORMAT_VERSION;
        b[5] = if self.prev_torn { FLAG_PREV_TORN } else { 0 };
        b[6..8].copy_from_slice(&self.id_high.to_le_bytes());
        b[8..12].copy_from_slice(&self.seq.to_le_bytes());
        b[12..16].copy_from_slice(&self.tail_seq.to_le_bytes());
        b[16..20].copy_from_slice(&self.erase_count.to_le_bytes());
        b[20..28].copy_from_slice(&self.namespace.to_le_bytes());
        let crc = CRC.checksum(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Classifies 32 bytes read from the start of a page.
    pub fn decode(b: &[u8; PAGE_HEADER_LEN]) -> HeaderState {
        if b.iter().all(|&x| x == 0xFF) {
            return HeaderState::Erased;
        }
        if le32(&b[0..4]) != PAGE_MAGIC || le32(&b[28..32]) != CRC.checksum(&b[0..28]) {
            return HeaderState::Garbage;
        }
        if b[4] != FORMAT_VERSION {
            return HeaderState::UnknownVersion(b[4]);
        }
        if b[5] & !FLAG_PREV_TORN != 0 {
            return HeaderState::Garbage;
        }
        HeaderState::Valid(PageHeader {
            id_high: u16::from_le_bytes([b[6], b[7]]),
            seq: le32(&b[8..12]),
            tail_seq: le32(&b[12..16]),
            erase_count: le32(&b[16..20]),
            namespace: u64::from_le_bytes(b[20..28].try_into().unwrap_or([0xFF; 8])),
            prev_torn: b[5] & FLAG_PREV_TORN != 0,
        })
    }
}

/// Record types (the 4-bit `type` field). 0x0 and 0xF are never written: 0xF is erased flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// 0x1..=0x5: a value for a key of kind `type - 1`; `arg` = fragment data length, `more` =
    /// a `Cont` fragment follows; `id_low` = low 16 bits of the id.
    Put(Kind),
    /// 0x6: continuation of the preceding fragment; `arg` = data length; `more` as for `Put`;
    /// `id_low` = fragment index (1, 2, ...).
    Cont,
    /// 0x7: removes a key; `arg` = kind code, no data.
    Tombstone,
    /// 0x8: removes several keys of one kind; `id_low` = kind code, data = base id u32 and a
    /// bitmap of 4 to 32 bytes (bit i of byte j removes `base + 8j + i`); `arg` = data length,
    /// 8 to 36 and a multiple of 4.
    Batch,
    /// 0x9: removes every key of the current namespace written before it; no data.
    Clear,
    /// 0xA: sets the high 16 bits of ids for kind `arg` (only `c-` and `q-`) to `id_low`.
    IdHigh,
    /// 0xB: sets the namespace of the following records; data = u64 namespace hash.
    Namespace,
    /// 0xC: the page with sequence number `data` (u32) is retired: its live records were moved
    /// and it is about to be erased.
    Retire,
    /// 0xD: the following puts in this page were moved by compaction; data = origin page seq
    /// u32 and the ordinal u32 of the first of them (insertion order survives compaction).
    /// Origin seq `u32::MAX` ends the run: later puts are new again.
    Origin,
    /// 0xE: writing resumed here after an interrupted write left garbage before it; data =
    /// magic `b"SYNC"` and the page's sequence number. Readers of a page that ended torn skip
    /// garbage by searching for it at WRITE_SIZE-aligned offsets.
    Sync,
}

/// Data of a `Sync` record starts with these 4 bytes.
pub const SYNC_MAGIC: u32 = u32::from_le_bytes(*b"SYNC");

impl RecordType {
    /// Whether a record of this type only sets the context of the records after it (or marks
    /// where writing resumed) and decides nothing by itself: a page holding only these loses
    /// nothing when erased.
    pub fn is_context(self) -> bool {
        matches!(
            self,
            RecordType::Namespace | RecordType::IdHigh | RecordType::Origin | RecordType::Sync
        )
    }

    fn code(self) -> u32 {
        match self {
            RecordType::Put(kind) => 1 + kind.code() as u32,
            RecordType::Cont => 0x6,
            RecordType::Tombstone => 0x7,
            RecordType::Batch => 0x8,
            RecordType::Clear => 0x9,
            RecordType::IdHigh => 0xA,
            RecordType::Namespace => 0xB,
            RecordType::Retire => 0xC,
            RecordType::Origin => 0xD,
            RecordType::Sync => 0xE,
        }
    }

    fn from_code(code: u32) -> Option<RecordType> {
        Some(match code {
            0x1..=0x5 => RecordType::Put(Kind::from_code(code as u8 - 1)?),
            0x6 => RecordType::Cont,
            0x7 => RecordType::Tombstone,
            0x8 => RecordType::Batch,
            0x9 => RecordType::Clear,
            0xA => RecordType::IdHigh,
            0xB => RecordType::Namespace,
            0xC => RecordType::Retire,
            0xD => RecordType::Origin,
            0xE => RecordType::Sync,
            _ => return None,
        })
    }
}

/// A decoded record tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// What the record is.
    pub ty: RecordType,
    /// Another fragment of the same value follows (only `Put` and `Cont`).
    pub more: bool,
    /// Type-specific 11-bit argument (see [`RecordType`]).
    pub arg: u16,
    /// Low 16 bits of the key id, or a type-specific value.
    pub id_low: u16,
}

/// Why a tag word is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagError {
    /// Erased flash: the end of the written part of the page.
    Erased,
    /// Not a valid tag: torn or corrupted.
    Invalid,
}

impl Tag {
    /// A tag; `arg` must fit 11 bits (callers pass lengths already limited by
    /// [`MAX_FRAGMENT_DATA`]).
    pub fn new(ty: RecordType, more: bool, arg: u16, id_low: u16) -> Tag {
        Tag {
            ty,
            more,
            arg: arg & 0x7FF,
            id_low,
        }
    }

    /// The 32-bit tag word.
    pub fn encode(&self) -> u32 {
        (self.ty.code() << 28) | ((self.more as u32) << 27) | ((self.arg as u32) << 16) | self.id_low as u32
    }

    /// Decodes and validates a tag word: unknown types, `more` on a type that cannot continue,
    /// kinds out of range and wrong fixed lengths are all `Invalid`.
    pub fn decode(word: u32) -> Result<Tag, TagError> {
        if word == ERASED_TAG {
            return Err(TagError::Erased);
        }
        let ty = RecordType::from_code(word >> 28).ok_or(TagError::Invalid)?;
        let tag = Tag {
            ty,
            more: word & (1 << 27) != 0,
            arg: ((word >> 16) & 0x7FF) as u16,
            id_low: word as u16,
        };
        let can_continue = matches!(ty, RecordType::Put(_) | RecordType::Cont);
        let valid = (can_continue || !tag.more)
            && match ty {
                RecordType::Put(_) | RecordType::Cont => true,
                RecordType::Tombstone => Kind::from_code(tag.arg as u8).is_some() && tag.arg < 8,
                RecordType::Batch => {
                    (8..=MAX_BATCH_DATA as u16).contains(&tag.arg)
                        && tag.arg.is_multiple_of(4)
                        && Kind::from_code(tag.id_low as u8).is_some()
                        && tag.id_low < 8
                }
                RecordType::Clear => tag.arg == 0 && tag.id_low == 0,
                RecordType::IdHigh => {
                    matches!(Kind::from_code(tag.arg as u8), Some(Kind::Command | Kind::Queued)) && tag.arg < 8
                }
                RecordType::Namespace => tag.arg == 8 && tag.id_low == 0,
                RecordType::Retire => tag.arg == 4 && tag.id_low == 0,
                RecordType::Origin | RecordType::Sync => tag.arg == 8 && tag.id_low == 0,
            };
        if valid { Ok(tag) } else { Err(TagError::Invalid) }
    }

    /// Bytes of data that follow the header.
    pub fn data_len(&self) -> usize {
        match self.ty {
            RecordType::Tombstone | RecordType::IdHigh | RecordType::Clear => 0,
            _ => self.arg as usize,
        }
    }

    /// The kind named by a `Tombstone`, `Batch` or `IdHigh` tag, or the kind of a `Put`.
    pub fn kind(&self) -> Option<Kind> {
        match self.ty {
            RecordType::Put(kind) => Some(kind),
            RecordType::Tombstone | RecordType::IdHigh => Kind::from_code(self.arg as u8),
            RecordType::Batch => Kind::from_code(self.id_low as u8),
            _ => None,
        }
    }
}

/// The unit records are aligned to (SPEC section 1, "ALIGN"): `max(READ_SIZE, WRITE_SIZE)`.
/// A record starts and ends on it, so reading one record never touches a read unit that a
/// later (possibly interrupted) write programs: ECC flash refuses every read that overlaps a
/// torn word, and with READ_SIZE above WRITE_SIZE a torn record could otherwise make the
/// record before it unreadable (format 3; format 2 aligned to WRITE_SIZE alone).
pub const fn alignment(read_size: usize, write_size: usize) -> usize {
    if read_size > write_size { read_size } else { write_size }
}

/// Bytes a record with `data_len` bytes of data occupies on flash with alignment unit `align`
/// ([`alignment`]).
pub const fn stored_len(data_len: usize, align: usize) -> usize {
    round_up(RECORD_OVERHEAD + data_len, align)
}

/// `n` rounded up to a multiple of `to` (`to` >= 1).
pub const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// What a record's CRC binds it to besides its own bytes (format 2, SPEC section 4): the
/// namespace and full id for `Put` and `Tombstone`, the namespace for `Batch` and `Clear`, and
/// nothing for `Cont` (its key is its chain's) and the context and structure records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    bytes: [u8; 12],
    len: u8,
}

impl Binding {
    /// No binding.
    pub const NONE: Binding = Binding { bytes: [0; 12], len: 0 };

    /// The binding of a record of type `ty` read or written with namespace `ns`; `id` is the
    /// full id of the key it names (ignored for types that name none).
    pub fn of(ty: RecordType, ns: u64, id: u32) -> Binding {
        let mut bytes = [0u8; 12];
        bytes[0..8].copy_from_slice(&ns.to_le_bytes());
        bytes[8..12].copy_from_slice(&id.to_le_bytes());
        let len = match ty {
            RecordType::Put(_) | RecordType::Tombstone => 12,
            RecordType::Batch | RecordType::Clear => 8,
            _ => 0,
        };
        // Only the covered bytes are kept, so equal bindings compare equal.
        bytes[len as usize..].fill(0);
        Binding { bytes, len }
    }

    /// The bytes the CRC covers before the tag.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The CRC of a record: over its binding, the tag word's bytes, then the data in as many
/// pieces as given.
pub fn record_crc(binding: &Binding, tag_word: u32, data: &[&[u8]]) -> u32 {
    let mut digest = CRC.digest();
    digest.update(binding.as_bytes());
    digest.update(&tag_word.to_le_bytes());
    for part in data {
        digest.update(part);
    }
    digest.finalize()
}

/// The full id of a key from its low 16 bits and the id-high context of its kind.
pub fn full_id(kind: Kind, id_low: u16, id_high: u16) -> u32 {
    if kind.uses_packet_id() {
        id_low as u32
    } else {
        ((id_high as u32) << 16) | id_low as u32
    }
}

/// The high 16 bits a key needs in the id-high context (0 for packet-id kinds).
pub fn id_high_of(key: Key) -> u16 {
    if key.kind().uses_packet_id() {
        0
    } else {
        (key.id() >> 16) as u16
    }
}

/// Walks the records of one page image (`page`: the page's bytes, header first) in the order
/// a writer laid them out, for host tools and tests that repair or convert images: from offset
/// 32, every decodable tag whose record fits, with the binding its CRC covers in the context
/// so far. `f` may rewrite the record (its CRC, say) and says whether it is one: if not, or at
/// an erased or invalid word, the walk steps one `align` unit on ([`alignment`]). The context starts from
/// the header's fields (whatever its version) and follows the `Namespace` and `IdHigh` records
/// whose CRC holds after `f` returned.
pub fn walk_page(page: &mut [u8], align: usize, mut f: impl FnMut(&mut [u8], usize, Tag, &Binding) -> bool) {
    if page.len() < PAGE_HEADER_LEN {
        return;
    }
    let mut ns = u64::from_le_bytes(page[20..28].try_into().unwrap_or([0; 8]));
    let high = u16::from_le_bytes([page[6], page[7]]);
    let (mut hi_c, mut hi_q) = (high, high);
    let mut off = PAGE_HEADER_LEN;
    while off + TAG_LEN <= page.len() {
        let word = le32(&page[off..off + TAG_LEN]);
        let tag = match Tag::decode(word) {
            Ok(t) if off + stored_len(t.data_len(), align) <= page.len() => t,
            _ => {
                off += align;
                continue;
            }
        };
        let id = match (tag.ty, tag.kind()) {
            (RecordType::Put(_) | RecordType::Tombstone, Some(kind)) => {
                let hi = if kind == Kind::Command { hi_c } else { hi_q };
                full_id(kind, tag.id_low, hi)
            }
            _ => 0,
        };
        let binding = Binding::of(tag.ty, ns, id);
        if !f(page, off, tag, &binding) {
            off += align;
            continue;
        }
        let len = tag.data_len();
        let data = &page[off + TAG_LEN..off + TAG_LEN + len];
        let whole = le32(&page[off + TAG_LEN + len..]) == record_crc(&Binding::NONE, word, &[data]);
        match tag.ty {
            RecordType::Namespace if whole => ns = u64::from_le_bytes(data.try_into().unwrap_or([0; 8])),
            RecordType::IdHigh if whole && tag.kind() == Some(Kind::Command) => hi_c = tag.id_low,
            RecordType::IdHigh if whole => hi_q = tag.id_low,
            _ => {}
        }
        off += stored_len(len, align);
    }
}

/// A little-endian u32 from the first four bytes of `b` (callers pass 4-byte slices).
pub fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Namespace hash of a client identity: FNV-1a 64 over the client id, a 0 byte, and the server
/// URI. Stored in page headers and `Namespace` records so two clients sharing a partition never
/// see each other's keys.
pub fn namespace_hash(client_id: &str, server_uri: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in client_id.as_bytes().iter().chain(&[0u8]).chain(server_uri.as_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_header_round_trips_and_detects_damage() {
        let h = PageHeader {
            seq: 7,
            tail_seq: 3,
            erase_count: 12,
            namespace: 0xDEAD_BEEF_0123_4567,
            id_high: 2,
            prev_torn: true,
        };
        let bytes = h.encode();
        assert_eq!(&bytes[0..4], b"MQPS");
        assert_eq!(PageHeader::decode(&bytes), HeaderState::Valid(h));
        for i in 0..PAGE_HEADER_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert_ne!(
                PageHeader::decode(&bad),
                HeaderState::Valid(h),
                "flip in byte {i} undetected"
            );
        }
        assert_eq!(PageHeader::decode(&[0xFF; 32]), HeaderState::Erased);
        assert_eq!(PageHeader::decode(&[0; 32]), HeaderState::Garbage);
    }

    #[test]
    fn unknown_version_is_reported_not_garbage() {
        let mut bytes = PageHeader {
            seq: 1,
            tail_seq: 1,
            erase_count: 0,
            namespace: 0,
            id_high: 0,
            prev_torn: false,
        }
        .encode();
        bytes[4] = 9;
        let crc = CRC.checksum(&bytes[0..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(PageHeader::decode(&bytes), HeaderState::UnknownVersion(9));
    }

    #[test]
    fn tag_layout_is_bit_exact() {
        let tag = Tag::new(RecordType::Put(Kind::Command), true, 64, 0x1234);
        assert_eq!(tag.encode(), (4 << 28) | (1 << 27) | (64 << 16) | 0x1234);
        assert_eq!(Tag::decode(tag.encode()), Ok(tag));
        assert_eq!(tag.data_len(), 64);
        assert_eq!(Tag::decode(ERASED_TAG), Err(TagError::Erased));
        assert_eq!(Tag::decode(0), Err(TagError::Invalid));
        // `more` is only meaningful on fragments.
        assert_eq!(Tag::decode((0x7 << 28) | (1 << 27) | (3 << 16)), Err(TagError::Invalid));
        // A tombstone naming kind 5 does not exist.
        assert_eq!(Tag::decode((0x7 << 28) | (5 << 16)), Err(TagError::Invalid));
        // Fixed-length records with another length are corrupt.
        assert_eq!(Tag::decode((0xB << 28) | (7 << 16)), Err(TagError::Invalid));
        assert_eq!(Tag::decode(0xF000_0000), Err(TagError::Invalid));
    }

    #[test]
    fn every_type_round_trips() {
        let tags = [
            Tag::new(RecordType::Put(Kind::Sent), false, 0, 1),
            Tag::new(RecordType::Cont, false, 2047, 3),
            Tag::new(RecordType::Tombstone, false, Kind::Queued.code() as u16, 9),
            Tag::new(RecordType::Batch, false, 8, Kind::Command.code() as u16),
            Tag::new(RecordType::Clear, false, 0, 0),
            Tag::new(RecordType::IdHigh, false, Kind::Command.code() as u16, 7),
            Tag::new(RecordType::Namespace, false, 8, 0),
            Tag::new(RecordType::Retire, false, 4, 0),
            Tag::new(RecordType::Origin, false, 8, 0),
            Tag::new(RecordType::Sync, false, 8, 0),
        ];
        for tag in tags {
            assert_eq!(Tag::decode(tag.encode()), Ok(tag), "{tag:?}");
        }
    }

    #[test]
    fn sizes_and_crc() {
        assert_eq!(stored_len(64, 4), 72);
        assert_eq!(stored_len(64, 16), 80);
        assert_eq!(stored_len(0, 1), 8);
        assert_eq!(stored_len(1, 32), 32);
        let put = RecordType::Put(Kind::Command);
        let word = Tag::new(put, false, 5, 1).encode();
        let b = Binding::of(put, 7, 0x0002_0001);
        let whole = record_crc(&b, word, &[b"hello"]);
        assert_eq!(whole, record_crc(&b, word, &[b"he", b"llo"]));
        assert_ne!(whole, record_crc(&b, word, &[b"hellp"]));
        // The same bytes read under another id-high context or namespace fail their CRC.
        assert_ne!(whole, record_crc(&Binding::of(put, 7, 0x0000_0001), word, &[b"hello"]));
        assert_ne!(whole, record_crc(&Binding::of(put, 8, 0x0002_0001), word, &[b"hello"]));
        // Bindings by type: key and namespace, namespace only, nothing.
        assert_eq!(b.as_bytes().len(), 12);
        assert_eq!(Binding::of(RecordType::Tombstone, 7, 1).as_bytes().len(), 12);
        assert_eq!(Binding::of(RecordType::Batch, 7, 1).as_bytes(), &7u64.to_le_bytes());
        assert_eq!(Binding::of(RecordType::Clear, 7, 1).as_bytes(), &7u64.to_le_bytes());
        for ty in [
            RecordType::Cont,
            RecordType::IdHigh,
            RecordType::Namespace,
            RecordType::Sync,
        ] {
            assert_eq!(Binding::of(ty, 7, 1), Binding::NONE);
        }
        assert_eq!(
            record_crc(&Binding::NONE, word, &[b"hello"]),
            CRC.checksum(&[&word.to_le_bytes()[..], b"hello"].concat())
        );
        // CRC-32C check value.
        assert_eq!(CRC.checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn ids_and_namespaces() {
        assert_eq!(full_id(Kind::Command, 0x0001, 0x0002), 0x0002_0001);
        assert_eq!(full_id(Kind::Sent, 0x0001, 0x0002), 1);
        assert_eq!(id_high_of(Key::command(0x0005_0000)), 5);
        assert_eq!(id_high_of(Key::sent(0xFFFF)), 0);
        assert_ne!(
            namespace_hash("dev-1", "tcp://a:1883"),
            namespace_hash("dev-2", "tcp://a:1883")
        );
        assert_ne!(namespace_hash("ab", "c"), namespace_hash("a", "bc"));
    }
}
