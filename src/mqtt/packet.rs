//! Persisted MQTT state records: the values the outbox stores under its keys.
//!
//! Every record is one format version byte followed by a [postcard] encoding of [`Record`]
//! (varint integers, length-prefixed byte strings, enum variants as a varint index):
//!
//! ```text
//! +---------+--------------------------------------------------------------+
//! | version | postcard(Record)                                             |
//! |  1 byte | variant | fields ...                                         |
//! +---------+--------------------------------------------------------------+
//! Record::Publish  (0): topic str, payload bytes, qos u8-enum, retain bool, dup bool,
//!                       packet_id varint u16 (0: none yet), sequence varint u32,
//!                       expires_at Option<varint u64>, properties bytes (MQTT 5, opaque)
//! Record::PubRel   (1): packet_id varint u16, sequence varint u32
//! Record::Inbound  (2): packet_id varint u16
//! Record::Assigned (3): packet_id varint u16, sequence varint u32
//! ```
//!
//! Compatibility policy: a reader accepts only [`FORMAT_VERSION`]; a new field or variant
//! bumps it, and an unknown version decodes to [`DecodeError::UnsupportedVersion`] rather than
//! to a wrong value. Nothing here allocates: decoding borrows topic, payload and properties
//! from the input buffer.

use core::fmt;

use serde::{Deserialize, Serialize};

/// The version byte written in front of every record.
pub const FORMAT_VERSION: u8 = 1;

/// MQTT quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QoS {
    /// At most once: fire and forget.
    AtMostOnce,
    /// At least once: PUBACK.
    AtLeastOnce,
    /// Exactly once: PUBREC, PUBREL, PUBCOMP.
    ExactlyOnce,
}

/// An outgoing publish as it is kept on flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Application payload.
    pub payload: &'a [u8],
    /// Quality of service.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// DUP flag: set when the message may have been sent before.
    pub dup: bool,
    /// MQTT packet id, 0 while none is assigned.
    pub packet_id: u16,
    /// The outbox sequence number (publish order).
    pub sequence: u32,
    /// Caller-supplied timestamp after which the message is dropped instead of sent.
    pub expires_at: Option<u64>,
    /// MQTT 5 properties in wire encoding, kept opaque (empty for MQTT 3.1.1).
    pub properties: &'a [u8],
}

impl<'a> Publish<'a> {
    /// A QoS 1 publish with no properties, sequence 0 and no expiry.
    pub const fn new(topic: &'a str, payload: &'a [u8]) -> Self {
        Publish {
            topic,
            payload,
            qos: QoS::AtLeastOnce,
            retain: false,
            dup: false,
            packet_id: 0,
            sequence: 0,
            expires_at: None,
            properties: &[],
        }
    }
}

/// One persisted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record<'a> {
    /// An outgoing publish not yet acknowledged (QoS 1/2) or not yet sent (any QoS).
    #[serde(borrow)]
    Publish(Publish<'a>),
    /// QoS 2 outgoing: PUBREC received, PUBREL owed until PUBCOMP.
    PubRel {
        /// The packet id of the publish.
        packet_id: u16,
        /// The outbox sequence number of the publish.
        sequence: u32,
    },
    /// QoS 2 inbound: the publish was delivered to the application; drop redeliveries until
    /// PUBREL.
    Inbound {
        /// The packet id chosen by the broker.
        packet_id: u16,
    },
    /// QoS 2 outgoing: the packet id given to a publish before its first transmission, so a
    /// resend after a reboot reuses it and the broker can discard the duplicate.
    Assigned {
        /// The packet id.
        packet_id: u16,
        /// The outbox sequence number of the publish.
        sequence: u32,
    },
}

/// Why a record could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncodeError {
    /// The output buffer is too small for the record.
    BufferTooSmall,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DecodeError {
    /// There are no bytes at all.
    Empty,
    /// The version byte is not [`FORMAT_VERSION`].
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// The bytes end before the record does.
    Truncated,
    /// The bytes do not form a record (bad variant, bad varint, invalid UTF-8 topic, ...).
    Malformed,
    /// A valid record is followed by this many extra bytes.
    TrailingBytes {
        /// Number of bytes after the record.
        extra: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("buffer too small for the record")
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("record is empty"),
            DecodeError::UnsupportedVersion { found } => write!(f, "unsupported record version {found}"),
            DecodeError::Truncated => f.write_str("record is truncated"),
            DecodeError::Malformed => f.write_str("bytes are not a valid record"),
            DecodeError::TrailingBytes { extra } => write!(f, "{extra} unexpected bytes after the record"),
        }
    }
}

impl core::error::Error for EncodeError {}
impl core::error::Error for DecodeError {}

impl<'a> Record<'a> {
    /// Writes the record (version byte first) into `buf`; returns the used prefix.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], EncodeError> {
        let (version, body) = buf.split_first_mut().ok_or(EncodeError::BufferTooSmall)?;
        *version = FORMAT_VERSION;
        let n = postcard::to_slice(self, body)
            .map_err(|_| EncodeError::BufferTooSmall)?
            .len();
        Ok(&mut buf[..n + 1])
    }

    /// The encoded length of the record.
    pub fn encoded_len(&self) -> usize {
        let size = postcard::serialize_with_flavor(self, postcard::ser_flavors::Size::default());
        1 + size.unwrap_or(usize::MAX - 1)
    }

    /// Reads a record, borrowing its strings from `bytes`. Never panics on any input.
    pub fn decode(bytes: &'a [u8]) -> Result<Record<'a>, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion { found: version });
        }
        let (record, rest) = postcard::take_from_bytes::<Record<'a>>(body).map_err(|e| match e {
            postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
            _ => DecodeError::Malformed,
        })?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes { extra: rest.len() });
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Publish<'static> {
        Publish {
            topic: "plant/line-3/temp",
            payload: b"{\"seq\":7}",
            qos: QoS::ExactlyOnce,
            retain: true,
            dup: true,
            packet_id: 65535,
            sequence: u32::MAX,
            expires_at: Some(u64::MAX),
            properties: &[0x01, 0x01, 0x23, 0x00, 0x0a],
        }
    }

    #[test]
    fn every_record_round_trips() {
        let records = [
            Record::Publish(sample()),
            Record::Publish(Publish::new("", b"")),
            Record::PubRel {
                packet_id: 1,
                sequence: 42,
            },
            Record::Inbound { packet_id: 65535 },
            Record::Assigned {
                packet_id: 3,
                sequence: 1 << 31,
            },
        ];
        for r in records {
            let mut buf = [0u8; 128];
            let n = r.encode(&mut buf).unwrap().len();
            assert_eq!(n, r.encoded_len());
            assert_eq!(buf[0], FORMAT_VERSION);
            assert_eq!(Record::decode(&buf[..n]), Ok(r));
        }
    }

    #[test]
    fn small_buffer_is_an_error_not_a_panic() {
        let r = Record::Publish(sample());
        let need = r.encoded_len();
        for len in 0..need {
            let mut buf = [0u8; 128];
            assert_eq!(r.encode(&mut buf[..len]), Err(EncodeError::BufferTooSmall), "len {len}");
        }
    }

    #[test]
    fn truncated_records_are_typed_errors() {
        let mut buf = [0u8; 128];
        let n = Record::Publish(sample()).encode(&mut buf).unwrap().len();
        assert_eq!(Record::decode(&[]), Err(DecodeError::Empty));
        for len in 1..n {
            assert_eq!(Record::decode(&buf[..len]), Err(DecodeError::Truncated), "len {len}");
        }
    }

    #[test]
    fn version_trailing_bytes_and_bad_utf8_are_reported() {
        let mut buf = [0u8; 128];
        let n = Record::Inbound { packet_id: 9 }.encode(&mut buf).unwrap().len();
        buf[0] = 2;
        assert_eq!(
            Record::decode(&buf[..n]),
            Err(DecodeError::UnsupportedVersion { found: 2 })
        );
        buf[0] = FORMAT_VERSION;
        assert_eq!(
            Record::decode(&buf[..n + 2]),
            Err(DecodeError::TrailingBytes { extra: 2 })
        );
        // Variant 7 does not exist.
        assert_eq!(Record::decode(&[FORMAT_VERSION, 7]), Err(DecodeError::Malformed));
        // A publish whose topic is not UTF-8.
        assert_eq!(
            Record::decode(&[FORMAT_VERSION, 0, 2, 0xff, 0xfe]),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn garbage_never_panics() {
        // A small xorshift generator: deterministic garbage of every length up to 64.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut ok = 0;
        for round in 0..20_000 {
            let mut bytes = [0u8; 64];
            let len = round % 65;
            for b in bytes.iter_mut().take(len) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if round % 2 == 0 && len > 0 {
                bytes[0] = FORMAT_VERSION;
            }
            if Record::decode(&bytes[..len]).is_ok() {
                ok += 1;
            }
        }
        // Some random inputs are valid records (e.g. a short Inbound); most are not.
        assert!(ok < 20_000);
    }
}
