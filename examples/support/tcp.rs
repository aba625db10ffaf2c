//! Host support shared by the examples and the end-to-end test: a TCP transport for mqttrust
//! on tokio, and a fault-injecting TCP proxy (connection resets, outage, added latency).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use embedded_io_async::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP connection as an `embedded-io-async` socket.
pub struct TcpSocket(TcpStream);

/// An I/O error kind.
#[derive(Debug)]
pub struct IoError(ErrorKind);

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for IoError {}

impl embedded_io_async::Error for IoError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

fn kind(e: std::io::Error) -> IoError {
    use std::io::ErrorKind as K;
    IoError(match e.kind() {
        K::ConnectionReset => ErrorKind::ConnectionReset,
        K::ConnectionRefused => ErrorKind::ConnectionRefused,
        K::BrokenPipe | K::NotConnected | K::UnexpectedEof => ErrorKind::NotConnected,
        K::TimedOut => ErrorKind::TimedOut,
        _ => ErrorKind::Other,
    })
}

impl embedded_io_async::ErrorType for TcpSocket {
    type Error = IoError;
}

impl embedded_io_async::Read for TcpSocket {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        self.0.read(buf).await.map_err(kind)
    }
}

impl embedded_io_async::Write for TcpSocket {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, IoError> {
        self.0.write(buf).await.map_err(kind)
    }
    async fn flush(&mut self) -> Result<(), IoError> {
        self.0.flush().await.map_err(kind)
    }
}

/// A tokio TCP stack as an `embedded-nal-async` network, for mqttrust's `NalTransport`.
#[derive(Default)]
pub struct TokioNetwork;

impl embedded_nal_async::TcpConnect for TokioNetwork {
    type Error = IoError;
    type Connection<'a> = TcpSocket;

    async fn connect(&self, remote: SocketAddr) -> Result<TcpSocket, IoError> {
        let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(remote))
            .await
            .map_err(|_| IoError(ErrorKind::TimedOut))?
            .map_err(kind)?;
        stream.set_nodelay(true).ok();
        Ok(TcpSocket(stream))
    }
}

/// Faults the proxy injects, changeable while it runs.
#[derive(Default)]
pub struct Faults {
    /// Refuse connections and cut the current ones (broker unreachable).
    pub down: AtomicBool,
    /// Cut a connection after this many bytes from the client (0: never).
    pub reset_after_bytes: AtomicU64,
    /// Added one-way latency in microseconds, each direction.
    pub latency_us: AtomicU64,
    /// Connections cut by `reset_after_bytes`.
    pub resets: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`. Returns its address.
pub async fn start_proxy(upstream: SocketAddr, faults: Arc<Faults>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            faults.accepted.fetch_add(1, Ordering::Relaxed);
            if faults.down.load(Ordering::Relaxed) {
                drop(client);
                continue;
            }
            let faults = faults.clone();
            tokio::spawn(async move {
                let Ok(Ok(server)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream)).await
                else {
                    return;
                };
                client.set_nodelay(true).ok();
                server.set_nodelay(true).ok();
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = pump(cr, sw, faults.clone(), true);
                let down = pump(sr, cw, faults.clone(), false);
                // Either direction ending (or a fault) closes both.
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Faults>,
    count: bool,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let f = faults.clone();
    let reader = async move {
        let mut total = 0u64;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if f.down.load(Ordering::Relaxed) {
                return;
            }
            let n = match tokio::time::timeout(Duration::from_millis(50), from.read(&mut buf)).await {
                Err(_) => continue,
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
            };
            let limit = f.reset_after_bytes.load(Ordering::Relaxed);
            if count && limit > 0 && total + n as u64 > limit {
                // Forward nothing of the chunk that crosses the limit: cut mid-stream.
                f.resets.fetch_add(1, Ordering::Relaxed);
                return;
            }
            total += n as u64;
            let due = tokio::time::Instant::now() + Duration::from_micros(f.latency_us.load(Ordering::Relaxed));
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}

/// Starts rumqttd in this process, listening on `addr` (127.0.0.1), and returns once it
/// accepts connections (bounded: 10 s).
pub fn start_rumqttd(addr: SocketAddr) {
    let mut config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut v4 = std::collections::HashMap::new();
    v4.insert(
        "v4".to_string(),
        rumqttd::ServerSettings {
            name: "v4".to_string(),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: 20_480,
                max_inflight_count: 500,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        },
    );
    config.v4 = Some(v4);
    std::thread::spawn(move || {
        let _ = rumqttd::Broker::new(config).start();
    });
    wait_accepting(addr);
}

/// Waits (bounded: 10 s) until something accepts TCP connections on `addr`.
pub fn wait_accepting(addr: SocketAddr) {
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A checking subscriber straight to the broker (rumqttc, persistent session): returns the
/// readings (payloads parsed as `u32`) in arrival order, once the SUBACK came (bounded: 10 s).
pub async fn subscribe_readings(
    broker: SocketAddr,
    id: &str,
    topic: &str,
    qos: rumqttc::QoS,
) -> Arc<std::sync::Mutex<Vec<u32>>> {
    let mut opts = rumqttc::MqttOptions::new(id, broker.ip().to_string(), broker.port());
    opts.set_clean_session(false);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_inflight(100);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
    client.subscribe(topic, qos).await.unwrap();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let n = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
                    sink.lock().unwrap().push(n);
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("no SUBACK")
        .unwrap();
    received
}
