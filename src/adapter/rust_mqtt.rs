//! The adapter for the [rust-mqtt] 0.6 client (feature `rust-mqtt`, `no_std`, MQTT 5 only).
//!
//! rust-mqtt 0.6 is a set of protocol primitives: `Client::publish` returns the packet id the
//! client chose, `Client::poll` reports PUBACK / PUBREC / PUBCOMP by packet id, and the client
//! never resends anything by itself (`republish` / `rerelease` are left to the caller). So this
//! adapter does not implement [`super::Client`]: a [`Driver`] owns the connection loop and
//! drives a [`SharedOutbox`]'s [`crate::mqtt::Outbox`] directly, mapping rust-mqtt's packet
//! ids back to outbox sequence numbers in a `W`-entry table.
//!
//! - **One source of replay.** Every connection is made with a fresh rust-mqtt `Client`
//!   and `clean_start`, so neither rust-mqtt nor the broker carries in-flight state over a
//!   reconnect; after each loss the outbox resends its oldest unacknowledged `W` from flash,
//!   with DUP in the outbox's sense (rust-mqtt's `publish` always sends DUP 0).
//! - **Packet ids are rust-mqtt's.** rust-mqtt 0.6 has no public constructor for
//!   `PacketIdentifier` and a `Session` can only hold ids the client itself issued, so the
//!   outbox's packet ids cannot be put on the wire; the driver keeps (rust-mqtt id, outbox id,
//!   sequence) for each flight.
//!
//! # Guarantees
//!
//! - **QoS 1: at least once**, across connection losses, reboots and power cuts: a publish
//!   that returned `Ok` is on flash until its PUBACK (removal deferred, so a power cut can
//!   resend an acknowledged message). First transmissions are in publish order; a duplicate
//!   is always one of the `W` resent after a loss.
//! - **QoS 2: exactly once without a reboot or reconnect; at least once across one.** On one
//!   connection rust-mqtt answers PUBREC with PUBREL itself and the driver removes the message
//!   at PUBCOMP. Exactly once across a reboot (or a reconnect) between PUBREC and PUBCOMP is
//!   not possible with rust-mqtt 0.6, because the PUBREL cannot be sent again:
//!   - `PacketIdentifier::new` is `pub(crate)`; a `PacketIdentifier` only comes from
//!     `Client::publish` or from a received packet, so the id stored on flash cannot be turned
//!     into one;
//!   - even with the id, PUBREL is only sent by `Client::rerelease` / `Client::manual_release`
//!     for a flow the client's in-RAM `Session` holds in its "PUBREL due" state, which only a
//!     PUBREC for a PUBLISH that same session issued creates; `Client::new` always starts an
//!     empty session and nothing restores one (`Client::republish` likewise needs an id the
//!     session tracks).
//!
//!   The driver therefore never stores the PUBREL state: the PUBREC and PUBCOMP steps are
//!   recorded together when PUBCOMP arrives, and a flow cut before that is published again,
//!   as a new message, on a clean session. If the broker had not received the PUBREL, the
//!   clean start discards its unreleased copy (mosquitto releases QoS 2 messages on PUBREL)
//!   and the message is delivered once; if the PUBREL had reached it and only the PUBCOMP was
//!   lost, that message, and only it, is delivered twice. Nothing is lost. tests/e2e_rust_mqtt.rs
//!   (e1) to (e3) show the three cases against mosquitto.
//! - **QoS 0** messages are persisted only with `persist_qos0` and sent at most once.
//! - A PUBACK or PUBCOMP with an error reason code (MQTT 5 rejection) removes the message and
//!   is reported as [`Event::Rejected`]; retrying it would be a new message.
//! - Keep-alive is off (`KeepAlive::Infinite`): rust-mqtt sends no PINGREQ by itself, and a
//!   dead link is noticed when the transport reports an error.
//! - Received packets with variable-size fields (reason strings, user properties, incoming
//!   publishes) need a buffer; the driver gives rust-mqtt [`NoBuffer`], so such a packet ends
//!   the connection with a client error. mosquitto sends none on success.
//!
//! # Tests
//!
//! tests/e2e_rust_mqtt.rs, against mosquitto through a fault-injecting proxy: (a) offline +
//! reboot, (b) connection resets, (c) both overflow policies, (d) a power cut mid-burst,
//! (e1)-(e3) QoS 2 without and with a reboot between PUBREC and PUBCOMP.

use core::future::{Future, poll_fn};
use core::net::SocketAddr;
use core::pin::pin;
use core::task::Poll;

use embassy_sync::blocking_mutex::raw::RawMutex;
use embedded_nal_async::TcpConnect;
use heapless::Vec;
use rust_mqtt::Bytes;
use rust_mqtt::buffer::BufferProvider;
use rust_mqtt::client::event::Event as MqttEvent;
use rust_mqtt::client::options::{ConnectOptions, PublicationOptions, TopicReference};
use rust_mqtt::client::{Client as MqttClient, MqttError};
use rust_mqtt::types::{MqttString, PacketIdentifier, QoS as MqttQoS, TopicName};

use super::SharedOutbox;
use crate::mqtt::outbox::{OutboxError, Queue, Transmit};
use crate::mqtt::packet::QoS;
use crate::persistence::Persistence;

/// A rust-mqtt buffer provider that provides nothing: packets with variable-size fields
/// fail to decode (the connection is then dropped and retried).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoBuffer;

/// The error of [`NoBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NoBufferSpace;

impl<'a> BufferProvider<'a> for NoBuffer {
    type Buffer = &'a mut [u8];
    type ProvisionError = NoBufferSpace;

    fn provide_buffer(&mut self, len: usize) -> Result<&'a mut [u8], NoBufferSpace> {
        if len == 0 { Ok(&mut []) } else { Err(NoBufferSpace) }
    }
}

pub use super::driver::Error;

/// Driver settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Consecutive connections ending in a client error (not a connection loss) before `run`
    /// returns [`Error::Client`].
    pub max_client_errors: u32,
}

impl Default for Settings {
    /// 5 client errors.
    fn default() -> Self {
        Settings { max_client_errors: 5 }
    }
}

pub use super::driver::{Event, Stats};

#[derive(Debug, Clone, Copy)]
struct Flight {
    wire: PacketIdentifier,
    packet_id: u16,
    sequence: u32,
    qos: QoS,
}

enum Failure<E> {
    Outbox(OutboxError<E>),
    /// The transport failed (rust-mqtt has failed the connection).
    Lost,
    /// rust-mqtt failed the connection for another reason.
    Client(&'static str),
    /// An error that leaves the connection healthy (a recoverable rust-mqtt error, or one of the
    /// driver's own checks): the connection is closed, not aborted.
    Local(&'static str),
}

impl<E> From<OutboxError<E>> for Failure<E> {
    fn from(e: OutboxError<E>) -> Self {
        Failure::Outbox(e)
    }
}

fn classify<E, const N: usize>(e: &MqttError<'_, N>) -> Failure<E> {
    let reason = match e {
        MqttError::Network(_) | MqttError::RecoveryRequired => return Failure::Lost,
        MqttError::Server => "server: malformed packet or protocol error",
        MqttError::Alloc => "a received packet needs a buffer (NoBuffer)",
        MqttError::Disconnect { .. } => "the server refused or disconnected",
        MqttError::ServerMaximumPacketSizeExceeded | MqttError::PacketMaximumLengthExceeded => "packet too large",
        MqttError::UnsupportedByServer => "unsupported by the server (QoS or retain)",
        MqttError::SendQuotaExceeded => "server receive maximum exceeded",
        _ => "client error",
    };
    if e.is_recoverable() {
        Failure::Local(reason)
    } else {
        Failure::Client(reason)
    }
}

/// Drives a rust-mqtt client for a [`SharedOutbox`] (see the module docs).
pub struct Driver<'n, N: TcpConnect> {
    network: &'n N,
    broker: SocketAddr,
    client_id: &'n str,
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
    /// A driver connecting to `broker` through `network` as `client_id`.
    pub fn new(network: &'n N, broker: SocketAddr, client_id: &'n str, settings: Settings) -> Self {
        Driver {
            network,
            broker,
            client_id,
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
    /// it flushes). `backoff(n)` is awaited after the `n`-th failure in a row (the driver has no
    /// clock of its own); `now` gives the time for the TTL.
    ///
    /// Cancellation: what was in flight is sent again by the next call.
    pub async fn run<M, P, const W: usize, const BUF: usize, Q, F>(
        &mut self,
        outbox: &SharedOutbox<M, P, W, BUF, Q>,
        now: impl Fn() -> u64,
        mut events: impl FnMut(Event),
        until_idle: bool,
        mut backoff: impl FnMut(u32) -> F,
    ) -> Res<(), P>
    where
        M: RawMutex,
        P: Persistence,
        Q: Queue<FlashError = P::FlashError>,
        F: Future<Output = ()>,
    {
        let mut losses = 0u32;
        let mut client_errors = 0u32;
        let id = MqttString::from_str(self.client_id).map_err(|_| Error::ClientId)?;
        loop {
            {
                let mut o = outbox.lock().await;
                o.on_connection_lost(|d| events(Event::Dropped(d))).await?;
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
            let mut provider = NoBuffer;
            let mut client: MqttClient<'_, '_, _, NoBuffer, 0, 1, W, 0, 0, 0, 0> = MqttClient::new(&mut provider);
            let options = ConnectOptions::new().clean_start();
            let mut delivered = 0u32;
            let outcome = match client.connect(connection, &options, Some(id.as_borrowed())).await {
                Ok(_) => {
                    self.stats.connects += 1;
                    outbox.lock().await.on_connected();
                    events(Event::Connected);
                    self.serve(&mut client, outbox, &now, &mut events, until_idle, &mut delivered)
                        .await
                }
                Err(e) => Err(classify(&e)),
            };
            if let Err(Failure::Lost | Failure::Client(_)) = outcome {
                // rust-mqtt's abort asserts a failed connection; a healthy one (an outbox
                // error, a recoverable client error) is just dropped.
                let _ = client.abort().await;
            }
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
                Err(Failure::Client(reason) | Failure::Local(reason)) => {
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

    /// One connection: returns `Ok` once idle (with `until_idle`), or why it ended.
    #[allow(clippy::too_many_arguments)]
    async fn serve<'c, T, M: RawMutex, P: Persistence, const W: usize, const BUF: usize, Q>(
        &mut self,
        client: &mut MqttClient<'_, 'c, T, NoBuffer, 0, 1, W, 0, 0, 0, 0>,
        outbox: &SharedOutbox<M, P, W, BUF, Q>,
        now: &impl Fn() -> u64,
        events: &mut impl FnMut(Event),
        until_idle: bool,
        delivered: &mut u32,
    ) -> Result<(), Failure<P::FlashError>>
    where
        T: rust_mqtt::io::Transport,
        NoBuffer: BufferProvider<'c>,
        Q: Queue<FlashError = P::FlashError>,
    {
        let mut flights: Vec<Flight, W> = Vec::new();
        let mut buf = [0u8; BUF];
        let window = W.min(usize::from(client.server_config().receive_maximum.get()));
        loop {
            while flights.len() < window {
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
                let topic = MqttString::from_str(p.topic)
                    .ok()
                    .and_then(TopicName::new)
                    .ok_or(Failure::Local("invalid topic name"))?;
                let qos = match p.qos {
                    QoS::AtMostOnce => MqttQoS::AtMostOnce,
                    QoS::AtLeastOnce => MqttQoS::AtLeastOnce,
                    QoS::ExactlyOnce => MqttQoS::ExactlyOnce,
                };
                let mut options = PublicationOptions::new(TopicReference::Name(topic)).qos(qos);
                if p.retain {
                    options = options.retain();
                }
                let wire = client
                    .publish(&options, Bytes::from(p.payload))
                    .await
                    .map_err(|e| classify(&e))?;
                self.stats.sent += 1;
                self.stats.resent += u32::from(p.dup);
                events(Event::Sent {
                    sequence: p.sequence,
                    dup: p.dup,
                });
                if let Some(wire) = wire {
                    let flight = Flight {
                        wire,
                        packet_id: p.packet_id,
                        sequence: p.sequence,
                        qos: p.qos,
                    };
                    flights.push(flight).map_err(|_| Failure::Local("window overflow"))?;
                }
            }
            if flights.is_empty() {
                let idle = outbox.lock().await.is_idle();
                if until_idle && idle {
                    return Ok(());
                }
                if !idle {
                    // Held back by nothing but the window: fill again.
                    continue;
                }
                outbox.published().await;
                continue;
            }
            let header = if flights.len() < window {
                match select(client.poll_header(), outbox.published()).await {
                    Either::First(h) => h.map_err(|e| classify(&e))?,
                    Either::Second(()) => continue,
                }
            } else {
                client.poll_header().await.map_err(|e| classify(&e))?
            };
            let event = client.poll_body(header).await.map_err(|e| classify(&e))?;
            let (wire, reason) = match event {
                MqttEvent::PublishAcknowledged(a) | MqttEvent::PublishComplete(a) => (a.packet_identifier, None),
                MqttEvent::PublishRejected(r) => (r.packet_identifier, Some(r.reason_code.value())),
                _ => continue,
            };
            let Some(i) = flights.iter().position(|f| f.wire == wire) else {
                continue;
            };
            let f = flights.swap_remove(i);
            let mut o = outbox.lock().await;
            let sequence = match f.qos {
                QoS::ExactlyOnce => {
                    o.on_pubrec(f.packet_id).await?;
                    o.on_pubcomp(f.packet_id).await?
                }
                _ => o.on_puback(f.packet_id).await?,
            };
            drop(o);
            if let Some(sequence) = sequence {
                *delivered += 1;
                match reason {
                    None => {
                        self.stats.delivered += 1;
                        events(Event::Delivered { sequence });
                    }
                    Some(reason) => events(Event::Rejected { sequence, reason }),
                }
            }
            debug_assert!(
                sequence.is_none_or(|s| s == f.sequence),
                "packet id mapped to its flight"
            );
        }
    }
}
