//! The adapter for the [rumqttc] 0.25 client (feature `rumqttc`, std and tokio), for Linux
//! gateways.
//!
//! rumqttc numbers publishes itself and, on a resumed session, replays its own in-flight
//! `pending` queue from RAM. Neither fits a persistent outbox, so this adapter does not go
//! through [`AsyncClient::publish`] and does not implement [`super::Client`]: a [`Driver`]
//! owns the [`EventLoop`] and drives the [`Outbox`] directly.
//! With [`RumqttcOutbox::restore_tiered`] it drives a [`TieredOutbox`] (RAM-first) instead:
//! `on_connected` at each CONNACK, `on_connection_lost` (spilling RAM) when a connection ends.
//!
//! - **Packet ids are the outbox's.** Between polls the driver hands each packet the outbox
//!   gives out to rumqttc's own state machine (`EventLoop::state.handle_outgoing_packet`) as a
//!   `Request::Publish` with the outbox's packet id already set (rumqttc keeps a non-zero
//!   id), or as a `Request::PubRel` for a restored QoS 2 flow, and writes the packet to
//!   rumqttc's connection (`EventLoop::network`); rumqttc tracks it as its own. (The obvious
//!   door, `EventLoop::pending`, keeps ids too, but rumqttc sends one pending packet per poll
//!   after a `sleep(pending_throttle)`, which tokio rounds up to its 1 ms tick: that capped
//!   throughput at about 700 messages/s in the e2e test.) The
//!   event loop's events are mapped back by packet id: `Outgoing::Publish(pkid)` (on the wire:
//!   [`Event::Sent`]), `Incoming::PubAck` ([`Outbox::on_puback`]), `Incoming::PubRec`
//!   ([`Outbox::on_pubrec`], the PUBREL state made durable) and `Incoming::PubComp`
//!   ([`Outbox::on_pubcomp`]). rumqttc indexes its in-flight tables by packet id up to its
//!   `inflight` setting, so [`Driver::new`] sets it to `u16::MAX`: every id the outbox can
//!   allocate is valid (rumqttc then preallocates its table of 65,536 in-flight slots of
//!   64 bytes, 4 MiB of RAM; the outbox window `W`, not rumqttc, limits what is in flight).
//! - **One source of replay.** After every connection error rumqttc moves its in-flight
//!   publishes and PUBRELs into `pending` ([`EventLoop::clean`]) to replay them itself on a
//!   resumed session; the driver removes them
//!   again before the next connect and tells the outbox [`Outbox::on_connection_lost`], which
//!   resends from flash, oldest first, with DUP. Acknowledgements rumqttc had already read but
//!   not yet handed out are applied first. Other requests (subscriptions made through the
//!   [`AsyncClient`]) are kept.
//! - **Persistent session.** [`Driver::new`] sets `clean_session(false)` (a client id is then
//!   required: [`Error::Options`]): the broker keeps the QoS 2 state between PUBREC and
//!   PUBCOMP, and recognises a QoS 2 resend by its packet id. [`Event::Connected`] reports
//!   `session_present`; a broker that answers `false` has dropped that state.
//!
//! # Guarantees
//!
//! - **QoS 1: at least once**, across connection losses, reboots and power cuts. A publish
//!   that returned `Ok` is on flash and is removed only after its PUBACK (batched; a power cut
//!   can bring an acknowledged message back, and it is sent again). Order: first
//!   transmissions are in publish order; after a loss the unacknowledged oldest `W` are
//!   resent with DUP, so a duplicate is always one of those.
//! - **QoS 2: exactly once across a reboot between PUBREC and PUBCOMP**, on a broker that
//!   keeps the session (mosquitto does). rumqttc lets us send a lone PUBREL for a restored id
//!   and keeps that id (`Request::PubRel` with a non-zero id goes on the wire unchanged and is
//!   tracked until PUBCOMP), and the packet id a QoS 2 message gets is stored before its first
//!   transmission, so a resend before PUBREC carries the same id and DUP and the broker
//!   discards it. **What is not possible with rumqttc 0.25:** it answers a PUBREC with PUBREL
//!   on its own, inside `EventLoop::poll`, before the PUBREC reaches the driver, and offers no
//!   way to hold that PUBREL back. The outbox stores the PUBREL state right after; a reboot
//!   or power cut in that window (from the PUBREL on the wire to one flash write) restores the
//!   message as unreleased and publishes it again with its old id, which the broker, having
//!   released that id, delivers a second time. Exactly once therefore holds for every cut
//!   except one in that window, where one duplicate is possible; nothing is ever lost. A
//!   broker must keep the session for this: rumqttd 0.20 forgets a QoS 2 message held for
//!   PUBREL when the connection drops and closes the connection on the restored PUBREL, so
//!   against it the driver reconnects (with backoff) without end and the queue behind that
//!   flow does not move; use mosquitto, or QoS 1, there.
//! - **QoS 0** messages are persisted only with `persist_qos0` and then sent at most once.
//! - MQTT 3.1.1 only (rumqttc's v4 client): MQTT 5 properties stored with a message are not
//!   transmitted.
//! - All QoS 1/2 publishes must go through the outbox: a QoS 1/2 publish made directly with
//!   the [`AsyncClient`] would take a packet id from rumqttc's own counter and may collide
//!   with the outbox's. Subscribing and QoS 0 publishes through it are fine; incoming
//!   publishes are reported as [`Event::Message`] (inbound QoS 2 is rumqttc's own, in RAM).
//!
//! # Why not [`super::Client`]
//!
//! That trait fits clients whose `publish` resolves on the final acknowledgement and which
//! pick their own packet ids (mqttrust). For a packet-id client it is the wrong shape: (1) a
//! QoS 2 publish resolves only on PUBCOMP, so [`super::SharedOutbox`] records PUBREC and
//! PUBCOMP together afterwards and the PUBREL state is never durable between them (a reboot
//! there resends the PUBLISH); (2) its futures are not `Send` (no bound on the trait's async
//! fns, and the drain shares a `Cell` between its slots), so the drain cannot be
//! `tokio::spawn`ed; (3) a client that numbers packets itself cannot resume a flow whose id is
//! on flash. A shape that would serve rumqttc, minimq and rust-mqtt alike: the client takes a
//! [`Transmit`] as is (with the outbox's packet id) and reports events (`Sent(pkid)`,
//! `PubAck(pkid)`, `PubRec(pkid)`, `PubComp(pkid)`, `ConnectionLost`), and one shared driver
//! feeds those to [`Outbox::on_puback`] / [`Outbox::on_pubrec`] / [`Outbox::on_pubcomp`] /
//! [`Outbox::on_connection_lost`], as [`Driver`] does here for rumqttc alone.
//!
//! # Runtime
//!
//! The store does blocking flash I/O (a [`crate::file_flash::FileFlash`] writes a file), so
//! every outbox call runs on tokio's blocking pool (`spawn_blocking`), under a
//! `std::sync::Mutex` shared by [`RumqttcOutbox`] handles; the async side never blocks a
//! worker. `Driver::run` is `Send` when the store is, so it can be `tokio::spawn`ed; it needs a
//! runtime with the blocking pool and timers (any tokio runtime built with `enable_time`).
//!
//! The driver wakes a waiting `EventLoop::poll` when a new message is published by dropping
//! that poll, and only while the poll waits for the network with nothing queued (then rumqttc
//! 0.25 is at cancel-safe awaits: reading a frame, the request channel, the keepalive timer).
//! Should rumqttc ever lose a packet that way (it could only while writing an acknowledgement
//! or a PUBREL into a socket that is already full), the acknowledgement timeout
//! ([`Settings::ack_timeout`]) drops the connection and the outbox resends: a duplicate, never
//! a loss. While the driver writes, nothing is read (as in rumqttc's own poll): keep
//! `W x BUF` well below the socket buffers (tens of KiB), or a stuck write ends in rumqttc's
//! flush timeout and a reconnect.
//!
//! # Errors
//!
//! A connection loss (I/O, timeouts, the broker closing, `ServiceUnavailable`) is retried
//! forever, the reconnect delay doubling from [`Settings::backoff_min`] to
//! [`Settings::backoff_max`] until a message is acknowledged again. Any other client error
//! (connection refused for credentials or client id, protocol errors, a packet too large) is
//! retried [`Settings::max_client_errors`] times with the same backoff, then `run` returns
//! [`Error::Client`]. A store failure returns [`Error::Outbox`] at once.
//!
//! ```ignore
//! let outbox: RumqttcOutbox<_, 8, 512> = RumqttcOutbox::restore(store, OutboxConfig::new(10_000)).await?;
//! let (client, mut driver) = Driver::new(outbox.clone(), MqttOptions::new("gw-1", "broker", 1883), 16, Settings::default())?;
//! tokio::spawn(async move { driver.run(now, |event| println!("{event:?}"), false).await });
//! outbox.publish(&Publish::new("plant/temp", b"21.5"), now()).await?;
//! ```

use std::boxed::Box;
use std::collections::HashMap;
use std::fmt::{self, Debug};
use std::marker::PhantomData;
use std::string::{String, ToString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use std::vec::Vec;

use ::rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event as MqttEvent, EventLoop, MqttOptions, Outgoing, Packet,
    PubRel, Request, StateError,
};
use tokio::sync::Notify;

use crate::flash::block_on;
use crate::mqtt::outbox::{
    Capacity, Dropped, Outbox, OutboxConfig, OutboxError, Persist, Queue, TieredOutbox, Transmit,
};
use crate::mqtt::packet::{Publish, QoS};
use crate::persistence::Persistence;

/// Adapter failures.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error<E> {
    /// The outbox or its store failed.
    Outbox(OutboxError<E>),
    /// A client error that is not a connection loss persisted through
    /// [`Settings::max_client_errors`] attempts.
    Client {
        /// The last error.
        error: Box<ConnectionError>,
        /// Consecutive attempts that failed with a client error.
        attempts: u32,
    },
    /// The MQTT options cannot give the guarantees (the reason).
    Options(&'static str),
    /// An outbox call panicked earlier; the outbox's RAM state is not trusted (restore it from
    /// its store).
    Poisoned,
    /// The blocking task running an outbox call panicked or the runtime is shutting down.
    Blocking,
}

impl<E> From<OutboxError<E>> for Error<E> {
    fn from(e: OutboxError<E>) -> Self {
        Error::Outbox(e)
    }
}

impl<E: Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Outbox(e) => write!(f, "outbox: {e}"),
            Error::Client { error, attempts } => write!(f, "rumqttc: {error} ({attempts} attempts)"),
            Error::Options(why) => write!(f, "MQTT options: {why}"),
            Error::Poisoned => f.write_str("an earlier outbox call panicked"),
            Error::Blocking => f.write_str("the blocking outbox task failed"),
        }
    }
}

impl<E: Debug> std::error::Error for Error<E> {}

type Res<T, P> = Result<T, Error<<P as Persistence>::FlashError>>;

struct Shared<Q> {
    outbox: Mutex<Q>,
    /// Wakes the driver's poll after a publish.
    wake: Notify,
    /// Set by a publish, cleared by the driver's next hand-out.
    published: AtomicBool,
}

/// A cloneable handle to an outbox `Q` whose calls run on tokio's blocking pool: the
/// application publishes through it while a [`Driver`] sends. `Q` is an [`Outbox`] (every
/// publish on flash, the default) or a [`TieredOutbox`] (RAM-first, see
/// [`Self::restore_tiered`]); the driver tells a tier the link state.
pub struct RumqttcOutbox<P: Persistence, const W: usize, const BUF: usize, Q = Outbox<P, W, BUF>> {
    shared: Arc<Shared<Q>>,
    _store: PhantomData<fn() -> P>,
}

impl<P: Persistence, const W: usize, const BUF: usize, Q> Clone for RumqttcOutbox<P, W, BUF, Q> {
    fn clone(&self) -> Self {
        RumqttcOutbox {
            shared: self.shared.clone(),
            _store: PhantomData,
        }
    }
}

/// A publish with owned fields, to move into a blocking task.
struct OwnedPublish {
    topic: String,
    payload: Vec<u8>,
    properties: Vec<u8>,
    qos: QoS,
    retain: bool,
}

impl OwnedPublish {
    fn new(p: &Publish<'_>) -> Self {
        OwnedPublish {
            topic: p.topic.to_string(),
            payload: p.payload.to_vec(),
            properties: p.properties.to_vec(),
            qos: p.qos,
            retain: p.retain,
        }
    }

    fn borrow(&self) -> Publish<'_> {
        let mut p = Publish::new(&self.topic, &self.payload);
        p.qos = self.qos;
        p.retain = self.retain;
        p.properties = &self.properties;
        p
    }
}

impl<P, const W: usize, const BUF: usize> RumqttcOutbox<P, W, BUF>
where
    P: Persistence + Send + 'static,
    P::FlashError: Send + 'static,
{
    /// Restores the outbox from `store` (see [`Outbox::restore`]) on the blocking pool.
    pub async fn restore(store: P, config: OutboxConfig) -> Res<Self, P> {
        let outbox = tokio::task::spawn_blocking(move || block_on(Outbox::restore(store, config)))
            .await
            .map_err(|_| Error::Blocking)??;
        Ok(Self::new(outbox))
    }
}

impl<P, const W: usize, const BUF: usize, const R: usize> RumqttcOutbox<P, W, BUF, TieredOutbox<P, W, BUF, R>>
where
    P: Persistence + Send + 'static,
    P::FlashError: Send + 'static,
{
    /// Restores a [`TieredOutbox`] with a RAM queue of `R` from `store` (see
    /// [`TieredOutbox::restore`]) on the blocking pool. The link counts as down (publishes go
    /// to flash) until the driver's first CONNACK.
    pub async fn restore_tiered(store: P, config: OutboxConfig, persist: Persist) -> Res<Self, P> {
        let tier = tokio::task::spawn_blocking(move || block_on(TieredOutbox::restore(store, config, persist)))
            .await
            .map_err(|_| Error::Blocking)??;
        Ok(Self::new(tier))
    }

    /// Writes everything in RAM to flash and makes deferred removals durable (see
    /// [`TieredOutbox::spill_all`]): before a planned reboot. Returns how many were spilled.
    pub async fn spill_all(&self) -> Res<u32, P> {
        Ok(self.with(|tier| block_on(tier.spill_all(|_| {}))).await??)
    }
}

impl<P, const W: usize, const BUF: usize, Q> RumqttcOutbox<P, W, BUF, Q>
where
    P: Persistence + Send + 'static,
    P::FlashError: Send + 'static,
    Q: Queue<FlashError = P::FlashError> + Send + 'static,
{
    /// Wraps an outbox.
    pub fn new(outbox: Q) -> Self {
        RumqttcOutbox {
            shared: Arc::new(Shared {
                outbox: Mutex::new(outbox),
                wake: Notify::new(),
                published: AtomicBool::new(false),
            }),
            _store: PhantomData,
        }
    }

    /// Runs `f` on the outbox, on the blocking pool. Cancelling the returned future does not
    /// cancel `f`.
    pub async fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut Q) -> R + Send + 'static) -> Res<R, P> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut outbox = shared.outbox.lock().map_err(|_| Error::Poisoned)?;
            Ok(f(&mut outbox))
        })
        .await
        .map_err(|_| Error::Blocking)?
    }

    /// Persists `msg` and returns once it is durable (see [`Outbox::publish`]); the driver
    /// sends it when connected. Cancellation: the publish still completes (or fails) on the
    /// blocking pool.
    pub async fn publish(&self, msg: &Publish<'_>, now: u64) -> Res<Q::Receipt, P> {
        self.publish_with(msg, now, |_| {}).await
    }

    /// [`publish`](Self::publish), calling `dropped` for each message the overflow policy
    /// dropped to admit this one (see [`Outbox::publish_with`]), once the publish returned.
    pub async fn publish_with(
        &self,
        msg: &Publish<'_>,
        now: u64,
        mut dropped: impl FnMut(Dropped),
    ) -> Res<Q::Receipt, P> {
        let owned = OwnedPublish::new(msg);
        let (receipt, drops) = self
            .with(move |outbox| {
                let mut drops = Vec::new();
                block_on(outbox.publish_with(&owned.borrow(), now, |d| drops.push(d))).map(|r| (r, drops))
            })
            .await??;
        drops.into_iter().for_each(&mut dropped);
        self.shared.published.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        Ok(receipt)
    }

    /// Messages buffered, in flight, and the limit.
    pub async fn capacity(&self) -> Res<Capacity, P> {
        self.with(|outbox| outbox.capacity()).await
    }

    /// Whether nothing is left to send or to acknowledge.
    pub async fn is_idle(&self) -> Res<bool, P> {
        self.with(|outbox| outbox.is_idle()).await
    }

    /// Makes deferred removals (PUBACKs) durable.
    pub async fn flush(&self) -> Res<(), P> {
        Ok(self.with(|outbox| block_on(outbox.flush())).await??)
    }

    /// The outbox, if this is the last handle (drop the [`Driver`] first, and let blocking
    /// calls of cancelled futures finish). A poisoned outbox is returned too: its flash is as
    /// after a power cut; restore a new outbox from its store.
    pub fn try_into_inner(self) -> Result<Q, Self> {
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => Ok(shared.outbox.into_inner().unwrap_or_else(PoisonError::into_inner)),
            Err(shared) => Err(RumqttcOutbox {
                shared,
                _store: PhantomData,
            }),
        }
    }
}

/// Retry and timeout settings of a [`Driver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A publish or PUBREL unacknowledged this long on an open connection: the connection is
    /// dropped and everything unacknowledged is resent.
    pub ack_timeout: Duration,
    /// Consecutive client errors that are not connection losses before `run` gives up.
    pub max_client_errors: u32,
    /// First retry delay; doubles with each failure in a row.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl Default for Settings {
    /// 30 s acknowledgement timeout, 5 client errors, backoff 100 ms to 10 s.
    fn default() -> Self {
        Settings {
            ack_timeout: Duration::from_secs(30),
            max_client_errors: 5,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

impl Settings {
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.backoff_min.saturating_mul(factor).min(self.backoff_max)
    }
}

/// What the driver reports.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Connected (CONNACK accepted).
    Connected {
        /// Whether the broker kept the session (and so its QoS 2 state).
        session_present: bool,
    },
    /// rumqttc wrote this publish to the connection.
    Sent {
        /// Outbox sequence number.
        sequence: u32,
        /// Packet id (the outbox's).
        packet_id: u16,
        /// Sent with DUP: it may have been sent before.
        dup: bool,
    },
    /// PUBREC: the QoS 2 message is with the broker, its PUBREL state on flash.
    Received {
        /// Outbox sequence number.
        sequence: u32,
    },
    /// PUBACK or PUBCOMP: the message is done and removed.
    Delivered {
        /// Outbox sequence number.
        sequence: u32,
    },
    /// The outbox dropped a message (expired).
    Dropped(Dropped),
    /// The connection ended; everything unacknowledged is sent again on the next one.
    ConnectionLost,
    /// Nothing acknowledged this message within [`Settings::ack_timeout`]; the connection is
    /// dropped.
    AckTimeout {
        /// Outbox sequence number (`None` for a restored PUBREL).
        sequence: Option<u32>,
    },
    /// A client error that is not a connection loss; retried after a backoff.
    ClientError {
        /// Consecutive client errors so far.
        attempt: u32,
        /// The error.
        error: String,
    },
    /// An incoming publish (for the application's subscriptions).
    Message(::rumqttc::Publish),
}

/// Counters since the driver was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// CONNACKs received.
    pub connects: u32,
    /// Connections lost (and failed connection attempts).
    pub connection_losses: u32,
    /// Client errors that are not connection losses.
    pub client_errors: u32,
    /// Connections dropped by the acknowledgement timeout.
    pub ack_timeouts: u32,
    /// Publishes written to the connection.
    pub sent: u32,
    /// Of those, sent with DUP.
    pub resent: u32,
    /// Messages acknowledged (PUBACK, PUBCOMP).
    pub delivered: u32,
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    sequence: Option<u32>,
    dup: bool,
    since: Instant,
}

enum Item {
    Publish {
        request: Request,
        sequence: u32,
        packet_id: u16,
        dup: bool,
    },
    PubRel {
        packet_id: u16,
    },
}

/// Drives a rumqttc [`EventLoop`] for a [`RumqttcOutbox`] (see the module docs).
pub struct Driver<P: Persistence, const W: usize, const BUF: usize, Q = Outbox<P, W, BUF>> {
    outbox: RumqttcOutbox<P, W, BUF, Q>,
    eventloop: EventLoop,
    /// Keeps the request channel open, so the event loop never ends with `RequestsDone`.
    _client: AsyncClient,
    settings: Settings,
    connected: bool,
    /// Packets handed to rumqttc on this connection and not yet acknowledged, by packet id.
    flights: HashMap<u16, Flight>,
    /// The last fill found the queue empty with room in the window: a publish must wake the
    /// poll.
    starved: bool,
    client_errors: u32,
    losses: u32,
    /// Set while a step that changes the outbox or rumqttc's queue is under way: a run
    /// cancelled then left them out of step.
    unsynced: bool,
    stats: Stats,
}

fn is_connection_loss(e: &ConnectionError) -> bool {
    match e {
        ConnectionError::Io(_) | ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => true,
        ConnectionError::ConnectionRefused(code) => *code == ConnectReturnCode::ServiceUnavailable,
        ConnectionError::MqttState(s) => matches!(
            s,
            StateError::Io(_)
                | StateError::ConnectionAborted
                | StateError::AwaitPingResp
                | StateError::Deserialization(::rumqttc::Error::Io(_))
        ),
        _ => false,
    }
}

fn to_request(p: &Publish<'_>) -> Request {
    let qos = match p.qos {
        QoS::AtMostOnce => ::rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => ::rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => ::rumqttc::QoS::ExactlyOnce,
    };
    let mut out = ::rumqttc::Publish::new(p.topic, qos, p.payload);
    out.pkid = p.packet_id;
    out.dup = p.dup;
    out.retain = p.retain;
    Request::Publish(out)
}

impl<P, const W: usize, const BUF: usize, Q> Driver<P, W, BUF, Q>
where
    P: Persistence + Send + 'static,
    P::FlashError: Send + 'static,
    Q: Queue<FlashError = P::FlashError> + Send + 'static,
{
    /// Makes the rumqttc client and event loop for `outbox` from `options` (with
    /// `clean_session(false)` and `inflight(u16::MAX)` set, and TCP_NODELAY on; `cap`: the
    /// request channel's capacity; other network options through [`Self::eventloop_mut`]). The returned client is for subscriptions and QoS 0; QoS 1/2 publishes go
    /// through the outbox.
    pub fn new(
        outbox: RumqttcOutbox<P, W, BUF, Q>,
        mut options: MqttOptions,
        cap: usize,
        settings: Settings,
    ) -> Res<(AsyncClient, Self), P> {
        if options.client_id().is_empty() {
            return Err(Error::Options("a persistent session needs a client id"));
        }
        options.set_clean_session(false);
        options.set_inflight(u16::MAX);
        let (client, mut eventloop) = AsyncClient::new(options, cap);
        // The outbox pipelines small packets `W` at a time: with Nagle's algorithm on, each
        // waits for the peer's delayed ACK (rumqttc's default is off = Nagle on).
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let driver = Driver {
            outbox,
            eventloop,
            _client: client.clone(),
            settings,
            connected: false,
            flights: HashMap::new(),
            starved: false,
            client_errors: 0,
            losses: 0,
            unsynced: false,
            stats: Stats::default(),
        };
        Ok((client, driver))
    }

    /// The event loop (for its network options).
    pub fn eventloop_mut(&mut self) -> &mut EventLoop {
        &mut self.eventloop
    }

    /// The outbox handle.
    pub fn outbox(&self) -> &RumqttcOutbox<P, W, BUF, Q> {
        &self.outbox
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Connects, reconnects and sends queued messages, oldest first, `W` in flight. Runs until
    /// a typed error, or with `until_idle` until nothing is left to send or acknowledge (then
    /// it flushes). `now` gives the time for the TTL; `events` hears what happens.
    ///
    /// Cancellation: what was in flight is sent again by the next call (the connection is
    /// dropped and the outbox told).
    pub async fn run(
        &mut self,
        now: impl Fn() -> u64 + Send,
        mut events: impl FnMut(Event) + Send,
        until_idle: bool,
    ) -> Res<(), P> {
        if self.unsynced || !self.flights.is_empty() {
            // A cancelled run: what it handed to rumqttc is not to be trusted.
            self.unsynced = true;
            self.drop_connection(&mut events).await?;
            self.unsynced = false;
        }
        let shared = self.outbox.shared.clone();
        loop {
            self.unsynced = true;
            if self.connected {
                self.fill(&now, &mut events).await?;
            }
            self.unsynced = false;
            if until_idle && self.flights.is_empty() && self.outbox.is_idle().await? {
                return self.outbox.flush().await;
            }
            let wakeable = self.connected && self.starved && self.eventloop.pending.is_empty();
            let polled = if wakeable {
                tokio::select! {
                    biased;
                    r = self.eventloop.poll() => Some(r),
                    () = shared.wake.notified() => None,
                }
            } else {
                Some(self.eventloop.poll().await)
            };
            self.unsynced = true;
            match polled {
                None => {}
                Some(Ok(event)) => self.on_event(event, &mut events).await?,
                Some(Err(e)) => self.on_error(e, &mut events).await?,
            }
            self.check_ack_timeout(&mut events).await?;
            self.unsynced = false;
        }
    }

    /// Hands the outbox's next packets to rumqttc, up to the window.
    async fn fill(&mut self, now: &impl Fn() -> u64, events: &mut impl FnMut(Event)) -> Res<(), P> {
        let room = W.saturating_sub(self.flights.len());
        if room == 0 {
            self.starved = false;
            return Ok(());
        }
        // With the queue found empty last time, only a publish can bring something new.
        let published = self.outbox.shared.published.swap(false, Ordering::AcqRel);
        if self.starved && !published {
            return Ok(());
        }
        let t = now();
        let (items, dropped, starved, result) = self
            .outbox
            .with(move |outbox| {
                let mut items = Vec::new();
                let mut dropped = Vec::new();
                let mut buf = std::vec![0u8; BUF];
                let mut starved = false;
                let mut result = Ok(());
                for _ in 0..room {
                    match block_on(outbox.next_transmit(t, &mut buf, |d| dropped.push(d))) {
                        Ok(None) => {
                            starved = outbox.capacity().in_flight < W;
                            break;
                        }
                        Ok(Some(Transmit::Publish(p))) => items.push(Item::Publish {
                            request: to_request(&p),
                            sequence: p.sequence,
                            packet_id: p.packet_id,
                            dup: p.dup,
                        }),
                        Ok(Some(Transmit::PubRel { packet_id })) => items.push(Item::PubRel { packet_id }),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                (items, dropped, starved, result)
            })
            .await?;
        for d in dropped {
            events(Event::Dropped(d));
        }
        let since = Instant::now();
        let mut requests = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Item::Publish {
                    request,
                    sequence,
                    packet_id,
                    dup,
                } => {
                    if packet_id != 0 {
                        let flight = Flight {
                            sequence: Some(sequence),
                            dup,
                            since,
                        };
                        self.flights.insert(packet_id, flight);
                    }
                    requests.push(request);
                }
                Item::PubRel { packet_id } => {
                    let flight = Flight {
                        sequence: None,
                        dup: false,
                        since,
                    };
                    self.flights.insert(packet_id, flight);
                    requests.push(Request::PubRel(PubRel::new(packet_id)));
                }
            }
        }
        self.starved = starved;
        if let Err(e) = self.write(requests).await {
            self.eventloop.clean();
            self.on_error(e, events).await?;
        }
        result.map_err(Error::Outbox)
    }

    /// Puts `requests` on the connection through rumqttc's own state machine (which keeps
    /// their packet ids, tracks them and reports them as `Outgoing` events on the next poll),
    /// between polls. Not through `EventLoop::pending`: rumqttc sends one pending packet per
    /// poll after a `sleep(pending_throttle)`, which tokio rounds up to its 1 ms timer tick.
    async fn write(&mut self, requests: Vec<Request>) -> Result<(), ConnectionError> {
        if requests.is_empty() {
            return Ok(());
        }
        let timeout = Duration::from_secs(self.eventloop.network_options().connection_timeout());
        let Some(network) = self.eventloop.network.as_mut() else {
            return Err(ConnectionError::MqttState(StateError::ConnectionAborted));
        };
        for request in requests {
            if let Some(packet) = self.eventloop.state.handle_outgoing_packet(request)? {
                network.write(packet).await?;
            }
        }
        match tokio::time::timeout(timeout, network.flush()).await {
            Ok(flushed) => Ok(flushed?),
            Err(_) => Err(ConnectionError::FlushTimeout),
        }
    }

    fn progress(&mut self) {
        self.client_errors = 0;
        self.losses = 0;
    }

    async fn on_event(&mut self, event: MqttEvent, events: &mut impl FnMut(Event)) -> Res<(), P> {
        match event {
            MqttEvent::Incoming(Packet::ConnAck(connack)) => {
                self.connected = true;
                self.stats.connects += 1;
                self.outbox.with(Q::on_connected).await?;
                events(Event::Connected {
                    session_present: connack.session_present,
                });
            }
            MqttEvent::Incoming(Packet::PubAck(ack)) => {
                let pid = ack.pkid;
                self.flights.remove(&pid);
                if let Some(sequence) = self.outbox.with(move |o| block_on(o.on_puback(pid))).await?? {
                    self.stats.delivered += 1;
                    self.progress();
                    events(Event::Delivered { sequence });
                }
            }
            MqttEvent::Incoming(Packet::PubRec(rec)) => {
                let pid = rec.pkid;
                // rumqttc has already answered with PUBREL (see the module docs).
                if let Some(sequence) = self.outbox.with(move |o| block_on(o.on_pubrec(pid))).await?? {
                    if let Some(flight) = self.flights.get_mut(&pid) {
                        flight.since = Instant::now();
                    }
                    self.progress();
                    events(Event::Received { sequence });
                }
            }
            MqttEvent::Incoming(Packet::PubComp(comp)) => {
                let pid = comp.pkid;
                self.flights.remove(&pid);
                if let Some(sequence) = self.outbox.with(move |o| block_on(o.on_pubcomp(pid))).await?? {
                    self.stats.delivered += 1;
                    self.progress();
                    events(Event::Delivered { sequence });
                }
            }
            MqttEvent::Incoming(Packet::Publish(publish)) => events(Event::Message(publish)),
            MqttEvent::Outgoing(Outgoing::Publish(pid)) if pid != 0 => {
                if let Some(flight) = self.flights.get(&pid) {
                    self.stats.sent += 1;
                    self.stats.resent += flight.dup as u32;
                    if let Some(sequence) = flight.sequence {
                        events(Event::Sent {
                            sequence,
                            packet_id: pid,
                            dup: flight.dup,
                        });
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// After a connection error (rumqttc already moved its in-flight state to `pending`):
    /// applies acknowledgements it had read, removes its replay, and tells the outbox.
    async fn forget_connection(&mut self, events: &mut impl FnMut(Event)) -> Res<(), P> {
        let was_connected = self.connected;
        self.connected = false;
        let buffered: Vec<MqttEvent> = self.eventloop.state.events.drain(..).collect();
        for event in buffered {
            self.on_event(event, events).await?;
        }
        self.connected = false;
        self.eventloop.pending.retain(|request| match request {
            Request::Publish(p) => p.qos == ::rumqttc::QoS::AtMostOnce,
            Request::PubRel(_) => false,
            _ => true,
        });
        self.flights.clear();
        self.starved = false;
        let dropped = self
            .outbox
            .with(|o| {
                let mut dropped = Vec::new();
                block_on(o.on_connection_lost(|d| dropped.push(d))).map(|_| dropped)
            })
            .await??;
        dropped.into_iter().for_each(|d| events(Event::Dropped(d)));
        if was_connected {
            events(Event::ConnectionLost);
        }
        Ok(())
    }

    async fn drop_connection(&mut self, events: &mut impl FnMut(Event)) -> Res<(), P> {
        self.eventloop.clean();
        self.forget_connection(events).await
    }

    async fn on_error(&mut self, error: ConnectionError, events: &mut impl FnMut(Event)) -> Res<(), P> {
        self.forget_connection(events).await?;
        if is_connection_loss(&error) {
            self.losses = self.losses.saturating_add(1);
            self.stats.connection_losses += 1;
            tokio::time::sleep(self.settings.backoff(self.losses)).await;
            return Ok(());
        }
        self.client_errors = self.client_errors.saturating_add(1);
        self.stats.client_errors += 1;
        events(Event::ClientError {
            attempt: self.client_errors,
            error: error.to_string(),
        });
        if self.client_errors >= self.settings.max_client_errors {
            return Err(Error::Client {
                error: Box::new(error),
                attempts: self.client_errors,
            });
        }
        tokio::time::sleep(self.settings.backoff(self.client_errors)).await;
        Ok(())
    }

    async fn check_ack_timeout(&mut self, events: &mut impl FnMut(Event)) -> Res<(), P> {
        if !self.connected {
            return Ok(());
        }
        let timeout = self.settings.ack_timeout;
        let Some(late) = self.flights.values().find(|f| f.since.elapsed() >= timeout).copied() else {
            return Ok(());
        };
        self.stats.ack_timeouts += 1;
        events(Event::AckTimeout {
            sequence: late.sequence,
        });
        self.drop_connection(events).await
    }
}

#[cfg(test)]
mod tests;
