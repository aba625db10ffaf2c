//! What the session drivers of the embedded clients (`rust_mqtt`, `minimq`) report: one
//! error type, one event type and one set of counters for both, re-exported by each module.

use crate::mqtt::outbox::{Dropped, OutboxError};

/// Adapter failures.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error<E> {
    /// The outbox or its store failed.
    Outbox(OutboxError<E>),
    /// A client error that is not a connection loss persisted through the driver's
    /// `Settings::max_client_errors` connections.
    Client {
        /// What the client reported last.
        reason: &'static str,
        /// Consecutive connections that ended with a client error.
        attempts: u32,
    },
    /// The client refuses the client id (rust-mqtt: not a valid MQTT string; minimq: longer
    /// than 64 bytes).
    ClientId,
}

impl<E> From<OutboxError<E>> for Error<E> {
    fn from(e: OutboxError<E>) -> Self {
        Error::Outbox(e)
    }
}

/// What the driver reports.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Connected (CONNACK accepted; always a clean session).
    Connected,
    /// A publish went on the connection.
    Sent {
        /// Outbox sequence number.
        sequence: u32,
        /// The outbox marked it as possibly sent before.
        dup: bool,
    },
    /// PUBACK or PUBCOMP: the message is done and removed.
    Delivered {
        /// Outbox sequence number.
        sequence: u32,
    },
    /// The broker refused the message with this MQTT 5 reason code; it is removed.
    Rejected {
        /// Outbox sequence number.
        sequence: u32,
        /// The reason code.
        reason: u8,
    },
    /// The outbox dropped a message.
    Dropped(Dropped),
    /// A PUBREL state found on flash (written by another adapter) cannot be continued with
    /// this client and was forgotten.
    PubRelForgotten {
        /// Its packet id.
        packet_id: u16,
    },
    /// The connection ended (or could not be made).
    ConnectionLost,
    /// A client error that is not a connection loss.
    ClientError {
        /// Consecutive client errors so far.
        attempt: u32,
        /// What the client reported.
        reason: &'static str,
    },
}

/// Counters since the driver was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// CONNACKs received.
    pub connects: u32,
    /// Connections lost and failed connection attempts.
    pub connection_losses: u32,
    /// Publishes written.
    pub sent: u32,
    /// Of those, marked DUP by the outbox.
    pub resent: u32,
    /// Messages acknowledged.
    pub delivered: u32,
}
