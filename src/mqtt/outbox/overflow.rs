//! Admission of a new message: the three limits (`max_buffered`, `max_bytes`, the store's
//! capacity) and the overflow policy that applies to all three.
//!
//! The outbox's own limits are checked first, from RAM; the store's limit shows only as
//! [`Error::Full`] from the put (the store has already written its pending deferred removals
//! before it refuses, so what it refuses does not fit even without them). With
//! [`OverflowPolicy::DropOldest`] each refusal drops the oldest droppable message and the put
//! is tried again, so exactly as many messages are dropped as the newest needs.

use core::fmt;

use super::{Dropped, Outbox, OutboxError, Receipt, Stage, record_len};
use crate::error::Error;
use crate::key::{Key, Kind};
use crate::mqtt::packet::{Publish, QoS, Record};
use crate::persistence::Persistence;
use crate::store::KeyCursor;

/// What to do when a limit is reached: `max_buffered` messages are queued, the byte budget
/// `max_bytes` would be exceeded, or the store is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OverflowPolicy {
    /// Refuse the new message with [`OutboxError::Full`], naming the [`Limit`]; nothing
    /// changes.
    RejectNewest,
    /// Drop the oldest queued messages, one at a time, until the new message fits, and report
    /// each ([`Receipt::Stored`], [`Outbox::publish_with`]).
    ///
    /// Never dropped: a QoS 2 message that has a packet id (it may have reached the broker,
    /// which then holds that id until PUBREL; dropping it would abandon the flow and free an
    /// id the broker still treats as in use, so a later message reusing it could be discarded
    /// as a duplicate). These are at most `W`, the oldest of the queue; the next oldest is
    /// dropped instead. Flows past PUBREC are not queued messages and are never dropped.
    ///
    /// On a full store the QoS 2 state records need room too: the packet id record written
    /// before a QoS 2 message is first sent, the PUBREL state at PUBREC and an inbound id at
    /// delivery. Under this policy they also drop the oldest droppable messages (never the
    /// message being sent), which [`Outbox::next_transmit`] reports; under
    /// [`Self::RejectNewest`] they fail with the store's [`Error::Full`] until acknowledgements
    /// make room, so a byte budget below the store's capacity is the way to keep QoS 2 flowing
    /// on a full queue.
    /// A QoS 1 message in flight may be dropped; its PUBACK is then ignored (it may have
    /// reached the broker). If nothing droppable is left, the publish fails with
    /// [`OutboxError::Full`] after the drops already reported.
    DropOldest,
}

/// Which limit refused a message ([`OutboxError::Full`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Limit {
    /// `max_buffered` messages are queued.
    Count {
        /// Messages queued now.
        buffered: u32,
        /// The configured `max_buffered`.
        max_buffered: u32,
    },
    /// The queued records plus this one would exceed `max_bytes` (or this one alone does).
    Bytes {
        /// Bytes the queued records take now.
        queued: u64,
        /// The new message's record length.
        needed: u64,
        /// The configured `max_bytes`.
        max_bytes: u64,
    },
    /// The store refused the put with [`Error::Full`]: no room even after compaction and
    /// after its deferred removals were written.
    Store {
        /// Messages queued now.
        buffered: u32,
    },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Limit::Count { buffered, max_buffered } => {
                write!(f, "{buffered} of {max_buffered} messages buffered")
            }
            Limit::Bytes {
                queued,
                needed,
                max_bytes,
            } => write!(f, "{queued} B queued + {needed} B over the budget of {max_bytes} B"),
            Limit::Store { buffered } => write!(f, "the store is full ({buffered} messages buffered)"),
        }
    }
}

/// The drops one publish made.
#[derive(Default)]
pub(super) struct Drops {
    pub(super) first: Option<u32>,
    pub(super) count: u32,
}

type Res<T, P> = Result<T, OutboxError<<P as Persistence>::FlashError>>;

impl<P: Persistence, const W: usize, const BUF: usize> Outbox<P, W, BUF> {
    /// Stores `msg` under the next sequence number; returns when it is durable. `now` is the
    /// caller's timestamp, used for the TTL. Topic, payload, QoS, retain and properties are
    /// taken from `msg`; packet id, DUP, sequence and expiry are set by the outbox.
    ///
    /// At a limit (`max_buffered`, `max_bytes`, a full store) the [`OverflowPolicy`] applies;
    /// the receipt names the oldest message dropped and how many were (use
    /// [`Self::publish_with`] to hear each).
    ///
    /// Power loss: before it returns the message may or may not be stored; after `Ok` it is.
    /// Messages dropped for it are removed durably, one by one, before it is stored.
    pub async fn publish(&mut self, msg: &Publish<'_>, now: u64) -> Res<Receipt, P> {
        self.publish_with(msg, now, |_| {}).await
    }

    /// [`Self::publish`], reporting every message the overflow policy drops to `dropped`
    /// ([`Dropped::Overflow`], oldest first), also when the publish then fails.
    pub async fn publish_with(
        &mut self,
        msg: &Publish<'_>,
        now: u64,
        mut dropped: impl FnMut(Dropped),
    ) -> Res<Receipt, P> {
        if msg.qos == QoS::AtMostOnce && !self.config.persist_qos0 {
            return Ok(Receipt::NotPersisted);
        }
        let mut record = *msg;
        record.sequence = self.next_sequence;
        record.packet_id = 0;
        record.dup = false;
        record.expires_at = self.config.ttl.map(|ttl| now.saturating_add(ttl));
        let len = self.encode(&record)?;
        if let Some(max_bytes) = self.config.max_bytes
            && u64::from(len) > max_bytes
        {
            // Dropping cannot help.
            return Err(OutboxError::Full {
                limit: Limit::Bytes {
                    queued: self.queued_bytes,
                    needed: u64::from(len),
                    max_bytes,
                },
            });
        }
        let mut drops = Drops::default();
        while let Some(limit) = self.own_limit(len) {
            self.make_room(limit, &mut drops, &mut dropped).await?;
        }
        let key = Key::command(record.sequence);
        loop {
            if drops.count > 0 {
                // Dropping read records into the scratch buffer.
                self.encode(&record)?;
            }
            match self.store.put(key, &[&self.scratch[..len as usize]]).await {
                Ok(()) => break,
                Err(Error::Full) => {
                    let limit = Limit::Store {
                        buffered: self.buffered,
                    };
                    self.make_room(limit, &mut drops, &mut dropped).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.buffered += 1;
        self.queued_bytes += u64::from(len);
        Ok(Receipt::Stored {
            sequence: record.sequence,
            dropped: drops.first,
            dropped_count: drops.count,
        })
    }

    fn encode(&mut self, record: &Publish<'_>) -> Res<u32, P> {
        let bytes = Record::Publish(*record)
            .encode(&mut self.scratch)
            .map_err(OutboxError::Encode)?;
        Ok(bytes.len() as u32)
    }

    /// The outbox's own limit a record of `len` bytes would break, if any.
    pub(super) fn own_limit(&self, len: u32) -> Option<Limit> {
        if self.buffered >= self.config.max_buffered {
            return Some(Limit::Count {
                buffered: self.buffered,
                max_buffered: self.config.max_buffered,
            });
        }
        let max_bytes = self.config.max_bytes?;
        (self.queued_bytes + u64::from(len) > max_bytes).then_some(Limit::Bytes {
            queued: self.queued_bytes,
            needed: u64::from(len),
            max_bytes,
        })
    }

    /// Applies the policy to `limit`: an error, or one message dropped and reported.
    pub(super) async fn make_room(
        &mut self,
        limit: Limit,
        drops: &mut Drops,
        dropped: &mut impl FnMut(Dropped),
    ) -> Res<(), P> {
        if self.config.overflow == OverflowPolicy::RejectNewest {
            return Err(OutboxError::Full { limit });
        }
        let Some(sequence) = self.drop_oldest(None).await? else {
            return Err(OutboxError::Full { limit });
        };
        drops.first.get_or_insert(sequence);
        drops.count += 1;
        dropped(Dropped::Overflow { sequence });
        Ok(())
    }

    /// Puts a QoS 2 state record (`s-`, `sc-`, `r-`). On a full store under
    /// [`OverflowPolicy::DropOldest`] the oldest droppable messages other than `keep` are
    /// dropped to make room (at most `UNREPORTED` waiting, kept for
    /// [`Self::report_unreported`]); otherwise, or with nothing to drop, the store's
    /// [`Error::Full`] is returned.
    pub(super) async fn put_state(&mut self, key: Key, record: &[u8], keep: Option<u32>) -> Res<(), P> {
        loop {
            match self.store.put(key, &[record]).await {
                Err(Error::Full)
                    if self.config.overflow == OverflowPolicy::DropOldest && !self.unreported.is_full() =>
                {
                    let Some(sequence) = self.drop_oldest(keep).await? else {
                        return Err(Error::Full.into());
                    };
                    // Not full: checked above.
                    self.unreported.push(sequence).ok();
                }
                r => return Ok(r?),
            }
        }
    }

    /// Passes the drops [`Self::put_state`] made to `dropped`.
    pub(super) fn report_unreported(&mut self, dropped: &mut impl FnMut(Dropped)) {
        for &sequence in &self.unreported {
            dropped(Dropped::Overflow { sequence });
        }
        self.unreported.clear();
    }

    /// Removes the oldest queued message that may be dropped (not a QoS 2 message with a
    /// packet id, see [`OverflowPolicy::DropOldest`], and not `keep`) durably; `None` if there
    /// is none.
    async fn drop_oldest(&mut self, keep: Option<u32>) -> Res<Option<u32>, P> {
        let mut cursor = KeyCursor::default();
        let mut keys = [Key::sent(0); super::LOOKAHEAD];
        loop {
            let n = self.store.keys(&mut cursor, &mut keys).await?;
            if n == 0 {
                return Ok(None);
            }
            let droppable = keys[..n].iter().find(|k| {
                k.kind() == Kind::Command
                    && keep != Some(k.id())
                    && !self.assigned.iter().any(|&(seq, _)| seq == k.id())
            });
            let Some(&key) = droppable else {
                continue;
            };
            let len = if self.config.max_bytes.is_some() {
                record_len(&mut self.store, key, &mut self.scratch).await?
            } else {
                0
            };
            self.store.remove(key).await?;
            self.unqueue(len);
            // A dropped message that was in flight (QoS 1): its ack will be ignored.
            self.slots
                .retain(|s| s.sequence != key.id() || !matches!(s.stage, Stage::AwaitAck { .. }));
            return Ok(Some(key.id()));
        }
    }
}
