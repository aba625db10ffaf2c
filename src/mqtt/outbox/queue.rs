//! [`Queue`]: the calls a client adapter makes, implemented by [`Outbox`] (every publish on
//! flash) and [`TieredOutbox`] (RAM-first), so one driver serves both.

use core::fmt::Debug;

use super::{Capacity, Dropped, Outbox, OutboxError, Receipt, TierReceipt, TieredOutbox, Transmit};
use crate::mqtt::packet::Publish;
use crate::persistence::Persistence;

type Res<T, E> = Result<T, OutboxError<E>>;

/// What a client adapter drives: publish, hand out the next packet, take acknowledgements,
/// and hear about the link. Each method is the type's inherent method of the same name; the
/// link calls are the ones that differ: [`Outbox`] needs no `on_connected` and never spills.
#[allow(async_fn_in_trait)]
pub trait Queue {
    /// The flash's error.
    type FlashError: Debug;
    /// What a publish returns: [`Receipt`] or [`TierReceipt`].
    type Receipt: Debug + Copy + Send + 'static;

    /// Stores `msg` (see [`Outbox::publish_with`], [`TieredOutbox::publish_with`]).
    async fn publish_with(
        &mut self,
        msg: &Publish<'_>,
        now: u64,
        dropped: impl FnMut(Dropped),
    ) -> Res<Self::Receipt, Self::FlashError>;
    /// The next packet to send (see [`Outbox::next_transmit`]).
    async fn next_transmit<'b>(
        &mut self,
        now: u64,
        buf: &'b mut [u8],
        dropped: impl FnMut(Dropped),
    ) -> Res<Option<Transmit<'b>>, Self::FlashError>;
    /// A PUBACK (see [`Outbox::on_puback`]).
    async fn on_puback(&mut self, packet_id: u16) -> Res<Option<u32>, Self::FlashError>;
    /// A PUBREC (see [`Outbox::on_pubrec`]).
    async fn on_pubrec(&mut self, packet_id: u16) -> Res<Option<u32>, Self::FlashError>;
    /// A PUBCOMP (see [`Outbox::on_pubcomp`]).
    async fn on_pubcomp(&mut self, packet_id: u16) -> Res<Option<u32>, Self::FlashError>;
    /// The connection ended (see [`Outbox::on_connection_lost`]); the tier also spills its
    /// RAM queue ([`TieredOutbox::on_connection_lost`]). Returns how many were spilled.
    async fn on_connection_lost(&mut self, dropped: impl FnMut(Dropped)) -> Res<u32, Self::FlashError>;
    /// A connection is up (CONNACK accepted): the tier may keep publishes in RAM again.
    fn on_connected(&mut self);
    /// Buffered and in-flight figures.
    fn capacity(&self) -> Capacity;
    /// Whether nothing is left to send or acknowledge.
    fn is_idle(&self) -> bool;
    /// Makes deferred removals durable.
    async fn flush(&mut self) -> Res<(), Self::FlashError>;
}

impl<P: Persistence, const W: usize, const BUF: usize> Queue for Outbox<P, W, BUF> {
    type FlashError = P::FlashError;
    type Receipt = Receipt;

    async fn publish_with(
        &mut self,
        msg: &Publish<'_>,
        now: u64,
        dropped: impl FnMut(Dropped),
    ) -> Res<Receipt, P::FlashError> {
        Outbox::publish_with(self, msg, now, dropped).await
    }
    async fn next_transmit<'b>(
        &mut self,
        now: u64,
        buf: &'b mut [u8],
        dropped: impl FnMut(Dropped),
    ) -> Res<Option<Transmit<'b>>, P::FlashError> {
        Outbox::next_transmit(self, now, buf, dropped).await
    }
    async fn on_puback(&mut self, packet_id: u16) -> Res<Option<u32>, P::FlashError> {
        Outbox::on_puback(self, packet_id).await
    }
    async fn on_pubrec(&mut self, packet_id: u16) -> Res<Option<u32>, P::FlashError> {
        Outbox::on_pubrec(self, packet_id).await
    }
    async fn on_pubcomp(&mut self, packet_id: u16) -> Res<Option<u32>, P::FlashError> {
        Outbox::on_pubcomp(self, packet_id).await
    }
    async fn on_connection_lost(&mut self, _dropped: impl FnMut(Dropped)) -> Res<u32, P::FlashError> {
        Outbox::on_connection_lost(self);
        Ok(0)
    }
    fn on_connected(&mut self) {}
    fn capacity(&self) -> Capacity {
        Outbox::capacity(self)
    }
    fn is_idle(&self) -> bool {
        Outbox::is_idle(self)
    }
    async fn flush(&mut self) -> Res<(), P::FlashError> {
        Outbox::flush(self).await
    }
}

impl<P: Persistence, const W: usize, const BUF: usize, const R: usize> Queue for TieredOutbox<P, W, BUF, R> {
    type FlashError = P::FlashError;
    type Receipt = TierReceipt;

    async fn publish_with(
        &mut self,
        msg: &Publish<'_>,
        now: u64,
        dropped: impl FnMut(Dropped),
    ) -> Res<TierReceipt, P::FlashError> {
        TieredOutbox::publish_with(self, msg, now, dropped).await
    }
    async fn next_transmit<'b>(
        &mut self,
        now: u64,
        buf: &'b mut [u8],
        dropped: impl FnMut(Dropped),
    ) -> Res<Option<Transmit<'b>>, P::FlashError> {
        TieredOutbox::next_transmit(self, now, buf, dropped).await
    }
    async fn on_puback(&mut self, packet_id: u16) -> Res<Option<u32>, P::FlashError> {
        TieredOutbox::on_puback(self, packet_id).await
    }
    async fn on_pubrec(&mut self, packet_id: u16) -> Res<Option<u32>, P::FlashError> {
        TieredOutbox::on_pubrec(self, packet_id).await
    }
    async fn on_pubcomp(&mut self, packet_id: u16) -> Res<Option<u32>, P::FlashError> {
        TieredOutbox::on_pubcomp(self, packet_id).await
    }
    async fn on_connection_lost(&mut self, dropped: impl FnMut(Dropped)) -> Res<u32, P::FlashError> {
        TieredOutbox::on_connection_lost(self, dropped).await
    }
    fn on_connected(&mut self) {
        TieredOutbox::on_connected(self)
    }
    fn capacity(&self) -> Capacity {
        TieredOutbox::capacity(self)
    }
    fn is_idle(&self) -> bool {
        TieredOutbox::is_idle(self)
    }
    async fn flush(&mut self) -> Res<(), P::FlashError> {
        TieredOutbox::flush(self).await
    }
}
