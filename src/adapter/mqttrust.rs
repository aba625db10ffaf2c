//! The adapter for the async [mqttrust] 1.0 client (feature `mqttrust`).
//!
//! mqttrust's `MqttClient::publish` resolves once the broker acknowledged (PUBACK, or PUBCOMP
//! with its `qos2` feature) and picks packet ids itself, so it fits [`Client`] directly.
//!
//! **Known defect in mqttrust 1.0.0**: when its stack resets after a connection error it
//! clears its in-flight set, and a `publish()` still waiting for its PUBACK then returns `Ok`
//! although the broker never acknowledged it. This adapter therefore counts connection changes
//! itself, in [`EpochNetwork`], which wraps the network stack the transport runs on: a publish whose
//! run overlapped a connect or disconnect is reported [`Ack::Unconfirmed`] and sent again. A
//! duplicate is possible, a loss is not.
//!
//! The client is built for MQTT 3.1.1 (mqttrust's `mqttv3` feature), which every broker
//! speaks; MQTT 5 properties stored with a message are therefore not transmitted by this
//! adapter.
//!
//! Also a limit of mqttrust 1.0: packet ids and PUBREC are not exposed, so a QoS 2 flow cut by
//! a reboot cannot be continued with a lone PUBREL; such a flow is forgotten (the broker then
//! may deliver that one message twice). QoS 1 is unaffected.
//!
//! ```ignore
//! let link = Link::new();
//! let network = EpochNetwork::new(my_tcp_stack, &link);
//! let mut transport = mqttrust::transport::embedded_nal::NalTransport::new(&network, broker);
//! let (mut stack, client) = mqttrust::new(&mut state, config);
//! let adapter = MqttrustClient::new(&client, &link);
//! join(stack.run(&mut transport), outbox.drain(&adapter, now, |_| {}, false)).await;
//! ```

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use core::net::SocketAddr;
use embassy_sync::blocking_mutex::raw::RawMutex;

use embedded_io_async::{ErrorType, Read, Write};
use embedded_nal_async::TcpConnect;
use mqttrust::{EncodingError, MqttClient, ToPayload};

use super::{Ack, Client, Turn};
use crate::mqtt::packet::{Publish, QoS};

/// Connection changes seen by [`EpochNetwork`]: an epoch counter bumped at every connect and
/// every disconnect, and whether the transport is up.
#[derive(Debug, Default)]
pub struct Link {
    epoch: AtomicU32,
    up: AtomicBool,
}

impl Link {
    /// A link that is down, at epoch 0.
    pub const fn new() -> Self {
        Link {
            epoch: AtomicU32::new(0),
            up: AtomicBool::new(false),
        }
    }

    /// The current epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether the transport is connected.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn change(&self, up: bool) {
        // Only the network side writes, so load + store is enough, and it works on cores
        // without atomic read-modify-write (Cortex-M0).
        self.epoch
            .store(self.epoch.load(Ordering::Acquire).wrapping_add(1), Ordering::Release);
        self.up.store(up, Ordering::Release);
    }
}

/// A network stack (`embedded-nal-async` `TcpConnect`, which mqttrust's `NalTransport` runs on)
/// that reports every connect and every dropped connection to a [`Link`]. mqttrust drops its
/// socket whenever it resets, so every reset is seen here first.
///
/// (Wrapping `mqttrust::transport::Transport` itself is not possible from outside mqttrust
/// 1.0: its error type `ConnectionError` is not exported.)
pub struct EpochNetwork<'l, N> {
    inner: N,
    link: &'l Link,
}

impl<'l, N> EpochNetwork<'l, N> {
    /// Wraps `inner`.
    pub fn new(inner: N, link: &'l Link) -> Self {
        EpochNetwork { inner, link }
    }
}

impl<N: TcpConnect> TcpConnect for EpochNetwork<'_, N> {
    type Error = N::Error;
    type Connection<'a>
        = EpochConnection<'a, N::Connection<'a>>
    where
        Self: 'a;

    async fn connect<'a>(&'a self, remote: SocketAddr) -> Result<Self::Connection<'a>, N::Error> {
        let connection = self.inner.connect(remote).await;
        // Count failed attempts too: a change of connection either way.
        self.link.change(connection.is_ok());
        Ok(EpochConnection {
            inner: connection?,
            link: self.link,
        })
    }
}

/// A connection of an [`EpochNetwork`]; dropping it counts as a disconnect.
pub struct EpochConnection<'l, C> {
    inner: C,
    link: &'l Link,
}

impl<C> Drop for EpochConnection<'_, C> {
    fn drop(&mut self) {
        self.link.change(false);
    }
}

impl<C: ErrorType> ErrorType for EpochConnection<'_, C> {
    type Error = C::Error;
}

impl<C: Read> Read for EpochConnection<'_, C> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, C::Error> {
        self.inner.read(buf).await
    }
}

impl<C: Write> Write for EpochConnection<'_, C> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, C::Error> {
        self.inner.write(buf).await
    }

    async fn flush(&mut self) -> Result<(), C::Error> {
        self.inner.flush().await
    }
}

/// The payload handed to mqttrust: copies the bytes and passes the turn on once mqttrust has
/// encoded the packet into its transmit queue (the next publish can then be queued behind it).
struct TurnPayload<'a, 't> {
    bytes: &'a [u8],
    turn: &'a Turn<'t>,
}

impl ToPayload for TurnPayload<'_, '_> {
    fn serialize(&self, buffer: &mut [u8]) -> Result<usize, EncodingError> {
        let n = self.bytes.serialize(buffer)?;
        self.turn.queued();
        Ok(n)
    }

    fn max_size(&self) -> usize {
        self.bytes.len()
    }
}

/// [`Client`] for an mqttrust 1.0 `MqttClient` whose transport runs on an [`EpochNetwork`].
pub struct MqttrustClient<'c, 'a, M: RawMutex> {
    client: &'c MqttClient<'a, M>,
    link: &'c Link,
}

impl<'c, 'a, M: RawMutex> MqttrustClient<'c, 'a, M> {
    /// Wraps `client`; `link` is the one given to the [`EpochNetwork`].
    pub fn new(client: &'c MqttClient<'a, M>, link: &'c Link) -> Self {
        MqttrustClient { client, link }
    }
}

impl<M: RawMutex> Client for MqttrustClient<'_, '_, M> {
    type Error = mqttrust::Error;

    fn is_connected(&self) -> bool {
        self.link.is_up()
    }

    async fn publish(&self, publish: &Publish<'_>, turn: &Turn<'_>) -> Result<Ack, mqttrust::Error> {
        self.client.wait_connected().await;
        let epoch = self.link.epoch();
        let qos = match publish.qos {
            QoS::AtMostOnce => mqttrust::QoS::AtMostOnce,
            QoS::AtLeastOnce => mqttrust::QoS::AtLeastOnce,
            QoS::ExactlyOnce => mqttrust::QoS::ExactlyOnce,
        };
        let packet = mqttrust::Publish::builder()
            .topic_name(publish.topic)
            .payload(TurnPayload {
                bytes: publish.payload,
                turn,
            })
            .qos(qos)
            .retain(publish.retain)
            .dup(publish.dup)
            .build();
        self.client.publish(packet).await?;
        // The mqttrust 1.0.0 defect: Ok after a reset proves nothing. Only a publish that ran
        // entirely within one connection counts as acknowledged.
        if self.link.epoch() == epoch && self.link.is_up() {
            Ok(Ack::Confirmed)
        } else {
            Ok(Ack::Unconfirmed)
        }
    }

    async fn pubrel(&self, _packet_id: u16) -> Result<Ack, mqttrust::Error> {
        Ok(Ack::Confirmed)
    }
}
