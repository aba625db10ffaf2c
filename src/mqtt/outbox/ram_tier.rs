//! The RAM-first tier: an [`Outbox`] with a bounded RAM queue of `R` messages in front of the
//! flash, so that on a healthy link most messages are acknowledged before they are ever
//! written.
//!
//! With [`Persist::Always`] (the default) a [`TieredOutbox`] is the plain [`Outbox`]: every
//! publish is on flash before [`TieredOutbox::publish`] returns. With [`Persist::RamFirst`] a
//! QoS 0 (with `persist_qos0`) or QoS 1 publish is kept in RAM and reaches flash ("is
//! spilled") only when
//! - the RAM queue is full (the oldest RAM message is spilled to make room),
//! - the link is down ([`TieredOutbox::on_connection_lost`] spills the whole RAM queue, and
//!   until [`TieredOutbox::on_connected`] new publishes go straight to flash),
//! - it stays unacknowledged `spill_after_ms` after its publish (checked by every call that
//!   takes `now`: [`TieredOutbox::publish`], [`TieredOutbox::next_transmit`],
//!   [`TieredOutbox::poll`]),
//! - or [`TieredOutbox::spill_all`] is called (brown-out, low battery, planned reboot).
//!
//! A QoS 2 publish spills the RAM queue and then goes to flash like [`Persist::Always`]: the
//! packet id record a QoS 2 message needs before its first transmission, and its PUBREL state,
//! only make sense next to a publish that is on flash.
//!
//! # Order
//!
//! Sequence numbers are assigned at publish from the outbox's one counter. Spilling always
//! takes the oldest RAM message first, so every message on flash is older than every message
//! in RAM (the tier invariant). The flash tier is transmitted first, in its order, and a RAM
//! message only once nothing on flash is waiting to be sent, oldest first: the transmit order
//! is publish order across both tiers. After a reboot only the flash tier exists (RAM is lost
//! by design); the sequence numbers of messages lost from RAM are given out again.
//!
//! A spilled message keeps its sequence number. If it was in flight it stays in flight: the
//! flash tier takes over its packet id, and its PUBACK removes it from flash (deferred).
//!
//! # What a power cut loses
//!
//! - [`Persist::Always`]: as [`Outbox`]: nothing that [`TieredOutbox::publish`] returned
//!   [`TierReceipt::Flash`] for; an acknowledged QoS 1 message may come back (deferred
//!   removal) and is sent again.
//! - [`Persist::RamFirst`]: every message still in RAM ([`TieredOutbox::in_ram`]), whether
//!   sent or not; at most `R`, all newer than anything on flash, so what survives is a prefix
//!   of the publish order. Messages spilled before the cut are kept as in `Always`. A cut
//!   during a spill keeps the spilled prefix (a torn record is not a record).
//!
//! # Cancellation
//!
//! Every async method, if cancelled, leaves the flash as a power cut at that point would and
//! RAM as before minus the messages already spilled, except that a spill cancelled between its write and the hand-over leaves the
//! message in both tiers: it may be sent twice (a duplicate, never a loss).
//!
//! # Limits
//!
//! `max_buffered`, `max_bytes` and the overflow policy apply to the flash tier, at the spill:
//! a spill refused under [`super::OverflowPolicy::RejectNewest`] leaves the message in RAM
//! and fails the call that spilled with [`OutboxError::Full`] (a publish that needed the room
//! is then not taken); under [`super::OverflowPolicy::DropOldest`] it drops the oldest flash
//! messages and reports them. A message larger than `max_bytes` is refused at publish.
//!
//! RAM: `R` entries of `BUF` bytes plus 24 bytes each, on top of the [`Outbox`].

use heapless::Vec;

use super::{Dropped, Outbox, OutboxError, Receipt, Slot, Stage, overflow::Drops};
use crate::error::Error;
use crate::key::Key;
use crate::mqtt::outbox::{Capacity, Inbound, Limit, OutboxConfig, Transmit};
use crate::mqtt::packet::{Publish, QoS, Record};
use crate::persistence::Persistence;

/// Where publishes go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Persist {
    /// Every publish is on flash before it returns (the [`Outbox`] behaviour).
    #[default]
    Always,
    /// QoS 0 and 1 publishes go to the RAM queue and are spilled to flash when it is full,
    /// when the link is down, after `spill_after_ms` unacknowledged, or at
    /// [`TieredOutbox::spill_all`].
    RamFirst {
        /// How long, in the unit of the `now` arguments (milliseconds by convention), a
        /// message may stay in RAM unacknowledged after its publish.
        spill_after_ms: u64,
    },
}

/// What [`TieredOutbox::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TierReceipt {
    /// Kept in RAM only: lost by a power cut until it is spilled or acknowledged.
    Ram {
        /// The message's sequence number.
        sequence: u32,
        /// How many older RAM messages were spilled to flash by this call.
        spilled: u32,
    },
    /// Handed to the flash tier ([`Outbox::publish_with`]'s receipt).
    Flash {
        /// The flash tier's receipt: `Stored` means durable.
        receipt: Receipt,
        /// How many older RAM messages were spilled to flash by this call.
        spilled: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RamState {
    /// Waiting to be sent; `dup`: it was sent on an earlier connection.
    Queued { dup: bool },
    /// Sent, PUBACK awaited.
    InFlight { packet_id: u16 },
}

struct Entry<const BUF: usize> {
    sequence: u32,
    published_at: u64,
    qos: QoS,
    state: RamState,
    len: u32,
    /// The encoded [`Record::Publish`], as it would be stored (packet id 0, no DUP).
    record: [u8; BUF],
}

type Res<T, P> = Result<T, OutboxError<<P as Persistence>::FlashError>>;

/// An [`Outbox`] (the flash tier, window `W`, records up to `BUF` bytes) with a RAM queue of
/// `R` messages in front of it, used in [`Persist::RamFirst`] mode. See the module docs.
///
/// The window `W` is shared: RAM and flash messages in flight together are at most `W`.
pub struct TieredOutbox<P: Persistence, const W: usize, const BUF: usize, const R: usize> {
    outbox: Outbox<P, W, BUF>,
    persist: Persist,
    /// Unordered; the order is the sequence numbers'. Removal is `swap_remove`.
    ram: Vec<Entry<BUF>, R>,
    link_up: bool,
}

impl<P: Persistence, const W: usize, const BUF: usize, const R: usize> TieredOutbox<P, W, BUF, R> {
    /// Restores the flash tier from `store` (see [`Outbox::restore`]); the RAM queue starts
    /// empty and the link counts as down until [`Self::on_connected`].
    pub async fn restore(store: P, config: OutboxConfig, persist: Persist) -> Res<Self, P> {
        Ok(Self::new(Outbox::restore(store, config).await?, persist))
    }

    /// Puts a RAM queue in front of `outbox`; the link counts as down until
    /// [`Self::on_connected`].
    pub fn new(outbox: Outbox<P, W, BUF>, persist: Persist) -> Self {
        TieredOutbox {
            outbox,
            persist,
            ram: Vec::new(),
            link_up: false,
        }
    }

    /// The flash tier.
    pub fn outbox(&self) -> &Outbox<P, W, BUF> {
        &self.outbox
    }

    /// Gives the flash tier back; what is in RAM is lost (call [`Self::spill_all`] first to
    /// keep it).
    pub fn into_outbox(self) -> Outbox<P, W, BUF> {
        self.outbox
    }

    /// The mode.
    pub fn persist(&self) -> Persist {
        self.persist
    }

    /// Messages held in RAM only (queued or in flight): what a power cut now would lose.
    pub fn in_ram(&self) -> usize {
        self.ram.len()
    }

    /// The sequence numbers held in RAM only, oldest first.
    pub fn ram_sequences(&self) -> impl Iterator<Item = u32> + '_ {
        let mut seqs: Vec<u32, R> = self.ram.iter().map(|e| e.sequence).collect();
        seqs.sort_unstable();
        seqs.into_iter()
    }

    /// Whether the link counts as up ([`Self::on_connected`] was called after the last loss).
    pub fn is_link_up(&self) -> bool {
        self.link_up
    }

    /// The flash tier's figures ([`Outbox::capacity`]); `in_flight` includes RAM messages.
    pub fn capacity(&self) -> Capacity {
        let mut c = self.outbox.capacity();
        c.in_flight += self.ram_in_flight();
        c
    }

    /// Whether nothing is left to send or to acknowledge in either tier.
    pub fn is_idle(&self) -> bool {
        self.ram.is_empty() && self.outbox.is_idle()
    }

    /// The sequence number the next publish gets.
    pub fn next_sequence(&self) -> u32 {
        self.outbox.next_sequence
    }

    fn ram_in_flight(&self) -> usize {
        self.ram
            .iter()
            .filter(|e| matches!(e.state, RamState::InFlight { .. }))
            .count()
    }

    fn oldest(&self, want: impl Fn(&Entry<BUF>) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, e) in self.ram.iter().enumerate() {
            if want(e) && best.is_none_or(|b| e.sequence < self.ram[b].sequence) {
                best = Some(i);
            }
        }
        best
    }

    /// The link is up: publishes may stay in RAM again ([`Persist::RamFirst`]).
    pub fn on_connected(&mut self) {
        self.link_up = true;
    }

    /// The connection ended: as [`Outbox::on_connection_lost`] for both tiers, then the RAM
    /// queue is spilled (oldest first) and publishes go to flash until [`Self::on_connected`].
    /// Returns how many messages were spilled; messages the flash tier's overflow policy drops
    /// for them go to `dropped`.
    ///
    /// Power loss or cancellation during the spill: the messages spilled so far are on flash
    /// (oldest first), the rest stay in RAM and are spilled by the next call that spills.
    pub async fn on_connection_lost(&mut self, mut dropped: impl FnMut(Dropped)) -> Res<u32, P> {
        self.link_up = false;
        self.outbox.on_connection_lost();
        for e in self.ram.iter_mut() {
            if matches!(e.state, RamState::InFlight { .. }) {
                e.state = RamState::Queued { dup: true };
            }
        }
        self.spill_ram(&mut dropped).await
    }

    /// Spills every RAM message whose `spill_after_ms` passed by `now`; returns how many.
    /// Cancellation and power loss: as [`Self::on_connection_lost`].
    pub async fn poll(&mut self, now: u64, mut dropped: impl FnMut(Dropped)) -> Res<u32, P> {
        self.spill_due(now, &mut dropped).await
    }

    /// Writes everything in RAM to flash at once (brown-out or low-battery interrupt, planned
    /// reboot) and makes deferred removals durable; returns how many messages were spilled.
    /// After `Ok` a power cut loses nothing that was published. Cancellation and power loss:
    /// as [`Self::on_connection_lost`].
    pub async fn spill_all(&mut self, mut dropped: impl FnMut(Dropped)) -> Res<u32, P> {
        let n = self.spill_ram(&mut dropped).await?;
        self.outbox.flush().await?;
        Ok(n)
    }

    /// Stores `msg` (see [`Outbox::publish`]): in RAM or on flash as the mode and the link say.
    /// Power loss: a [`TierReceipt::Ram`] message is lost by a cut before it is spilled or
    /// acknowledged; a [`TierReceipt::Flash`] one as [`Outbox::publish`].
    pub async fn publish(&mut self, msg: &Publish<'_>, now: u64) -> Res<TierReceipt, P> {
        self.publish_with(msg, now, |_| {}).await
    }

    /// [`Self::publish`], reporting every message the flash tier's overflow policy drops.
    pub async fn publish_with(
        &mut self,
        msg: &Publish<'_>,
        now: u64,
        mut dropped: impl FnMut(Dropped),
    ) -> Res<TierReceipt, P> {
        let Persist::RamFirst { .. } = self.persist else {
            let receipt = self.outbox.publish_with(msg, now, &mut dropped).await?;
            return Ok(TierReceipt::Flash { receipt, spilled: 0 });
        };
        if msg.qos == QoS::AtMostOnce && !self.outbox.config.persist_qos0 {
            return Ok(TierReceipt::Flash {
                receipt: Receipt::NotPersisted,
                spilled: 0,
            });
        }
        let mut spilled = self.spill_due(now, &mut dropped).await?;
        if !self.link_up || msg.qos == QoS::ExactlyOnce || R == 0 {
            spilled += self.spill_ram(&mut dropped).await?;
            let receipt = self.outbox.publish_with(msg, now, &mut dropped).await?;
            return Ok(TierReceipt::Flash { receipt, spilled });
        }
        let mut record = *msg;
        record.sequence = self.outbox.next_sequence;
        record.packet_id = 0;
        record.dup = false;
        record.expires_at = self.outbox.config.ttl.map(|ttl| now.saturating_add(ttl));
        let mut bytes = [0u8; BUF];
        let len = Record::Publish(record)
            .encode(&mut bytes)
            .map_err(OutboxError::Encode)?
            .len() as u32;
        if let Some(max_bytes) = self.outbox.config.max_bytes
            && u64::from(len) > max_bytes
        {
            // It could never be spilled.
            return Err(OutboxError::Full {
                limit: Limit::Bytes {
                    queued: self.outbox.queued_bytes,
                    needed: u64::from(len),
                    max_bytes,
                },
            });
        }
        if self.ram.is_full() {
            self.spill_oldest(&mut dropped).await?;
            spilled += 1;
        }
        let entry = Entry {
            sequence: record.sequence,
            published_at: now,
            qos: record.qos,
            state: RamState::Queued { dup: false },
            len,
            record: bytes,
        };
        if self.ram.push(entry).is_err() {
            return Err(OutboxError::Store(Error::LogicBug));
        }
        self.outbox.next_sequence = self.outbox.next_sequence.wrapping_add(1);
        Ok(TierReceipt::Ram {
            sequence: record.sequence,
            spilled,
        })
    }

    async fn spill_due(&mut self, now: u64, dropped: &mut impl FnMut(Dropped)) -> Res<u32, P> {
        let Persist::RamFirst { spill_after_ms } = self.persist else {
            return Ok(0);
        };
        let mut n = 0;
        while let Some(i) = self.oldest(|_| true) {
            if self.ram[i].published_at.saturating_add(spill_after_ms) > now {
                break;
            }
            self.spill_oldest(dropped).await?;
            n += 1;
        }
        Ok(n)
    }

    async fn spill_ram(&mut self, dropped: &mut impl FnMut(Dropped)) -> Res<u32, P> {
        let mut n = 0;
        while !self.ram.is_empty() {
            self.spill_oldest(dropped).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Writes the oldest RAM message to flash under its own sequence number, through the flash
    /// tier's limits and overflow policy, then hands it over: in flight, it becomes the flash
    /// tier's in-flight message with the same packet id.
    ///
    /// Power loss: the message is on flash or not (RAM is gone). Cancellation after the put
    /// and before the hand-over leaves it both on flash and in RAM: it may then be sent twice
    /// (a duplicate, never a loss), and the flash tier's count is one low until a restore.
    async fn spill_oldest(&mut self, dropped: &mut impl FnMut(Dropped)) -> Res<(), P> {
        let Some(i) = self.oldest(|_| true) else {
            return Ok(());
        };
        let (sequence, len, qos, state) = {
            let e = &self.ram[i];
            (e.sequence, e.len, e.qos, e.state)
        };
        let ob = &mut self.outbox;
        let mut drops = Drops::default();
        while let Some(limit) = ob.own_limit(len) {
            ob.make_room(limit, &mut drops, dropped).await?;
        }
        let key = Key::command(sequence);
        loop {
            match ob.store.put(key, &[&self.ram[i].record[..len as usize]]).await {
                Ok(()) => break,
                Err(Error::Full) => {
                    let limit = Limit::Store { buffered: ob.buffered };
                    ob.make_room(limit, &mut drops, dropped).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        ob.buffered += 1;
        ob.queued_bytes += u64::from(len);
        let sent = match state {
            RamState::InFlight { packet_id } => {
                ob.slots
                    .push(Slot {
                        sequence,
                        packet_id,
                        stage: Stage::AwaitAck { qos },
                        len,
                    })
                    .map_err(|_| OutboxError::WindowTooSmall)?;
                true
            }
            RamState::Queued { dup } => dup,
        };
        if sent {
            // It may have reached the broker: a resend from flash carries DUP.
            ob.sent_through = Some(ob.sent_through.map_or(sequence, |s| s.max(sequence)));
        }
        self.ram.swap_remove(i);
        Ok(())
    }

    /// The next packet to send (see [`Outbox::next_transmit`]): PUBRELs, then the flash tier
    /// oldest first, then, once nothing on flash waits, the RAM queue oldest first; at most
    /// `W` in flight across both. Spills what `now` makes due first. Expired RAM messages are
    /// dropped on the way and passed to `dropped` as [`Dropped::Expired`].
    ///
    /// Cancellation: as [`Outbox::next_transmit`], plus the spills already made.
    pub async fn next_transmit<'b>(
        &mut self,
        now: u64,
        buf: &'b mut [u8],
        mut dropped: impl FnMut(Dropped),
    ) -> Res<Option<Transmit<'b>>, P> {
        self.spill_due(now, &mut dropped).await?;
        let in_flight = self.outbox.slots.len() + self.ram_in_flight();
        let pubrel_due = self
            .outbox
            .slots
            .iter()
            .any(|s| s.stage == Stage::AwaitComp { sent: false });
        if in_flight < W || pubrel_due {
            // The flash tier's answer borrows `buf`; keep only what is needed to decode it
            // again, so `buf` is free for the RAM tier when the flash tier has nothing.
            let flash = match self.outbox.next_transmit(now, &mut *buf, &mut dropped).await? {
                None => None,
                Some(Transmit::PubRel { packet_id }) => Some((packet_id, None)),
                Some(Transmit::Publish(p)) => {
                    let stored = Publish {
                        packet_id: 0,
                        dup: false,
                        ..p
                    };
                    Some((p.packet_id, Some((Record::Publish(stored).encoded_len(), p.dup))))
                }
            };
            match flash {
                Some((packet_id, None)) => return Ok(Some(Transmit::PubRel { packet_id })),
                Some((packet_id, Some((len, dup)))) => {
                    if packet_id != 0 && self.ram_uses(packet_id) {
                        return Err(OutboxError::Store(Error::LogicBug));
                    }
                    let Ok(Record::Publish(mut p)) = Record::decode(&buf[..len]) else {
                        return Err(OutboxError::Store(Error::LogicBug));
                    };
                    p.packet_id = packet_id;
                    p.dup = dup;
                    return Ok(Some(Transmit::Publish(p)));
                }
                None => {}
            }
        }
        if in_flight >= W {
            return Ok(None);
        }
        loop {
            let Some(i) = self.oldest(|e| matches!(e.state, RamState::Queued { .. })) else {
                return Ok(None);
            };
            let len = self.ram[i].len as usize;
            let Some(out) = buf.get_mut(..len) else {
                return Err(OutboxError::Store(Error::BufferTooSmall { needed: len }));
            };
            out.copy_from_slice(&self.ram[i].record[..len]);
            let Ok(Record::Publish(p)) = Record::decode(&buf[..len]) else {
                return Err(OutboxError::Store(Error::LogicBug));
            };
            if p.expires_at.is_some_and(|at| now >= at) {
                let sequence = self.ram.swap_remove(i).sequence;
                dropped(Dropped::Expired { sequence });
                continue;
            }
            let RamState::Queued { dup } = self.ram[i].state else {
                return Err(OutboxError::Store(Error::LogicBug));
            };
            let packet_id = match p.qos {
                QoS::AtMostOnce => {
                    // Sent at most once: gone as soon as it is handed out.
                    self.ram.swap_remove(i);
                    0
                }
                _ => {
                    let pid = self.allocate_packet_id()?;
                    self.ram[i].state = RamState::InFlight { packet_id: pid };
                    pid
                }
            };
            let Ok(Record::Publish(mut p)) = Record::decode(&buf[..len]) else {
                return Err(OutboxError::Store(Error::LogicBug));
            };
            p.packet_id = packet_id;
            p.dup = dup;
            return Ok(Some(Transmit::Publish(p)));
        }
    }

    fn ram_uses(&self, packet_id: u16) -> bool {
        self.ram.iter().any(|e| e.state == RamState::InFlight { packet_id })
    }

    /// A packet id free in both tiers.
    fn allocate_packet_id(&mut self) -> Res<u16, P> {
        for _ in 0..=u16::MAX as u32 {
            let pid = self.outbox.allocate_packet_id()?;
            if !self.ram_uses(pid) {
                return Ok(pid);
            }
        }
        Err(OutboxError::NoPacketId)
    }

    /// A PUBACK for `packet_id`: a RAM message is done without touching flash; otherwise as
    /// [`Outbox::on_puback`]. Returns its sequence number, or `None` for an unknown id.
    pub async fn on_puback(&mut self, packet_id: u16) -> Res<Option<u32>, P> {
        if let Some(i) = self
            .ram
            .iter()
            .position(|e| e.state == RamState::InFlight { packet_id })
        {
            return Ok(Some(self.ram.swap_remove(i).sequence));
        }
        self.outbox.on_puback(packet_id).await
    }

    /// As [`Outbox::on_pubrec`] (QoS 2 messages are always on flash).
    pub async fn on_pubrec(&mut self, packet_id: u16) -> Res<Option<u32>, P> {
        self.outbox.on_pubrec(packet_id).await
    }

    /// As [`Outbox::on_pubcomp`].
    pub async fn on_pubcomp(&mut self, packet_id: u16) -> Res<Option<u32>, P> {
        self.outbox.on_pubcomp(packet_id).await
    }

    /// As [`Outbox::inbound_publish`].
    pub async fn inbound_publish(&mut self, packet_id: u16) -> Res<Inbound, P> {
        self.outbox.inbound_publish(packet_id).await
    }

    /// As [`Outbox::inbound_delivered`].
    pub async fn inbound_delivered(&mut self, packet_id: u16) -> Res<(), P> {
        self.outbox.inbound_delivered(packet_id).await
    }

    /// As [`Outbox::inbound_pubrel`].
    pub async fn inbound_pubrel(&mut self, packet_id: u16) -> Res<(), P> {
        self.outbox.inbound_pubrel(packet_id).await
    }

    /// Makes the flash tier's deferred removals durable (RAM is not spilled).
    pub async fn flush(&mut self) -> Res<(), P> {
        self.outbox.flush().await
    }

    /// One step of the store's idle-time maintenance ([`Outbox::maintain`]).
    pub async fn maintain(&mut self) -> Result<crate::Maintenance, OutboxError<P::FlashError>> {
        self.outbox.maintain().await
    }
}
