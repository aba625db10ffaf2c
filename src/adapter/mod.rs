//! Client adapters: the small [`Client`] trait an MQTT client implements for the outbox, and
//! [`SharedOutbox`], which persists publishes and drains them through any such client.
//!
//! The trait is shaped after clients whose `publish` resolves when the broker acknowledged
//! (mqttrust, rust-mqtt): the outbox keeps `W` of those futures running at once, started in
//! publish order, and treats any publish that overlapped a connection change as unconfirmed,
//! so it is sent again (a duplicate, never a loss). Clients that report acknowledgements by
//! packet id (rumqttc) or by an operation handle (minimq 0.13, `Op`) can drive
//! [`crate::mqtt::Outbox`] directly with its `on_puback` / `on_pubrec` / `on_pubcomp` methods
//! (as `rumqttc::Driver` and `minimq::Driver` do), or implement [`Client`] in a few lines by
//! waiting for the matching event.

use core::cell::Cell;
use core::fmt::Debug;
use core::future::poll_fn;
use core::pin::{Pin, pin};
use core::task::Poll;

use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::mutex::Mutex;
use embassy_sync::signal::Signal;

use crate::mqtt::outbox::{Dropped, Outbox, OutboxConfig, OutboxError, Persist, Queue, TieredOutbox, Transmit};
use crate::mqtt::packet::{Publish, QoS, Record};
use crate::persistence::Persistence;

#[cfg(any(feature = "minimq", feature = "rust-mqtt"))]
mod driver;
#[cfg(feature = "minimq")]
#[cfg_attr(docsrs, doc(cfg(feature = "minimq")))]
pub mod minimq;
#[cfg(feature = "mqttrust")]
#[cfg_attr(docsrs, doc(cfg(feature = "mqttrust")))]
pub mod mqttrust;
#[cfg(feature = "rumqttc")]
#[cfg_attr(docsrs, doc(cfg(feature = "rumqttc")))]
pub mod rumqttc;
#[cfg(feature = "rust-mqtt")]
#[cfg_attr(docsrs, doc(cfg(feature = "rust-mqtt")))]
pub mod rust_mqtt;

/// How a [`Client::publish`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Ack {
    /// The broker acknowledged it (PUBACK, or PUBCOMP for QoS 2) on one unbroken connection;
    /// for QoS 0: it was written to the connection.
    Confirmed,
    /// The client returned, but the connection changed meanwhile: the acknowledgement cannot
    /// be trusted and the message must be sent again.
    Unconfirmed,
}

/// Hands out transmission turns so publishes reach the client's transmit queue in publish
/// order even when `W` of them are in flight.
#[derive(Debug)]
pub struct Turn<'a> {
    served: &'a Cell<u32>,
    mine: u32,
}

impl Turn<'_> {
    /// The client calls this once the packet has its place in the transmit queue (encoded,
    /// committed), before it waits for the acknowledgement. Calling it again does nothing.
    pub fn queued(&self) {
        if self.served.get() == self.mine {
            self.served.set(self.mine.wrapping_add(1));
        }
    }
}

/// What the outbox needs from an MQTT client.
#[allow(async_fn_in_trait)]
pub trait Client {
    /// The client's error.
    type Error: Debug;

    /// Whether a connection to the broker is up now.
    fn is_connected(&self) -> bool;

    /// Publishes `publish` (topic, payload, QoS, retain, DUP and properties as given; a client
    /// that picks its own packet ids ignores `packet_id`) and resolves when the broker
    /// acknowledged it. Calls `turn.queued()` once the packet is in the transmit queue.
    ///
    /// Must return [`Ack::Unconfirmed`] (or an error) if a connection loss may have
    /// happened while it was in flight.
    async fn publish(&self, publish: &Publish<'_>, turn: &Turn<'_>) -> Result<Ack, Self::Error>;

    /// Sends a PUBREL for an outgoing QoS 2 flow restored from flash and resolves on PUBCOMP.
    /// A client that cannot send a lone PUBREL returns `Ok(Ack::Confirmed)`: the flow is then
    /// forgotten (the broker already has the message; it may deliver it once more).
    async fn pubrel(&self, packet_id: u16) -> Result<Ack, Self::Error>;
}

/// What the drain loop reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// The message with this sequence number is acknowledged and removed.
    Delivered {
        /// Sequence number.
        sequence: u32,
    },
    /// A message was dropped: expired, or by the overflow policy to make room for a QoS 2
    /// state record on a full store.
    Dropped(Dropped),
    /// A publish overlapped a connection change; the unacknowledged tail is sent again.
    Resending,
}

/// An outbox `Q` shared between the application (which publishes) and the drain loop (which
/// sends), behind an async mutex of kind `M`. `Q` is an [`Outbox`] (every publish on flash,
/// the default) or a [`TieredOutbox`] (RAM-first, [`Self::restore_tiered`]): the drivers tell
/// it the link state through [`Queue::on_connected`] and [`Queue::on_connection_lost`].
///
/// The application publishes through a shared reference while [`Self::drain`] sends through
/// any [`Client`] (the adapters implement it for mqttrust, rust-mqtt, minimq and rumqttc; here
/// a stand-in that records what it was given and acknowledges it):
///
/// ```
/// use core::cell::RefCell;
/// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
/// use mqtt_persist::adapter::{Ack, Client, Event, SharedOutbox, Turn};
/// use mqtt_persist::flash::{SimFlash, block_on};
/// use mqtt_persist::mqtt::{OutboxConfig, OutboxError, Publish};
/// use mqtt_persist::{Config, Store};
///
/// struct Recorder(RefCell<Vec<Vec<u8>>>);
/// impl Client for Recorder {
///     type Error = ();
///     fn is_connected(&self) -> bool {
///         true
///     }
///     async fn publish(&self, p: &Publish<'_>, turn: &Turn<'_>) -> Result<Ack, ()> {
///         self.0.borrow_mut().push(p.payload.to_vec());
///         turn.queued(); // in the client's transmit queue
///         Ok(Ack::Confirmed) // PUBACK
///     }
///     async fn pubrel(&self, _packet_id: u16) -> Result<Ack, ()> {
///         Ok(Ack::Confirmed)
///     }
/// }
///
/// let mut flash = SimFlash::<1024, 8, 4, 4>::boxed();
/// block_on(async {
///     let mut store: Store<_, 8> = Store::mount(&mut *flash, Config::new(128)).await.map_err(|(_, e)| e)?;
///     store.open("sensor-17", "tcp://broker.local:1883").await?;
///     let shared = SharedOutbox::<NoopRawMutex, _, 4, 128>::restore(store, OutboxConfig::new(100)).await?;
///     for reading in [b"21.5", b"21.7"] {
///         shared.publish(&Publish::new("plant/temp", reading), 0).await?;
///     }
///     let client = Recorder(RefCell::new(Vec::new()));
///     let mut delivered = Vec::new();
///     let events = |e| {
///         if let Event::Delivered { sequence } = e {
///             delivered.push(sequence)
///         }
///     };
///     shared.drain(&client, || 0, events, true).await?; // until nothing is left
///     assert_eq!(client.0.into_inner(), [b"21.5", b"21.7"]);
///     assert_eq!(delivered.len(), 2);
///     Ok::<(), OutboxError<_>>(())
/// })?;
/// # Ok::<(), OutboxError<mqtt_persist::flash::SimFlashError>>(())
/// ```
pub struct SharedOutbox<M: RawMutex, P: Persistence, const W: usize, const BUF: usize, Q = Outbox<P, W, BUF>> {
    outbox: Mutex<M, Q>,
    wake: Signal<M, ()>,
    _store: core::marker::PhantomData<fn() -> P>,
}

type Res<T, P> = Result<T, OutboxError<<P as Persistence>::FlashError>>;

impl<M: RawMutex, P: Persistence, const W: usize, const BUF: usize> SharedOutbox<M, P, W, BUF> {
    /// Restores the outbox from `store` (see [`Outbox::restore`]).
    pub async fn restore(store: P, config: OutboxConfig) -> Res<Self, P> {
        Ok(Self::new(Outbox::restore(store, config).await?))
    }
}

impl<M: RawMutex, P: Persistence, const W: usize, const BUF: usize, const R: usize>
    SharedOutbox<M, P, W, BUF, TieredOutbox<P, W, BUF, R>>
{
    /// Restores a [`TieredOutbox`] with a RAM queue of `R` (see [`TieredOutbox::restore`]);
    /// publishes go to flash until a driver sees the link up.
    pub async fn restore_tiered(store: P, config: OutboxConfig, persist: Persist) -> Res<Self, P> {
        Ok(Self::new(TieredOutbox::restore(store, config, persist).await?))
    }
}

impl<M: RawMutex, P: Persistence, const W: usize, const BUF: usize, Q: Queue<FlashError = P::FlashError>>
    SharedOutbox<M, P, W, BUF, Q>
{
    /// Wraps an outbox.
    pub fn new(outbox: Q) -> Self {
        SharedOutbox {
            outbox: Mutex::new(outbox),
            wake: Signal::new(),
            _store: core::marker::PhantomData,
        }
    }

    /// Waits until a message was published since the last wait (returns at once if one was).
    /// For drivers that own their client's event loop instead of using [`Self::drain`].
    pub async fn published(&self) {
        self.wake.wait().await
    }

    /// Unwraps the outbox.
    pub fn into_inner(self) -> Q {
        self.outbox.into_inner()
    }

    /// The outbox, locked.
    pub async fn lock(&self) -> embassy_sync::mutex::MutexGuard<'_, M, Q> {
        self.outbox.lock().await
    }

    /// Persists `msg` and returns once it is durable (see [`Outbox::publish`]); the drain loop
    /// sends it when connected. Cancellation: as [`Outbox::publish`].
    pub async fn publish(&self, msg: &Publish<'_>, now: u64) -> Res<Q::Receipt, P> {
        self.publish_with(msg, now, |_| {}).await
    }

    /// [`Self::publish`], reporting every message the overflow policy drops (see
    /// [`Outbox::publish_with`]).
    pub async fn publish_with(&self, msg: &Publish<'_>, now: u64, dropped: impl FnMut(Dropped)) -> Res<Q::Receipt, P> {
        let receipt = self.outbox.lock().await.publish_with(msg, now, dropped).await?;
        self.wake.signal(());
        Ok(receipt)
    }

    /// Sends queued messages through `client`, oldest first, `W` at a time, whenever it is
    /// connected (the client's publish waits for the connection). Runs forever, or with
    /// `until_idle` until nothing is left to send or acknowledge. `now` gives the time for the
    /// TTL; `events` hears deliveries, drops and resends.
    ///
    /// A [`TieredOutbox`] is told the link is up when the client says it is connected before
    /// a publish is handed out, and that it is down (spilling RAM) on every unconfirmed
    /// publish; a loss while nothing is in flight is only seen by the next publish, and until
    /// then `spill_after_ms` bounds how long a message stays in RAM.
    ///
    /// Cancellation: in-flight publishes are abandoned and sent again by the next call (the
    /// outbox is told the connection was lost).
    pub async fn drain<C: Client>(
        &self,
        client: &C,
        now: impl Fn() -> u64,
        mut events: impl FnMut(Event),
        until_idle: bool,
    ) -> Res<(), P> {
        {
            // What a cancelled call left in flight is sent again; a tier whose link is up
            // keeps its RAM queue unless the client is down.
            let mut outbox = self.outbox.lock().await;
            if outbox.capacity().in_flight > 0 || !client.is_connected() {
                outbox.on_connection_lost(|d| events(Event::Dropped(d))).await?;
            }
        }
        let mut up = false;
        let served = Cell::new(0u32);
        let mut issued = 0u32;
        let mut active = 0usize;
        let mut lost = false;
        let mut buf = [0u8; BUF];
        let mut slots = pin!([const { None }; W]);
        loop {
            // Fill free slots in publish order.
            while !lost && active < W {
                let mut outbox = self.outbox.lock().await;
                if !up && client.is_connected() {
                    outbox.on_connected();
                    up = true;
                }
                let next = outbox
                    .next_transmit(now(), &mut buf, |d| events(Event::Dropped(d)))
                    .await?;
                let (record, meta) = match next {
                    None => break,
                    Some(Transmit::Publish(p)) => (Record::Publish(p), (p.packet_id, p.qos, true)),
                    Some(Transmit::PubRel { packet_id }) => (
                        Record::PubRel { packet_id, sequence: 0 },
                        (packet_id, QoS::ExactlyOnce, false),
                    ),
                };
                drop(outbox);
                let mut data = [0u8; BUF];
                let len = record.encode(&mut data).map_err(OutboxError::Encode)?.len();
                let Some(free) = slot_index(slots.as_mut(), |s| s.is_none()) else {
                    break;
                };
                let ticket = issued;
                issued = issued.wrapping_add(1);
                let fut = transmit(client, data, len, &served, ticket, meta);
                set_slot(slots.as_mut(), free, Some(fut));
                active += 1;
            }
            if active == 0 {
                let mut outbox = self.outbox.lock().await;
                if lost {
                    outbox.on_connection_lost(|d| events(Event::Dropped(d))).await?;
                    lost = false;
                    up = false;
                    continue;
                }
                if until_idle && outbox.is_idle() {
                    outbox.flush().await?;
                    return Ok(());
                }
                drop(outbox);
                self.wake.wait().await;
                continue;
            }
            let (i, (packet_id, qos, is_publish, result)) = poll_fn(|cx| {
                // Poll until no turn advances, so the next in line starts in the same pass.
                for _ in 0..=W {
                    let before = served.get();
                    for i in 0..W {
                        let Some(slot) = project(slots.as_mut(), i).as_pin_mut() else {
                            continue;
                        };
                        if let Poll::Ready(out) = slot.poll(cx) {
                            set_slot(slots.as_mut(), i, None);
                            return Poll::Ready((i, out));
                        }
                    }
                    if served.get() == before {
                        break;
                    }
                }
                Poll::Pending
            })
            .await;
            let _ = i;
            active -= 1;
            match result {
                Ok(Ack::Confirmed) => {
                    let mut outbox = self.outbox.lock().await;
                    let sequence = match (qos, is_publish) {
                        (QoS::AtMostOnce, _) => None,
                        (QoS::AtLeastOnce, _) => outbox.on_puback(packet_id).await?,
                        (QoS::ExactlyOnce, true) => {
                            let s = outbox.on_pubrec(packet_id).await?;
                            outbox.on_pubcomp(packet_id).await?;
                            s
                        }
                        (QoS::ExactlyOnce, false) => outbox.on_pubcomp(packet_id).await?,
                    };
                    if let Some(sequence) = sequence {
                        events(Event::Delivered { sequence });
                    }
                }
                Ok(Ack::Unconfirmed) | Err(_) => {
                    if !lost {
                        events(Event::Resending);
                    }
                    lost = true;
                }
            }
        }
    }
}

fn project<F>(slots: Pin<&mut [Option<F>]>, i: usize) -> Pin<&mut Option<F>> {
    // Safety: the element is never moved out of the pinned array; it is only dropped in place
    // or overwritten through `Pin::set`.
    unsafe { slots.map_unchecked_mut(|s| &mut s[i]) }
}

fn set_slot<F, const W: usize>(slots: Pin<&mut [Option<F>; W]>, i: usize, value: Option<F>) {
    let slice: Pin<&mut [Option<F>]> = slots;
    project(slice, i).set(value);
}

fn slot_index<F, const W: usize>(slots: Pin<&mut [Option<F>; W]>, want: impl Fn(&Option<F>) -> bool) -> Option<usize> {
    slots.iter().position(want)
}

/// One slot: wait for the turn, send, await the acknowledgement.
async fn transmit<C: Client, const BUF: usize>(
    client: &C,
    data: [u8; BUF],
    len: usize,
    served: &Cell<u32>,
    ticket: u32,
    meta: (u16, QoS, bool),
) -> (u16, QoS, bool, Result<Ack, C::Error>) {
    let (packet_id, qos, is_publish) = meta;
    poll_fn(|_| {
        if served.get() == ticket {
            Poll::Ready(())
        } else {
            // The driver polls every slot again whenever a turn advances.
            Poll::Pending
        }
    })
    .await;
    let turn = Turn { served, mine: ticket };
    let result = match Record::decode(&data[..len]) {
        Ok(Record::Publish(p)) => client.publish(&p, &turn).await,
        _ => {
            turn.queued();
            client.pubrel(packet_id).await
        }
    };
    // A client that failed before queueing still passes the turn on.
    if served.get() == ticket {
        served.set(ticket.wrapping_add(1));
    }
    (packet_id, qos, is_publish, result)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use core::cell::RefCell;
    use std::vec::Vec;

    use embassy_sync::blocking_mutex::raw::NoopRawMutex;

    use super::*;
    use crate::flash::{SimFlash, block_on};
    use crate::{Config, Store};

    type Sim = SimFlash<4096, 16, 4, 4>;

    /// A client that acknowledges after being polled `delay` times, and reports the publishes
    /// listed in `unconfirmed` (by call number) as overlapping a connection change.
    struct Mock {
        delay: usize,
        unconfirmed: Vec<usize>,
        calls: Cell<usize>,
        /// (payload number, dup) in the order the packets were queued.
        queued: RefCell<Vec<(u32, bool)>>,
        /// Most publishes in flight at once.
        max_in_flight: Cell<usize>,
        in_flight: Cell<usize>,
    }

    impl Mock {
        fn new(delay: usize, unconfirmed: Vec<usize>) -> Self {
            Mock {
                delay,
                unconfirmed,
                calls: Cell::new(0),
                queued: RefCell::new(Vec::new()),
                max_in_flight: Cell::new(0),
                in_flight: Cell::new(0),
            }
        }
    }

    async fn yield_now() {
        let mut once = false;
        poll_fn(|cx| {
            if once {
                Poll::Ready(())
            } else {
                once = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await
    }

    impl Client for Mock {
        type Error = ();
        fn is_connected(&self) -> bool {
            true
        }
        async fn publish(&self, publish: &Publish<'_>, turn: &Turn<'_>) -> Result<Ack, ()> {
            let call = self.calls.get();
            self.calls.set(call + 1);
            let n = core::str::from_utf8(publish.payload).unwrap().parse().unwrap();
            self.queued.borrow_mut().push((n, publish.dup));
            turn.queued();
            self.in_flight.set(self.in_flight.get() + 1);
            self.max_in_flight
                .set(self.max_in_flight.get().max(self.in_flight.get()));
            for _ in 0..self.delay + (call % 3) {
                yield_now().await;
            }
            self.in_flight.set(self.in_flight.get() - 1);
            Ok(if self.unconfirmed.contains(&call) {
                Ack::Unconfirmed
            } else {
                Ack::Confirmed
            })
        }
        async fn pubrel(&self, _packet_id: u16) -> Result<Ack, ()> {
            Ok(Ack::Confirmed)
        }
    }

    fn run<const W: usize>(client: &Mock, n: u32) -> Vec<Event> {
        let mut flash = Sim::boxed();
        let mut store: Store<&mut Sim, 16> = block_on(Store::mount(&mut *flash, Config::new(256)))
            .map_err(|e| e.1)
            .unwrap();
        block_on(store.open("d", "u")).unwrap();
        let shared: SharedOutbox<NoopRawMutex, _, W, 128> =
            block_on(SharedOutbox::restore(store, OutboxConfig::new(1000))).unwrap();
        for i in 0..n {
            let text = std::format!("{i}");
            block_on(shared.publish(&Publish::new("t", text.as_bytes()), 0)).unwrap();
        }
        let mut events = Vec::new();
        block_on(shared.drain(client, || 0, |e| events.push(e), true)).unwrap();
        assert!(block_on(shared.lock()).is_idle());
        events
    }

    #[test]
    fn window_keeps_w_in_flight_and_queues_in_order() {
        let client = Mock::new(2, Vec::new());
        let events = run::<8>(&client, 100);
        assert_eq!(client.max_in_flight.get(), 8);
        let queued = client.queued.borrow();
        assert_eq!(
            queued.iter().map(|q| q.0).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        assert!(queued.iter().all(|q| !q.1), "nothing is a retransmission");
        let delivered = events.iter().filter(|e| matches!(e, Event::Delivered { .. })).count();
        assert_eq!(delivered, 100);
    }

    #[test]
    fn qos2_and_expired_messages_through_the_drain() {
        let mut flash = Sim::boxed();
        let mut store: Store<&mut Sim, 16> = block_on(Store::mount(&mut *flash, Config::new(256)))
            .map_err(|e| e.1)
            .unwrap();
        block_on(store.open("d", "u")).unwrap();
        let mut config = OutboxConfig::new(100);
        config.ttl = Some(10);
        let shared: SharedOutbox<NoopRawMutex, _, 4, 128> = block_on(SharedOutbox::restore(store, config)).unwrap();
        for (i, t) in [(0u32, 0u64), (1, 50), (2, 0), (3, 50)] {
            let text = std::format!("{i}");
            let mut p = Publish::new("t", text.as_bytes());
            p.qos = QoS::ExactlyOnce;
            block_on(shared.publish(&p, t)).unwrap();
        }
        let client = Mock::new(1, Vec::new());
        let mut events = Vec::new();
        block_on(shared.drain(&client, || 20, |e| events.push(e), true)).unwrap();
        assert_eq!(client.queued.borrow().iter().map(|q| q.0).collect::<Vec<_>>(), [1, 3]);
        assert!(events.contains(&Event::Dropped(Dropped::Expired { sequence: 0 })));
        assert!(events.contains(&Event::Dropped(Dropped::Expired { sequence: 2 })));
        let mut outbox = shared.into_inner();
        assert!(outbox.is_idle());
        // Nothing is left on flash: no publish, no packet id assignment, no PUBREL state.
        let mut store = block_on(outbox.flush())
            .map(|()| outbox.into_store_unflushed())
            .unwrap();
        let mut keys = [crate::Key::sent(0); 8];
        assert_eq!(
            block_on(store.keys(&mut crate::KeyCursor::default(), &mut keys)).unwrap(),
            0
        );
    }

    #[test]
    fn a_tiered_outbox_drains_from_ram_and_spills_on_an_unconfirmed_publish() {
        use crate::mqtt::{Persist, TierReceipt};
        let mut flash = Sim::boxed();
        let mut store: Store<&mut Sim, 16> = block_on(Store::mount(&mut *flash, Config::new(256)))
            .map_err(|e| e.1)
            .unwrap();
        block_on(store.open("d", "u")).unwrap();
        let persist = Persist::RamFirst { spill_after_ms: 1000 };
        type St<'a> = Store<&'a mut Sim, 16>;
        type Shared<'a> = SharedOutbox<NoopRawMutex, St<'a>, 4, 128, crate::mqtt::TieredOutbox<St<'a>, 4, 128, 32>>;
        let shared: Shared<'_> =
            block_on(SharedOutbox::restore_tiered(store, OutboxConfig::new(1000), persist)).unwrap();
        let written = |s: &Shared<'_>| block_on(s.lock()).outbox().store().flash().stats().write_bytes;
        let publish = |s: &Shared<'_>, range: core::ops::Range<u32>| {
            for i in range {
                let text = std::format!("{i}");
                let receipt = block_on(s.publish(&Publish::new("t", text.as_bytes()), 0)).unwrap();
                assert!(matches!(receipt, TierReceipt::Ram { .. }), "{receipt:?}");
            }
        };
        // A drain with a connected client marks the link up.
        let client = Mock::new(1, Vec::new());
        block_on(shared.drain(&client, || 0, |_| {}, true)).unwrap();
        assert!(block_on(shared.lock()).is_link_up());
        let before = written(&shared);
        publish(&shared, 0..20);
        block_on(shared.drain(&client, || 0, |_| {}, true)).unwrap();
        assert_eq!(written(&shared), before, "acknowledged from RAM: nothing written");
        // Call 3 of the next drain is unconfirmed: the RAM queue is spilled and resent from
        // flash, in order.
        publish(&shared, 20..40);
        let client = Mock::new(1, std::vec![3]);
        let mut events = Vec::new();
        block_on(shared.drain(&client, || 0, |e| events.push(e), true)).unwrap();
        assert!(events.contains(&Event::Resending));
        assert!(written(&shared) > before, "the loss spilled RAM to flash");
        let mut first = Vec::new();
        for &(n, _) in client.queued.borrow().iter() {
            if !first.contains(&n) {
                first.push(n);
            }
        }
        assert_eq!(first, (20..40).collect::<Vec<_>>());
        let delivered = events.iter().filter(|e| matches!(e, Event::Delivered { .. })).count();
        assert_eq!(delivered, 20);
        assert!(block_on(shared.lock()).is_idle());
    }

    #[test]
    fn window_one_is_strictly_sequential() {
        let client = Mock::new(1, Vec::new());
        run::<1>(&client, 20);
        assert_eq!(client.max_in_flight.get(), 1);
    }

    #[test]
    fn unconfirmed_publishes_are_resent_with_dup_and_nothing_is_lost() {
        // Calls 10 and 11 overlap a connection change (the mqttrust defect: Ok without ack).
        let client = Mock::new(2, std::vec![10, 11]);
        let events = run::<4>(&client, 40);
        assert!(events.contains(&Event::Resending));
        let queued = client.queued.borrow();
        let mut first = Vec::new();
        for &(n, _) in queued.iter() {
            if !first.contains(&n) {
                first.push(n);
            }
        }
        assert_eq!(first, (0..40).collect::<Vec<_>>(), "first occurrences in publish order");
        let resent: Vec<u32> = queued.iter().filter(|q| q.1).map(|q| q.0).collect();
        assert!(resent.contains(&10) && resent.contains(&11), "{resent:?}");
        // Every publish that was confirmed once is never sent again.
        let delivered: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                Event::Delivered { sequence } => Some(*sequence),
                _ => None,
            })
            .collect();
        let mut sorted = delivered.clone();
        sorted.sort();
        assert_eq!(sorted, (0..40).collect::<Vec<_>>(), "each delivered exactly once");
    }
}
