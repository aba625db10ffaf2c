//! MQTT on top of the store: the persisted packet records and the outbox.
//!
//! Both are `no_std` and allocation-free; client adapters live in [`crate::adapter`].

pub mod outbox;
pub mod packet;

pub use outbox::{
    Capacity, Dropped, Inbound, Limit, Outbox, OutboxConfig, OutboxError, OverflowPolicy, Persist, Queue, Receipt,
    TierReceipt, TieredOutbox, Transmit,
};
pub use packet::{DecodeError, EncodeError, Publish, QoS, Record};
