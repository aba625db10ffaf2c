//! Typed keys for MQTT client state, in Eclipse Paho's string form.
//!
//! Paho's file persistence names each stored packet by a prefix and a number: `s-17` is an
//! outgoing publish awaiting its acknowledgement, `sc-17` the PUBREL sent for it, and so on.
//! [`Key`] keeps that naming so a store written here can be read with Paho's mental model, but
//! stores it as a kind plus an integer so the flash format spends two bytes on it, not a string.

use core::fmt;
use core::str::FromStr;

/// The family of MQTT state a key belongs to, with Paho's string prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Kind {
    /// `s-`: an outgoing QoS 1/2 publish awaiting PUBACK or PUBREC. Id: the packet id.
    Sent = 0,
    /// `sc-`: an outgoing PUBREL awaiting PUBCOMP (QoS 2). Id: the packet id.
    PubRel = 1,
    /// `r-`: an inbound QoS 2 publish received and awaiting PUBREL. Id: the packet id.
    Received = 2,
    /// `c-`: a queued outgoing command (offline buffering). Id: a sequence number.
    Command = 3,
    /// `q-`: an inbound message not yet delivered to the application. Id: a sequence number.
    Queued = 4,
}

impl Kind {
    /// Every kind, in the order of their numeric codes.
    pub const ALL: [Kind; 5] = [Kind::Sent, Kind::PubRel, Kind::Received, Kind::Command, Kind::Queued];

    /// Paho's string prefix, without the dash.
    pub const fn prefix(self) -> &'static str {
        match self {
            Kind::Sent => "s",
            Kind::PubRel => "sc",
            Kind::Received => "r",
            Kind::Command => "c",
            Kind::Queued => "q",
        }
    }

    /// The code stored on flash (0..=4).
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The kind for a code read from flash, if it is one.
    pub const fn from_code(code: u8) -> Option<Kind> {
        match code {
            0 => Some(Kind::Sent),
            1 => Some(Kind::PubRel),
            2 => Some(Kind::Received),
            3 => Some(Kind::Command),
            4 => Some(Kind::Queued),
            _ => None,
        }
    }

    /// Whether ids of this kind are MQTT packet ids (1..=65535) rather than 32-bit sequence
    /// numbers. Packet-id kinds never need the flash format's id-high context.
    pub const fn uses_packet_id(self) -> bool {
        matches!(self, Kind::Sent | Kind::PubRel | Kind::Received)
    }

    /// The largest id a key of this kind may carry.
    pub const fn max_id(self) -> u32 {
        if self.uses_packet_id() {
            u16::MAX as u32
        } else {
            u32::MAX
        }
    }
}

/// A persistence key: a [`Kind`] and an id, written `s-17`, `sc-17`, `r-17`, `c-1042`, `q-9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Key {
    kind: Kind,
    id: u32,
}

impl Key {
    /// A key, or `None` if `id` does not fit the kind (packet-id kinds take at most 65535).
    pub const fn new(kind: Kind, id: u32) -> Option<Key> {
        if id > kind.max_id() {
            None
        } else {
            Some(Key { kind, id })
        }
    }

    /// `s-<packet_id>`: an outgoing publish awaiting its acknowledgement.
    pub const fn sent(packet_id: u16) -> Key {
        Key {
            kind: Kind::Sent,
            id: packet_id as u32,
        }
    }

    /// `sc-<packet_id>`: an outgoing PUBREL awaiting PUBCOMP.
    pub const fn pubrel(packet_id: u16) -> Key {
        Key {
            kind: Kind::PubRel,
            id: packet_id as u32,
        }
    }

    /// `r-<packet_id>`: an inbound QoS 2 publish awaiting PUBREL.
    pub const fn received(packet_id: u16) -> Key {
        Key {
            kind: Kind::Received,
            id: packet_id as u32,
        }
    }

    /// `c-<sequence>`: a queued outgoing command.
    pub const fn command(sequence: u32) -> Key {
        Key {
            kind: Kind::Command,
            id: sequence,
        }
    }

    /// `q-<sequence>`: an inbound message not yet delivered.
    pub const fn queued(sequence: u32) -> Key {
        Key {
            kind: Kind::Queued,
            id: sequence,
        }
    }

    /// The key's family.
    pub const fn kind(self) -> Kind {
        self.kind
    }

    /// The key's packet id or sequence number.
    pub const fn id(self) -> u32 {
        self.id
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.kind.prefix(), self.id)
    }
}

/// Why a string is not a Paho key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ParseKeyError {
    /// No `-` separates prefix and number.
    MissingDash,
    /// The prefix is not one of `s`, `sc`, `r`, `c`, `q`.
    UnknownPrefix,
    /// The part after the dash is not a decimal number without sign or padding.
    BadNumber,
    /// The number is too large for the kind (packet ids stop at 65535).
    OutOfRange,
}

impl fmt::Display for ParseKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseKeyError::MissingDash => "key has no '-' between prefix and number",
            ParseKeyError::UnknownPrefix => "key prefix is not one of s, sc, r, c, q",
            ParseKeyError::BadNumber => "key number is not a plain decimal number",
            ParseKeyError::OutOfRange => "key number is out of range for its kind",
        })
    }
}

impl core::error::Error for ParseKeyError {}

impl FromStr for Key {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Key, ParseKeyError> {
        let (prefix, number) = s.split_once('-').ok_or(ParseKeyError::MissingDash)?;
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.prefix() == prefix)
            .ok_or(ParseKeyError::UnknownPrefix)?;
        // Reject "+1", "01" and "" so each key has exactly one spelling.
        let canonical = !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit())
            && (number == "0" || !number.starts_with('0'));
        if !canonical {
            return Err(ParseKeyError::BadNumber);
        }
        let id: u32 = number.parse().map_err(|_| ParseKeyError::OutOfRange)?;
        Key::new(kind, id).ok_or(ParseKeyError::OutOfRange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip_in_paho_form() {
        let cases = [
            (Key::sent(17), "s-17"),
            (Key::pubrel(17), "sc-17"),
            (Key::received(65535), "r-65535"),
            (Key::command(4_000_000_000), "c-4000000000"),
            (Key::queued(0), "q-0"),
        ];
        for (key, text) in cases {
            assert_eq!(key.to_string(), text);
            assert_eq!(text.parse::<Key>(), Ok(key));
        }
    }

    #[test]
    fn bad_strings_give_the_specific_error() {
        assert_eq!("s17".parse::<Key>(), Err(ParseKeyError::MissingDash));
        assert_eq!("x-1".parse::<Key>(), Err(ParseKeyError::UnknownPrefix));
        assert_eq!("S-1".parse::<Key>(), Err(ParseKeyError::UnknownPrefix));
        assert_eq!("s-".parse::<Key>(), Err(ParseKeyError::BadNumber));
        assert_eq!("s-+1".parse::<Key>(), Err(ParseKeyError::BadNumber));
        assert_eq!("s-01".parse::<Key>(), Err(ParseKeyError::BadNumber));
        assert_eq!("s--1".parse::<Key>(), Err(ParseKeyError::BadNumber));
        assert_eq!("s-65536".parse::<Key>(), Err(ParseKeyError::OutOfRange));
        assert_eq!("c-4294967296".parse::<Key>(), Err(ParseKeyError::OutOfRange));
    }

    #[test]
    fn packet_id_kinds_reject_wide_ids() {
        assert_eq!(Key::new(Kind::Sent, 65536), None);
        assert_eq!(Key::new(Kind::Command, u32::MAX), Some(Key::command(u32::MAX)));
        for kind in Kind::ALL {
            assert_eq!(Kind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(Kind::from_code(5), None);
    }
}
