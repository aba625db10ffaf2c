//! The adapter for the [minimq](https://docs.rs/minimq/0.13) 0.13 client (feature `minimq`,
//! `no_std`, MQTT 5 only).
//!
//! minimq 0.13 is an async session client over an `embedded-io-async` byte stream: a
//! `minimq::Session` owns the packet buffers and the in-flight state, `Session::connect`
//! returns a `Connection`, `Connection::publish` admits a QoS 1/2 publish into the session's
//! TX buffer and returns an `Op` handle, and `Connection::poll` processes PUBACK / PUBREC /
//! PUBCOMP (it answers PUBREC with PUBREL itself) and keep-alive. Packet ids are minimq's and
//! not exposed; completion of a given publish is `Connection::is_complete(&op)`. On a resumed
//! session (`session_present`) minimq replays its retained packets by itself.
//!
//! So this adapter does not implement [`super::Client`]: a [`Driver`] owns the connection loop
//! and drives a [`SharedOutbox`]'s [`crate::mqtt::Outbox`] directly, keeping (op, outbox packet
//! id, sequence) for each flight and mapping completed ops back to outbox sequence numbers.
//!
//! - **One source of replay.** Every connection is made with a *fresh* `minimq::Session`.
//!   minimq sends `clean_start = false` on every `connect` after the first of a session (it
//!   resumes whenever the session was once connected), and would then replay its own copies
//!   next to the outbox's; a new `Session` starts with `clean_start = true` and session expiry
//!   0, so neither minimq nor the broker carries in-flight state over a reconnect. After each
//!   loss the outbox resends its oldest unacknowledged `W` from flash, with DUP in the
//!   outbox's sense (minimq's `publish` always sends DUP 0). minimq's replay never runs.
//! - **Window.** At most `W` publishes are in flight, and fewer when minimq says it cannot
//!   take one more (`Connection::can_publish`: the broker's receive maximum, minimq's 8
//!   retained-packet slots, room in the TX buffer). The outbox's next message is only taken
//!   once minimq can admit it, so nothing is taken from the outbox and then held back.
//! - **Completion.** After every `poll` the driver asks minimq, for each flight in publish
//!   order, whether its op completed (QoS 1: PUBACK; QoS 2: PUBCOMP) and acknowledges exactly
//!   those in the outbox. Ops of an earlier connection are never asked about: the flight table
//!   is emptied with the connection.
//!
//! # Guarantees
//!
//! - **QoS 1: at least once**, across connection losses, reboots and power cuts: a publish
//!   that returned `Ok` is on flash until its PUBACK (removal deferred, so a power cut can
//!   resend an acknowledged message). First transmissions are in publish order; a duplicate
//!   is always one of the `W` resent after a loss.
//! - **QoS 2: exactly once without a reboot or reconnect; at least once across one.** On one
//!   connection minimq answers PUBREC with PUBREL and the op completes at PUBCOMP, when the
//!   driver removes the message. Exactly once across a reboot between PUBREC and PUBCOMP is
//!   not possible with minimq 0.13, because its PUBREL state cannot be restored:
//!   - the "PUBREL due" state lives only in the `Session`'s TX arena, which has no
//!     serialisation or restore API, and a PUBREL is only sent for a flow that arena holds
//!     (one created by a PUBREC for a PUBLISH that same `Session` issued); there is no way to
//!     send a lone PUBREL for a packet id read from flash, and packet ids are minimq's
//!     (`Op` has no public constructor and no accessor);
//!   - keeping one `Session` across reconnects of one boot would let minimq re-release by
//!     itself, but it would also replay its retained QoS 1/2 PUBLISHes while the outbox
//!     replays the same messages (double replay), and it does not survive a reboot anyway.
//!
//!   The driver therefore never stores the PUBREL state: the PUBREC and PUBCOMP steps are
//!   recorded together when the op completes, and a flow cut before that is published again,
//!   as a new message, on a clean session. If the broker had not received the PUBREL, the
//!   clean start discards its unreleased copy (mosquitto releases QoS 2 messages on PUBREL)
//!   and the message is delivered once; if the PUBREL reached it and only the PUBCOMP was
//!   lost, that message, and only it, is delivered twice. Nothing is lost.
//!   tests/e2e_minimq.rs (e1) to (e3) show the three cases against mosquitto.
//! - **QoS 0** messages are persisted only with `persist_qos0` and sent at most once.
//! - A PUBACK or PUBCOMP with an error reason code completes the op in minimq (it surfaces
//!   as `PeerError::Rejected` from `poll`); the driver removes the message and reports
//!   [`Event::Rejected`]; retrying it would be a new message. minimq handles every buffered
//!   packet in one `poll` and returns only the error, so when one read holds successful
//!   acknowledgements next to the refusal, the messages completed in that `poll` are all
//!   reported as rejected (all are removed either way; the label, not the delivery, is
//!   approximate). A refusal does not end the connection.
//!   tests/e2e_minimq.rs (f): mosquitto refusing by ACL (PUBACK 0x87).
//! - minimq's keep-alive (default 60 s, [`Settings::keepalive_s`]) runs inside `poll`, which
//!   the driver keeps polling while it waits for acknowledgements or new publishes. minimq
//!   uses `embassy-time`, so the firmware needs an `embassy-time` driver.
//! - While fewer than `W` are in flight the driver waits for `poll` or a new publish, whichever
//!   comes first, and drops the `poll` future when a publish comes: minimq's `poll` is
//!   cancel-safe only if the transport's `read` and `write` futures are (a tokio
//!   `TcpStream`'s are; check your stack's).
//! - A message must fit minimq's TX buffer (with the CONNECT workspace); one that does not
//!   fails every connection with a client error until [`Settings::max_client_errors`].
//!
//! # Tests
//!
//! tests/e2e_minimq.rs, against mosquitto through a fault-injecting proxy: (a) offline +
//! reboot, (b) connection resets, (c) both overflow policies, (d) a power cut mid-burst,
//! (e1)-(e3) QoS 2 without and with a reboot between PUBREC and PUBCOMP, (f) publishes the
//! broker refuses.

use core::future::{Future, poll_fn};
use core::net::SocketAddr;
use core::pin::pin;
use core::task::Poll;

use embassy_sync::blocking_mutex::raw::RawMutex;
use embedded_nal_async::TcpConnect;
use heapless::Vec;
use minimq::{
    Buffers, ConfigBuilder, Connection, Error as MqttError, Io, Op, PeerError, PubError, Publication, Session,
};

use super::SharedOutbox;
use crate::mqtt::outbox::{OutboxError, Transmit};
use crate::mqtt::packet::QoS;
use crate::persistence::Persistence;

pub use super::driver::Error;

/// Driver settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Consecutive connections ending in a client error (not a connection loss) before `run`
    /// returns [`Error::Client`].
    pub max_client_errors: u32,
    /// The keep-alive interval sent in CONNECT, in seconds (0: off).
    pub keepalive_s: u16,
}

impl Default for Settings {
    /// 5 client errors, 60 s keep-alive.
    fn default() -> Self {
        Settings {
            max_client_errors: 5,
            keepalive_s: 60,
        }
    }
}

pub use super::driver::{Event, Stats};

#[derive(Debug, Clone, Copy)]
struct Flight {
    op: Op,
    packet_id: u16,
    sequence: u32,
    qos: QoS,
}

enum Failure<E> {
    Outbox(OutboxError<E>),
    /// The transport failed or the broker disconnected.
    Lost,
    /// minimq failed the connection for another reason.
    Client(&'static str),
}

impl<E> From<OutboxError<E>> for Failure<E> {
    fn from(e: OutboxError<E>) -> Self {
        Failure::Outbox(e)
    }
}

fn classify<F, E>(e: &MqttError<E>) -> Failure<F> {
    Failure::Client(match e {
        MqttError::Transport(_) | MqttError::Disconnected | MqttError::WriteZero => return Failure::Lost,
        MqttError::NotReady => "not ready: TX buffer or in-flight slots exhausted",
        MqttError::InvalidRequest => "invalid request (QoS above the server's maximum?)",
        MqttError::Peer(PeerError::Rejected(_)) => "the broker rejected the operation",
        MqttError::Peer(_) => "the broker sent an invalid packet",
        MqttError::Resource(_) => "buffer too small or packet too large",
        _ => "client error",
    })
}

/// Drives a minimq client for a [`SharedOutbox`] (see the module docs).
pub struct Driver<'n, N: TcpConnect> {
    network: &'n N,
    broker: SocketAddr,
    client_id: &'n str,
    rx: &'n mut [u8],
    tx: &'n mut [u8],
    settings: Settings,
    stats: Stats,
}

type Res<T, P> = Result<T, Error<<P as Persistence>::FlashError>>;

enum Either<A, B> {
    First(A),
    Second(B),
}

async fn select<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::First(x));
        }
        if let Poll::Ready(x) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Second(x));
        }
        Poll::Pending
    })
    .await
}

impl<'n, N: TcpConnect> Driver<'n, N> {
    /// A driver connecting to `broker` through `network` as `client_id`, with minimq's
    /// receive buffer `rx` (the largest inbound packet: CONNACK, acknowledgements) and transmit
    /// buffer `tx` (CONNECT workspace plus up to 8 retained publishes; see minimq's
    /// `Buffers`).
    pub fn new(
        network: &'n N,
        broker: SocketAddr,
        client_id: &'n str,
        rx: &'n mut [u8],
        tx: &'n mut [u8],
        settings: Settings,
    ) -> Self {
        Driver {
            network,
            broker,
            client_id,
            rx,
            tx,
            settings,
            stats: Stats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Connects, reconnects and sends queued messages, oldest first, `W` in flight. Runs until
    /// a typed error, or with `until_idle` until nothing is left to send or acknowledge (then
    /// it disconnects and flushes). `backoff(n)` is awaited after the `n`-th failure in a row;
    /// `now` gives the time for the TTL.
    ///
    /// Cancellation: what was in flight is sent again by the next call.
    pub async fn run<M: RawMutex, P: Persistence, const W: usize, const BUF: usize, F: Future<Output = ()>>(
        &mut self,
        outbox: &SharedOutbox<M, P, W, BUF>,
        now: impl Fn() -> u64,
        mut events: impl FnMut(Event),
        until_idle: bool,
        mut backoff: impl FnMut(u32) -> F,
    ) -> Res<(), P> {
        let mut losses = 0u32;
        let mut client_errors = 0u32;
        loop {
            {
                let mut o = outbox.lock().await;
                o.on_connection_lost();
                if until_idle && o.is_idle() {
                    o.flush().await?;
                    return Ok(());
                }
            }
            let Ok(connection) = self.network.connect(self.broker).await else {
                losses = losses.saturating_add(1);
                self.stats.connection_losses += 1;
                events(Event::ConnectionLost);
                backoff(losses).await;
                continue;
            };
            // A fresh session every time: clean start, no minimq replay (see the module docs).
            let config = ConfigBuilder::new(Buffers::new(&mut *self.rx, &mut *self.tx))
                .client_id(self.client_id)
                .map_err(|_| Error::ClientId)?
                .keepalive_interval(self.settings.keepalive_s);
            let mut session = Session::new(config);
            let mut delivered = 0u32;
            let outcome = match session.connect(connection).await {
                Ok(mut conn) => {
                    self.stats.connects += 1;
                    events(Event::Connected);
                    serve(
                        &mut conn,
                        &mut self.stats,
                        outbox,
                        &now,
                        &mut events,
                        until_idle,
                        &mut delivered,
                    )
                    .await
                }
                Err(e) => Err(classify(&e)),
            };
            if delivered > 0 {
                losses = 0;
                client_errors = 0;
            }
            match outcome {
                Ok(()) => {
                    outbox.lock().await.flush().await?;
                    return Ok(());
                }
                Err(Failure::Outbox(e)) => return Err(Error::Outbox(e)),
                Err(Failure::Lost) => {
                    losses = losses.saturating_add(1);
                    self.stats.connection_losses += 1;
                    events(Event::ConnectionLost);
                    backoff(losses).await;
                }
                Err(Failure::Client(reason)) => {
                    client_errors = client_errors.saturating_add(1);
                    events(Event::ClientError {
                        attempt: client_errors,
                        reason,
                    });
                    if client_errors >= self.settings.max_client_errors {
                        return Err(Error::Client {
                            reason,
                            attempts: client_errors,
                        });
                    }
                    backoff(client_errors).await;
                }
            }
        }
    }
}

/// One connection: returns `Ok` once idle (with `until_idle`), or why it ended.
async fn serve<IO: Io, M: RawMutex, P: Persistence, const W: usize, const BUF: usize>(
    conn: &mut Connection<'_, '_, IO>,
    stats: &mut Stats,
    outbox: &SharedOutbox<M, P, W, BUF>,
    now: &impl Fn() -> u64,
    events: &mut impl FnMut(Event),
    until_idle: bool,
    delivered: &mut u32,
) -> Result<(), Failure<P::FlashError>> {
    let mut flights: Vec<Flight, W> = Vec::new();
    let mut buf = [0u8; BUF];
    // minimq admits QoS 1 and 2 alike (send quota, retained slot, TX room).
    let room = |conn: &Connection<'_, '_, IO>, flights: &Vec<Flight, W>| {
        !flights.is_full() && conn.can_publish(minimq::QoS::ExactlyOnce)
    };
    loop {
        while room(conn, &flights) {
            let mut o = outbox.lock().await;
            let next = o.next_transmit(now(), &mut buf, |d| events(Event::Dropped(d))).await?;
            let p = match next {
                None => break,
                Some(Transmit::PubRel { packet_id }) => {
                    // Never written by this driver (see the module docs).
                    o.on_pubcomp(packet_id).await?;
                    events(Event::PubRelForgotten { packet_id });
                    continue;
                }
                Some(Transmit::Publish(p)) => p,
            };
            drop(o);
            let qos = match p.qos {
                QoS::AtMostOnce => minimq::QoS::AtMostOnce,
                QoS::AtLeastOnce => minimq::QoS::AtLeastOnce,
                QoS::ExactlyOnce => minimq::QoS::ExactlyOnce,
            };
            let mut publication = Publication::bytes(p.topic, p.payload).qos(qos);
            if p.retain {
                publication = publication.retain();
            }
            let op = conn.publish(publication).await.map_err(|e| match e {
                PubError::Session(e) => classify(&e),
                PubError::Payload(()) => Failure::Client("payload larger than minimq's TX buffer"),
            })?;
            stats.sent += 1;
            stats.resent += u32::from(p.dup);
            events(Event::Sent {
                sequence: p.sequence,
                dup: p.dup,
            });
            if let Some(op) = op {
                let flight = Flight {
                    op,
                    packet_id: p.packet_id,
                    sequence: p.sequence,
                    qos: p.qos,
                };
                flights.push(flight).map_err(|_| Failure::Client("window overflow"))?;
            }
        }
        if flights.is_empty() {
            let idle = outbox.lock().await.is_idle();
            if until_idle && idle {
                let _ = conn.disconnect().await;
                return Ok(());
            }
            if !idle && room(conn, &flights) {
                // Held back by nothing but the window: fill again.
                continue;
            }
        }
        let polled = if room(conn, &flights) {
            match select(conn.poll(), outbox.published()).await {
                Either::First(r) => r.map(|_| ()),
                Either::Second(()) => continue,
            }
        } else {
            conn.poll().await.map(|_| ())
        };
        let rejected = match &polled {
            Ok(()) => None,
            Err(MqttError::Peer(PeerError::Rejected(code))) => Some(u8::from(code)),
            Err(e) => return Err(classify(e)),
        };
        // Acknowledge every flight minimq completed, in publish order.
        let mut i = 0;
        while i < flights.len() {
            if !conn.is_complete(&flights[i].op) {
                i += 1;
                continue;
            }
            let f = flights.remove(i);
            let mut o = outbox.lock().await;
            let sequence = match f.qos {
                QoS::ExactlyOnce => {
                    o.on_pubrec(f.packet_id).await?;
                    o.on_pubcomp(f.packet_id).await?
                }
                _ => o.on_puback(f.packet_id).await?,
            };
            drop(o);
            debug_assert!(sequence.is_none_or(|s| s == f.sequence), "op mapped to its flight");
            if let Some(sequence) = sequence {
                *delivered += 1;
                match rejected {
                    None => {
                        stats.delivered += 1;
                        events(Event::Delivered { sequence });
                    }
                    Some(reason) => events(Event::Rejected { sequence, reason }),
                }
            }
        }
        if !conn.is_connected() {
            return Err(Failure::Lost);
        }
    }
}
