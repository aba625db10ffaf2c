//! A client-agnostic MQTT outbox over any [`Persistence`]: offline buffering, QoS 1 and 2
//! outgoing flows, inbound QoS 2 de-duplication and replay after a reboot, in publish order.
//!
//! The outbox does no I/O of its own besides the store: a client adapter asks it what to send
//! next ([`Outbox::next_transmit`]) and tells it what came back ([`Outbox::on_puback`],
//! [`Outbox::on_pubrec`], [`Outbox::on_pubcomp`], [`Outbox::on_connection_lost`]). Time is
//! whatever `u64` the caller passes in (no clock in `no_std`).
//!
//! # What is on flash
//!
//! | key | record | written | removed |
//! |---|---|---|---|
//! | `c-<seq>` | [`Record::Publish`] | [`Outbox::publish`], before it returns | PUBACK (deferred), PUBREC, QoS 0 sent, expiry, overflow |
//! | `s-<pid>` | [`Record::Assigned`] | QoS 2, before the first transmission | PUBREC |
//! | `sc-<pid>` | [`Record::PubRel`] | PUBREC, before PUBREL is sent | PUBCOMP |
//! | `r-<pid>` | [`Record::Inbound`] | inbound QoS 2 delivered, before PUBREC is sent | PUBREL |
//!
//! Sequence numbers only grow, so the store's insertion order of `c-` keys is publish order;
//! after a reboot the next sequence is one above the highest found on flash.
//!
//! # Order and the window
//!
//! Messages are handed out oldest first, at most `W` unacknowledged at a time (PUBREL flows
//! count too). Acknowledgements may arrive in any order. Because sending is in order and
//! bounded by `W`, the messages that may have been sent but are unacknowledged are always the
//! oldest `W` still queued: after a connection loss or a reboot the queue is replayed from its
//! start and exactly those carry DUP.
//!
//! # Power loss
//!
//! A publish that returned `Ok` is on flash. A PUBACK's removal is deferred (batched): a power
//! cut may bring the message back, and it is sent again (at least once). PUBREC and PUBCOMP
//! steps are durable before the next packet is sent, so a QoS 2 flow continues after a reboot
//! where it stopped. Every async method, if cancelled, leaves the flash as after a power cut at
//! that point and the RAM state unchanged or conservatively reset (call
//! [`Outbox::on_connection_lost`] after a cancelled transmission).

use core::fmt::{self, Debug};

use heapless::Vec;

use crate::error::Error;
use crate::key::{Key, Kind};
use crate::mqtt::packet::{DecodeError, EncodeError, Publish, QoS, Record};
use crate::persistence::Persistence;
use crate::store::KeyCursor;

mod overflow;
mod queue;
mod ram_tier;
pub use overflow::{Limit, OverflowPolicy};
pub use queue::Queue;
pub use ram_tier::{Persist, TierReceipt, TieredOutbox};

/// Outbox settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// The most messages kept unacknowledged (buffered plus in flight).
    pub max_buffered: u32,
    /// The most bytes the queued messages may take in the store: the sum of their encoded
    /// records, as given to [`Persistence::put`] (the store adds its framing, 8 bytes and the
    /// write alignment per record). `None`: no budget, only `max_buffered` and the store's
    /// capacity limit the queue. The QoS 2 state records (`s-`, `sc-`, `r-`, at most `2W` of
    /// a few bytes each) are not counted. With a budget, [`Outbox::restore`] reads every queued
    /// record once to learn its length.
    pub max_bytes: Option<u64>,
    /// What happens when a limit is reached: `max_buffered`, `max_bytes` or a full store.
    pub overflow: OverflowPolicy,
    /// Persist QoS 0 messages too (they are then sent once, later, when connected).
    pub persist_qos0: bool,
    /// Time to live, in the caller's time unit: a message not sent by `published + ttl` is
    /// dropped at replay and reported. `None`: messages never expire.
    pub ttl: Option<u64>,
}

impl OutboxConfig {
    /// `max_buffered` messages, no byte budget, rejecting the newest on overflow, QoS 0 not
    /// persisted, no TTL.
    pub const fn new(max_buffered: u32) -> Self {
        assert!(max_buffered > 0, "max_buffered must be at least 1");
        OutboxConfig {
            max_buffered,
            max_bytes: None,
            overflow: OverflowPolicy::RejectNewest,
            persist_qos0: false,
            ttl: None,
        }
    }
}

/// Outbox failures.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxError<E> {
    /// The store failed.
    Store(Error<E>),
    /// The message was not stored because `limit` was reached and the policy is
    /// [`OverflowPolicy::RejectNewest`], or is [`OverflowPolicy::DropOldest`] and nothing
    /// that may be dropped is left (see [`OverflowPolicy::DropOldest`]), or the message alone
    /// exceeds `max_bytes`.
    Full {
        /// Which limit.
        limit: Limit,
    },
    /// The message does not fit the outbox's `BUF`-byte record buffer.
    Encode(EncodeError),
    /// A record on flash is not a valid outbox record.
    Decode {
        /// The key of the record.
        key: Key,
        /// Why it is not valid.
        error: DecodeError,
    },
    /// More unfinished QoS 2 flows were found on flash than the window `W` holds.
    WindowTooSmall,
    /// All 65535 packet ids are in use (cannot happen with `W` < 65535).
    NoPacketId,
}

impl<E> From<Error<E>> for OutboxError<E> {
    fn from(e: Error<E>) -> Self {
        OutboxError::Store(e)
    }
}

impl<E: Debug> fmt::Display for OutboxError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboxError::Store(e) => write!(f, "store: {e}"),
            OutboxError::Full { limit } => write!(f, "outbox full: {limit}"),
            OutboxError::Encode(e) => write!(f, "message too large for the outbox buffer: {e}"),
            OutboxError::Decode { key, error } => write!(f, "record {key} is invalid: {error}"),
            OutboxError::WindowTooSmall => f.write_str("more QoS 2 flows pending than the window holds"),
            OutboxError::NoPacketId => f.write_str("no free packet id"),
        }
    }
}

impl<E: Debug> core::error::Error for OutboxError<E> {}

/// What [`Outbox::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Receipt {
    /// Stored durably under this sequence number.
    Stored {
        /// The message's sequence number.
        sequence: u32,
        /// The oldest message dropped to make room ([`OverflowPolicy::DropOldest`]).
        dropped: Option<u32>,
        /// How many messages were dropped to make room: one for the count limit, possibly
        /// more for the byte budget or a full store. [`Outbox::publish_with`] reports each.
        dropped_count: u32,
    },
    /// A QoS 0 message with `persist_qos0` off: not stored; send it now or never.
    NotPersisted,
}

/// Why a message left the outbox without being acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Dropped {
    /// Its time to live passed before it could be sent.
    Expired {
        /// Sequence number.
        sequence: u32,
    },
    /// Removed by the overflow policy.
    Overflow {
        /// Sequence number.
        sequence: u32,
    },
}

/// The next packet to hand to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit<'a> {
    /// A publish, with its packet id (0 for QoS 0) and DUP flag set.
    Publish(Publish<'a>),
    /// A PUBREL for an outgoing QoS 2 flow.
    PubRel {
        /// The packet id.
        packet_id: u16,
    },
}

/// What the caller should do with an inbound QoS 2 publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Inbound {
    /// New: deliver it to the application, then call [`Outbox::inbound_delivered`].
    Deliver,
    /// Already delivered (a redelivery before PUBREL): do not deliver; answer PUBREC.
    Duplicate,
}

/// Capacity figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Capacity {
    /// Messages stored and not yet acknowledged (including those in flight).
    pub buffered: u32,
    /// The configured limit.
    pub max_buffered: u32,
    /// Bytes the queued messages' records take (see [`OutboxConfig::max_bytes`]); `None`
    /// without a byte budget (then not tracked).
    pub queued_bytes: Option<u64>,
    /// The configured byte budget.
    pub max_bytes: Option<u64>,
    /// Packets awaiting an acknowledgement now (at most `W`).
    pub in_flight: usize,
    /// Outgoing QoS 2 flows between PUBREC and PUBCOMP.
    pub pubrel_pending: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Publish sent, PUBACK (QoS 1) or PUBREC (QoS 2) awaited.
    AwaitAck { qos: QoS },
    /// PUBREL state stored; `sent`: PUBREL sent on this connection, PUBCOMP awaited.
    AwaitComp { sent: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    sequence: u32,
    packet_id: u16,
    stage: Stage,
    /// The length of the message's record while it is queued (for the byte budget).
    len: u32,
}

/// How many messages one QoS 2 state record may drop before it gives up (one or two do
/// for records of 8 to 12 bytes), reported at the next [`Outbox::next_transmit`].
const UNREPORTED: usize = 4;

/// How many keys one `keys()` call fetches ahead.
const LOOKAHEAD: usize = 16;

/// The outbox: `W` is the replay window (packets in flight), `BUF` the largest encoded record.
/// RAM: `W` slots, a 16-key look-ahead and a few counters; the messages stay on flash.
///
/// Publish while offline, reboot, replay in order and acknowledge:
///
/// ```
/// use mqtt_persist::flash::{SimFlash, SimFlashError, block_on};
/// use mqtt_persist::mqtt::{Outbox, OutboxConfig, OutboxError, Publish, Transmit};
/// use mqtt_persist::{Config, Store};
///
/// type Flash = SimFlash<1024, 8, 4, 4>;
/// /// Mount, open the client's identity, restore: what the device does at every boot.
/// async fn open(flash: &mut Flash) -> Result<Outbox<Store<&mut Flash, 8>, 4, 128>, OutboxError<SimFlashError>> {
///     let mut store = Store::mount(flash, Config::new(128)).await.map_err(|(_, e)| e)?;
///     store.open("sensor-17", "tcp://broker.local:1883").await?;
///     Outbox::restore(store, OutboxConfig::new(1000)).await
/// }
///
/// let mut flash = Flash::boxed();
/// block_on(async {
///     let mut outbox = open(&mut *flash).await?;
///     for reading in [b"21.5", b"21.7", b"21.6"] {
///         outbox.publish(&Publish::new("plant/temp", reading), 0).await?; // on flash now
///     }
///     drop(outbox); // power cut: nothing was sent
///
///     let mut outbox = open(&mut *flash).await?;
///     assert_eq!(outbox.capacity().buffered, 3);
///     let mut buf = [0u8; 128];
///     let mut sent = Vec::new();
///     while let Some(Transmit::Publish(p)) = outbox.next_transmit(0, &mut buf, |_| {}).await? {
///         sent.push((p.packet_id, p.payload.to_vec())); // hand `p` to the MQTT client here
///     }
///     assert_eq!(sent.iter().map(|s| &s.1[..]).collect::<Vec<_>>(), [b"21.5", b"21.7", b"21.6"]);
///     for (packet_id, _) in sent {
///         outbox.on_puback(packet_id).await?; // the broker acknowledged it
///     }
///     assert!(outbox.is_idle());
///     outbox.flush().await
/// })?;
/// # Ok::<(), OutboxError<SimFlashError>>(())
/// ```
pub struct Outbox<P: Persistence, const W: usize, const BUF: usize> {
    store: P,
    config: OutboxConfig,
    next_sequence: u32,
    next_packet_id: u16,
    buffered: u32,
    /// The sum of the queued records' lengths; kept only with a byte budget.
    queued_bytes: u64,
    /// In-flight publishes and pending PUBREL flows.
    slots: Vec<Slot, W>,
    /// QoS 2 packet ids assigned on flash (`s-` records) for messages not yet PUBREC'd.
    assigned: Vec<(u32, u16), W>,
    cursor: KeyCursor,
    lookahead: Vec<Key, LOOKAHEAD>,
    lookahead_pos: usize,
    /// Messages dropped for a QoS 2 state record (see [`OverflowPolicy::DropOldest`]) and not
    /// yet reported: [`Self::next_transmit`] reports them.
    unreported: Vec<u32, UNREPORTED>,
    /// Messages with a sequence at or below this may have been sent: they carry DUP.
    sent_through: Option<u32>,
    /// How many of the messages restored (the oldest) may have been sent before the reboot.
    restored_maybe_sent: u32,
    scratch: [u8; BUF],
}

impl<P: Persistence, const W: usize, const BUF: usize> Outbox<P, W, BUF> {
    /// Restores the outbox from `store` (already opened for the client's identity): counts the
    /// queued messages, continues the sequence after the highest on flash, picks up unfinished
    /// QoS 2 flows and completes steps a power cut interrupted.
    pub async fn restore(mut store: P, config: OutboxConfig) -> Result<Self, OutboxError<P::FlashError>> {
        const { assert!(W > 0 && W < 65535, "window W must be 1..65535") };
        let mut buffered = 0u32;
        let mut queued_bytes = 0u64;
        let with_budget = config.max_bytes.is_some();
        let mut max_seq: Option<u32> = None;
        let mut max_pid = 0u16;
        let mut queued_seen = 0usize;
        let mut sent_through = None;
        let mut slots: Vec<Slot, W> = Vec::new();
        let mut assigned: Vec<(u32, u16), W> = Vec::new();
        let mut scratch = [0u8; BUF];
        let mut cursor = KeyCursor::default();
        let mut keys = [Key::sent(0); LOOKAHEAD];
        loop {
            let n = store.keys(&mut cursor, &mut keys).await?;
            if n == 0 {
                break;
            }
            for &key in &keys[..n] {
                match key.kind() {
                    Kind::Command => {
                        buffered += 1;
                        if with_budget {
                            queued_bytes += u64::from(record_len(&mut store, key, &mut scratch).await?);
                        }
                        max_seq = Some(max_seq.map_or(key.id(), |m: u32| m.max(key.id())));
                        queued_seen += 1;
                        // DUP for the window: what was in flight at the reboot. (Acknowledged
                        // messages whose deferred removal a cut lost come back too, older than
                        // those, and are sent again without DUP: `restored_maybe_sent` counts
                        // them.)
                        if queued_seen <= W {
                            sent_through = Some(key.id());
                        }
                    }
                    Kind::Sent | Kind::PubRel => {
                        let bytes = store.get(key, &mut scratch).await?;
                        let record = Record::decode(bytes).map_err(|error| OutboxError::Decode { key, error })?;
                        max_pid = max_pid.max(key.id() as u16);
                        match record {
                            Record::Assigned { packet_id, sequence } => {
                                assigned
                                    .push((sequence, packet_id))
                                    .map_err(|_| OutboxError::WindowTooSmall)?;
                            }
                            Record::PubRel { packet_id, sequence } => {
                                max_seq = Some(max_seq.map_or(sequence, |m: u32| m.max(sequence)));
                                slots
                                    .push(Slot {
                                        sequence,
                                        packet_id,
                                        stage: Stage::AwaitComp { sent: false },
                                        len: 0,
                                    })
                                    .map_err(|_| OutboxError::WindowTooSmall)?;
                            }
                            _ => {
                                return Err(OutboxError::Decode {
                                    key,
                                    error: DecodeError::Malformed,
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        // Finish PUBREC steps cut short: the PUBREL state is stored, so the publish and its
        // packet id assignment must go.
        for slot in &slots {
            if store.contains(Key::command(slot.sequence)).await? {
                if with_budget {
                    let len = record_len(&mut store, Key::command(slot.sequence), &mut scratch).await?;
                    queued_bytes = queued_bytes.saturating_sub(u64::from(len));
                }
                store.remove(Key::command(slot.sequence)).await?;
                buffered -= 1;
            }
            if store.contains(Key::sent(slot.packet_id)).await? {
                store.remove(Key::sent(slot.packet_id)).await?;
            }
            assigned.retain(|&(seq, _)| seq != slot.sequence);
        }
        Ok(Outbox {
            store,
            config,
            next_sequence: max_seq.map_or(0, |m| m.wrapping_add(1)),
            next_packet_id: max_pid,
            buffered,
            queued_bytes,
            slots,
            assigned,
            cursor: KeyCursor::default(),
            lookahead: Vec::new(),
            lookahead_pos: 0,
            unreported: Vec::new(),
            sent_through,
            restored_maybe_sent: (queued_seen.min(W + P::MAX_DEFERRED_REMOVALS) as u32).min(buffered),
            scratch,
        })
    }

    /// Of the messages [`Self::restore`] found, how many, the oldest, may already have reached
    /// the broker before the reboot: the ones in flight then (at most `W`) and those
    /// acknowledged whose deferred removal a power cut lost (at most the store's
    /// [`Persistence::MAX_DEFERRED_REMOVALS`]). They are sent again (the first `W` with DUP).
    /// The others (`capacity().buffered` at restore minus this) were certainly never sent.
    pub fn restored_maybe_sent(&self) -> u32 {
        self.restored_maybe_sent
    }

    /// The store, for example for [`crate::Store::usage`] (bytes free).
    pub fn store(&self) -> &P {
        &self.store
    }

    /// Flushes deferred removals and gives the store back.
    pub async fn into_store(mut self) -> Result<P, OutboxError<P::FlashError>> {
        self.store.flush().await?;
        Ok(self.store)
    }

    /// Gives the store back without flushing (as a power cut would).
    pub fn into_store_unflushed(self) -> P {
        self.store
    }

    /// The configuration.
    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }

    /// The sequence number the next publish gets.
    pub fn next_sequence(&self) -> u32 {
        self.next_sequence
    }

    /// Messages buffered, in flight, and the limit.
    pub fn capacity(&self) -> Capacity {
        Capacity {
            buffered: self.buffered,
            max_buffered: self.config.max_buffered,
            queued_bytes: self.config.max_bytes.map(|_| self.queued_bytes),
            max_bytes: self.config.max_bytes,
            in_flight: self.slots.len(),
            pubrel_pending: self
                .slots
                .iter()
                .filter(|s| matches!(s.stage, Stage::AwaitComp { .. }))
                .count(),
        }
    }

    /// Whether nothing is left to send or to acknowledge.
    pub fn is_idle(&self) -> bool {
        self.buffered == 0 && self.slots.is_empty()
    }

    /// A queued message of `len` record bytes left the queue.
    fn unqueue(&mut self, len: u32) {
        self.buffered = self.buffered.saturating_sub(1);
        self.queued_bytes = self.queued_bytes.saturating_sub(u64::from(len));
    }

    fn allocate_packet_id(&mut self) -> Result<u16, OutboxError<P::FlashError>> {
        for _ in 0..=u16::MAX as u32 {
            self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
            let pid = self.next_packet_id;
            let busy = self.slots.iter().any(|s| s.packet_id == pid) || self.assigned.iter().any(|&(_, p)| p == pid);
            if !busy {
                return Ok(pid);
            }
        }
        Err(OutboxError::NoPacketId)
    }

    async fn next_command_key(&mut self) -> Result<Option<Key>, OutboxError<P::FlashError>> {
        loop {
            if let Some(&key) = self.lookahead.get(self.lookahead_pos) {
                self.lookahead_pos += 1;
                // A message in flight listed again is skipped: the listing starts again from
                // the oldest after `CursorExpired` (docs/DESIGN.md section 17). Messages
                // already done are gone from the store and skipped at the read.
                let in_flight = || {
                    self.slots
                        .iter()
                        .any(|s| s.sequence == key.id() && matches!(s.stage, Stage::AwaitAck { .. }))
                };
                if key.kind() == Kind::Command && !in_flight() {
                    return Ok(Some(key));
                }
                continue;
            }
            let mut keys = [Key::sent(0); LOOKAHEAD];
            let n = match self.store.keys(&mut self.cursor, &mut keys).await {
                // Only if more than KEY_CURSORS other listings ran since: list again from the
                // oldest; what is in flight is skipped above, what was done is gone.
                Err(crate::Error::CursorExpired) => {
                    self.cursor = KeyCursor::default();
                    self.store.keys(&mut self.cursor, &mut keys).await?
                }
                r => r?,
            };
            if n == 0 {
                return Ok(None);
            }
            self.lookahead.clear();
            self.lookahead.extend_from_slice(&keys[..n]).ok();
            self.lookahead_pos = 0;
        }
    }

    /// The next packet to send, or `None` when the window is full or nothing is queued.
    /// Pending PUBRELs come first, then publishes oldest first. Expired messages are removed
    /// on the way and passed to `dropped`. The returned publish borrows `buf` (at least `BUF`
    /// bytes); once it returns, the outbox counts the packet as sent.
    ///
    /// Cancellation: the packet counts as not handed out, except that expired messages may
    /// already be removed.
    pub async fn next_transmit<'b>(
        &mut self,
        now: u64,
        buf: &'b mut [u8],
        mut dropped: impl FnMut(Dropped),
    ) -> Result<Option<Transmit<'b>>, OutboxError<P::FlashError>> {
        self.report_unreported(&mut dropped);
        if let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| s.stage == Stage::AwaitComp { sent: false })
        {
            slot.stage = Stage::AwaitComp { sent: true };
            return Ok(Some(Transmit::PubRel {
                packet_id: slot.packet_id,
            }));
        }
        if self.slots.is_full() {
            return Ok(None);
        }
        // Find the next message still on flash and not expired. Bounded by the queue length
        // plus the look-ahead of keys that were removed meanwhile.
        let (key, len, qos, sequence) = loop {
            let Some(key) = self.next_command_key().await? else {
                return Ok(None);
            };
            let value = match self.store.get(key, buf).await {
                Ok(v) => v,
                Err(Error::NotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            let len = value.len();
            let Record::Publish(p) = Record::decode(value).map_err(|error| OutboxError::Decode { key, error })? else {
                return Err(OutboxError::Decode {
                    key,
                    error: DecodeError::Malformed,
                });
            };
            if p.expires_at.is_some_and(|at| now >= at) {
                let (sequence, qos) = (p.sequence, p.qos);
                self.store.remove(key).await?;
                self.unqueue(len as u32);
                if qos == QoS::ExactlyOnce {
                    self.forget_assigned(sequence).await?;
                }
                dropped(Dropped::Expired { sequence });
                continue;
            }
            break (key, len, p.qos, p.sequence);
        };
        let dup = self.sent_through.is_some_and(|s| sequence <= s);
        let packet_id = match qos {
            QoS::AtMostOnce => {
                // Sent at most once: gone from the queue as soon as it is handed out.
                self.store.remove_deferred(key).await?;
                self.unqueue(len as u32);
                0
            }
            QoS::AtLeastOnce => self.allocate_packet_id()?,
            QoS::ExactlyOnce => match self.assigned.iter().find(|&&(seq, _)| seq == sequence) {
                Some(&(_, pid)) => pid,
                None => {
                    // Durable before the first transmission, so a resend after a reboot reuses
                    // it and the broker recognises the duplicate.
                    let pid = self.allocate_packet_id()?;
                    let mut rec = [0u8; 16];
                    let n = Record::Assigned {
                        packet_id: pid,
                        sequence,
                    }
                    .encode(&mut rec)
                    .map_err(OutboxError::Encode)?
                    .len();
                    let put = self.put_state(Key::sent(pid), &rec[..n], Some(sequence)).await;
                    self.report_unreported(&mut dropped);
                    put?;
                    self.assigned
                        .push((sequence, pid))
                        .map_err(|_| OutboxError::WindowTooSmall)?;
                    pid
                }
            },
        };
        if qos != QoS::AtMostOnce {
            self.slots
                .push(Slot {
                    sequence,
                    packet_id,
                    stage: Stage::AwaitAck { qos },
                    len: len as u32,
                })
                .map_err(|_| OutboxError::WindowTooSmall)?;
        }
        self.sent_through = Some(self.sent_through.map_or(sequence, |s| s.max(sequence)));
        let Ok(Record::Publish(mut p)) = Record::decode(&buf[..len]) else {
            return Err(OutboxError::Store(Error::LogicBug));
        };
        p.packet_id = packet_id;
        p.dup = dup;
        Ok(Some(Transmit::Publish(p)))
    }

    async fn forget_assigned(&mut self, sequence: u32) -> Result<(), OutboxError<P::FlashError>> {
        if let Some(i) = self.assigned.iter().position(|&(seq, _)| seq == sequence) {
            let (_, pid) = self.assigned.swap_remove(i);
            self.store.remove(Key::sent(pid)).await?;
        }
        Ok(())
    }

    /// A PUBACK for `packet_id`: the QoS 1 message is done (its removal is deferred: a power
    /// cut may resend it). Returns its sequence number, or `None` for an unknown id (ignored).
    ///
    /// Cancellation and power loss: the message stays queued (or comes back) and is resent.
    pub async fn on_puback(&mut self, packet_id: u16) -> Result<Option<u32>, OutboxError<P::FlashError>> {
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.packet_id == packet_id && matches!(s.stage, Stage::AwaitAck { .. }))
        else {
            return Ok(None);
        };
        let slot = self.slots[i];
        match self.store.remove_deferred(Key::command(slot.sequence)).await {
            Ok(()) | Err(Error::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.slots.swap_remove(i);
        self.unqueue(slot.len);
        Ok(Some(slot.sequence))
    }

    /// A PUBREC for `packet_id`: stores the PUBREL state durably and removes the message; the
    /// caller then sends PUBREL (also returned by the next [`Self::next_transmit`] after a
    /// connection loss). Returns the sequence number, or `None` for an unknown id.
    ///
    /// Power loss or cancellation before the PUBREL state is stored: the publish is resent
    /// with the same packet id and DUP; after it: [`Self::restore`] finishes removing the
    /// publish and the flow continues with PUBREL.
    pub async fn on_pubrec(&mut self, packet_id: u16) -> Result<Option<u32>, OutboxError<P::FlashError>> {
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.packet_id == packet_id && s.stage == Stage::AwaitAck { qos: QoS::ExactlyOnce })
        else {
            // A PUBREC repeated for a flow already in PUBREL state is answered with PUBREL.
            return Ok(self.slots.iter().find(|s| s.packet_id == packet_id).map(|s| s.sequence));
        };
        let sequence = self.slots[i].sequence;
        let mut rec = [0u8; 16];
        let n = Record::PubRel { packet_id, sequence }
            .encode(&mut rec)
            .map_err(OutboxError::Encode)?
            .len();
        // Order matters for power loss: PUBREL state first, then the publish goes.
        self.put_state(Key::pubrel(packet_id), &rec[..n], None).await?;
        match self.store.remove(Key::command(sequence)).await {
            Ok(()) | Err(Error::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.unqueue(self.slots[i].len);
        self.slots[i].len = 0;
        self.forget_assigned(sequence).await?;
        self.slots[i].stage = Stage::AwaitComp { sent: true };
        Ok(Some(sequence))
    }

    /// A PUBCOMP for `packet_id`: the QoS 2 flow is complete and its state removed durably.
    /// Power loss or cancellation before that: PUBREL is sent again after the restore, which
    /// the broker answers with PUBCOMP.
    pub async fn on_pubcomp(&mut self, packet_id: u16) -> Result<Option<u32>, OutboxError<P::FlashError>> {
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.packet_id == packet_id && matches!(s.stage, Stage::AwaitComp { .. }))
        else {
            return Ok(None);
        };
        match self.store.remove(Key::pubrel(packet_id)).await {
            Ok(()) | Err(Error::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        let slot = self.slots.swap_remove(i);
        Ok(Some(slot.sequence))
    }

    /// The connection ended: unacknowledged publishes are sent again (with DUP) from the
    /// start of the queue, and PUBRELs again, on the next connection.
    pub fn on_connection_lost(&mut self) {
        self.slots.retain(|s| matches!(s.stage, Stage::AwaitComp { .. }));
        for s in self.slots.iter_mut() {
            s.stage = Stage::AwaitComp { sent: false };
        }
        self.cursor = KeyCursor::default();
        self.lookahead.clear();
        self.lookahead_pos = 0;
    }

    /// An inbound QoS 2 publish with `packet_id` arrived: deliver it only if it is new.
    /// Reads only; cancellation and power loss change nothing.
    pub async fn inbound_publish(&mut self, packet_id: u16) -> Result<Inbound, OutboxError<P::FlashError>> {
        Ok(if self.store.contains(Key::received(packet_id)).await? {
            Inbound::Duplicate
        } else {
            Inbound::Deliver
        })
    }

    /// The application has the inbound QoS 2 message `packet_id`: remember it durably until
    /// PUBREL (send PUBREC after this returns). A power cut between delivery and this call
    /// can deliver the message again; after it, never.
    pub async fn inbound_delivered(&mut self, packet_id: u16) -> Result<(), OutboxError<P::FlashError>> {
        let mut rec = [0u8; 8];
        let n = Record::Inbound { packet_id }
            .encode(&mut rec)
            .map_err(OutboxError::Encode)?
            .len();
        self.put_state(Key::received(packet_id), &rec[..n], None).await?;
        Ok(())
    }

    /// PUBREL for an inbound QoS 2 message: forget its id (send PUBCOMP after this returns).
    /// Power loss or cancellation before it is durable: the id is kept until the broker's next
    /// PUBREL, which is harmless.
    pub async fn inbound_pubrel(&mut self, packet_id: u16) -> Result<(), OutboxError<P::FlashError>> {
        match self.store.remove(Key::received(packet_id)).await {
            Ok(()) | Err(Error::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes deferred removals (PUBACKs) durable.
    pub async fn flush(&mut self) -> Result<(), OutboxError<P::FlashError>> {
        self.store.flush().await?;
        Ok(())
    }

    /// One step of the store's idle-time maintenance ([`crate::Store::maintain`]): call between
    /// publishes until it returns [`crate::Maintenance::Idle`], so the next publishes' puts
    /// erase nothing.
    pub async fn maintain(&mut self) -> Result<crate::Maintenance, OutboxError<P::FlashError>> {
        Ok(self.store.maintain().await?)
    }
}

/// The length of the record under `key`: read into `scratch`, or the size the store reports
/// for a record larger than `scratch` (such a record fails later, at its transmission).
async fn record_len<P: Persistence>(
    store: &mut P,
    key: Key,
    scratch: &mut [u8],
) -> Result<u32, OutboxError<P::FlashError>> {
    match store.get(key, scratch).await {
        Ok(v) => Ok(v.len() as u32),
        Err(Error::BufferTooSmall { needed }) => Ok(needed as u32),
        Err(e) => Err(e.into()),
    }
}

impl<F: embedded_storage_async::nor_flash::NorFlash, const PAGES: usize, const W: usize, const BUF: usize>
    Outbox<crate::Store<F, PAGES>, W, BUF>
{
    /// Bytes the store can still take (an estimate: framing applies, and damage left by power
    /// cuts, which a put that needs the room first tries to reclaim).
    pub fn bytes_free(&self) -> u64 {
        let u = self.store.usage();
        u.capacity_bytes.saturating_sub(u.live_bytes)
    }
}

#[cfg(test)]
mod tests;
