//! A minimal MQTT 3.1.1 checking subscriber over raw TCP (no MQTT client crate), and a
//! frame-aware proxy that cuts a connection at the n-th client packet of a given type.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A log shared with a spawned task.
pub type Shared<T> = Arc<Mutex<Vec<T>>>;

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

/// One packet: fixed header byte, remaining length, body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    remaining_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// An MQTT string (or binary) field: length, then the bytes.
pub fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Reads one packet: (first byte, body). `None` at end of stream or on a malformed length.
pub async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> Option<(u8, Vec<u8>)> {
    let first = r.read_u8().await.ok()?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = r.read_u8().await.ok()?;
        len |= ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
        if shift > 21 {
            return None;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.ok()?;
    Some((first, body))
}

/// What the subscriber saw: readings (payloads parsed as `u32`) in arrival order.
#[derive(Clone, Default)]
pub struct Received(pub Arc<Mutex<Vec<u32>>>);

impl Received {
    pub fn snapshot(&self) -> Vec<u32> {
        self.0.lock().unwrap().clone()
    }
    pub fn distinct(&self) -> usize {
        self.0.lock().unwrap().iter().collect::<HashSet<_>>().len()
    }
}

/// Connects straight to the broker (clean session, keepalive 30 s, PINGREQ every 10 s), subscribes to `topic` at
/// `qos` and records every publish it gets; answers PUBACK, or PUBREC/PUBCOMP for QoS 2 (a
/// QoS 2 redelivery of an id held until PUBREL is not recorded twice, as a receiver must).
/// Returns once the SUBACK came (bounded: 10 s).
pub async fn subscribe(broker: SocketAddr, client_id: &str, topic: &str, qos: u8) -> Received {
    let mut stream = TcpStream::connect(broker).await.expect("connect to the broker");
    stream.set_nodelay(true).ok();
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.push(4);
    body.push(0x02);
    body.extend_from_slice(&30u16.to_be_bytes());
    string(client_id.as_bytes(), &mut body);
    stream.write_all(&packet(0x10, &body)).await.unwrap();
    let (kind, body) = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!((kind >> 4, body.get(1)), (2, Some(&0)), "CONNACK accepted");
    let mut body = Vec::new();
    body.extend_from_slice(&1u16.to_be_bytes());
    string(topic.as_bytes(), &mut body);
    body.push(qos);
    stream.write_all(&packet(0x82, &body)).await.unwrap();
    let received = Received::default();
    let sink = received.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (mut reader, mut writer) = stream.into_split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let pings = out_tx.clone();
    tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            if pings.send(vec![0xc0, 0]).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut held: HashSet<u16> = HashSet::new();
        while let Some((first, body)) = read_packet(&mut reader).await {
            match first >> 4 {
                3 => {
                    let q = (first >> 1) & 3;
                    let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
                    let mut at = 2 + tlen;
                    let pid = if q > 0 {
                        at += 2;
                        u16::from_be_bytes([body[at - 2], body[at - 1]])
                    } else {
                        0
                    };
                    let n: u32 = std::str::from_utf8(&body[at..]).unwrap().parse().unwrap();
                    let reply = match q {
                        0 => {
                            sink.0.lock().unwrap().push(n);
                            None
                        }
                        1 => {
                            sink.0.lock().unwrap().push(n);
                            Some(packet(0x40, &pid.to_be_bytes()))
                        }
                        _ => {
                            if held.insert(pid) {
                                sink.0.lock().unwrap().push(n);
                            }
                            Some(packet(0x50, &pid.to_be_bytes()))
                        }
                    };
                    if let Some(reply) = reply
                        && out_tx.send(reply).is_err()
                    {
                        return;
                    }
                }
                6 => {
                    let pid = u16::from_be_bytes([body[0], body[1]]);
                    held.remove(&pid);
                    if out_tx.send(packet(0x70, &body[..2])).is_err() {
                        return;
                    }
                }
                9 => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("no SUBACK")
        .unwrap();
    received
}

/// A proxy on 127.0.0.1 that forwards whole MQTT packets and, at the `cut_at`-th client packet
/// of type `kind` (upper nibble, counted over all connections), drops that packet, closes
/// the connection and refuses new ones until `down` is cleared.
/// `cut_at` 0: never cut (a recording tap). Every PUBLISH from the client is logged as
/// (connection number, payload).
pub struct CutProxy {
    pub addr: SocketAddr,
    pub down: Arc<AtomicBool>,
    pub seen: Arc<AtomicU64>,
    pub publishes: Shared<(u64, Vec<u8>)>,
}

/// The payload of a PUBLISH body.
fn publish_payload(first: u8, body: &[u8]) -> Option<Vec<u8>> {
    let tlen = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let at = 2 + tlen + if (first >> 1) & 3 > 0 { 2 } else { 0 };
    body.get(at..).map(<[u8]>::to_vec)
}

pub async fn start_cut_proxy(upstream: SocketAddr, kind: u8, cut_at: u64) -> CutProxy {
    cut_proxy(upstream, kind, cut_at, false).await
}

/// As [`start_cut_proxy`], but the `cut_at`-th packet of type `kind` is forwarded before the
/// connection is closed: the broker gets it, its answer is lost.
pub async fn start_cut_proxy_after(upstream: SocketAddr, kind: u8, cut_at: u64) -> CutProxy {
    cut_proxy(upstream, kind, cut_at, true).await
}

async fn cut_proxy(upstream: SocketAddr, kind: u8, cut_at: u64, forward_cut: bool) -> CutProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let down = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(0));
    let publishes = Arc::new(Mutex::new(Vec::new()));
    let (d, s, log) = (down.clone(), seen.clone(), publishes.clone());
    tokio::spawn(async move {
        for conn in 0u64.. {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            if d.load(Ordering::Relaxed) {
                drop(client);
                continue;
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let (d, s, log) = (d.clone(), s.clone(), log.clone());
            tokio::spawn(async move {
                let (mut cr, cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async {
                    while let Some((first, body)) = read_packet(&mut cr).await {
                        if first >> 4 == kind && s.fetch_add(1, Ordering::Relaxed) + 1 == cut_at {
                            d.store(true, Ordering::Relaxed);
                            if forward_cut {
                                let _ = sw.write_all(&packet(first, &body)).await;
                                let _ = sw.flush().await;
                            }
                            return;
                        }
                        if first >> 4 == 3
                            && let Some(payload) = publish_payload(first, &body)
                        {
                            log.lock().unwrap().push((conn, payload));
                        }
                        if sw.write_all(&packet(first, &body)).await.is_err() {
                            return;
                        }
                    }
                };
                let down_pump = copy(&mut sr, cw);
                tokio::select! {
                    _ = up => {}
                    _ = down_pump => {}
                }
            });
        }
    });
    CutProxy {
        addr,
        down,
        seen,
        publishes,
    }
}

async fn copy<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(r: &mut R, mut w: W) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if w.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A stand-in broker on 127.0.0.1 for the error paths: answers CONNECT with a CONNACK of
/// `connack_code` (closing the connection if it is not 0), PINGREQ with PINGRESP, and QoS 1
/// PUBLISH with PUBACK if `ack`. Logs (connection number, first byte, payload) of every PUBLISH.
pub struct FakeBroker {
    pub addr: SocketAddr,
    pub connects: Arc<AtomicU64>,
    pub publishes: Shared<(u64, u8, Vec<u8>)>,
}

pub async fn start_fake_broker(connack_code: u8, ack: bool) -> FakeBroker {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connects = Arc::new(AtomicU64::new(0));
    let publishes = Arc::new(Mutex::new(Vec::new()));
    let (c, log) = (connects.clone(), publishes.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let conn = c.fetch_add(1, Ordering::Relaxed);
            let log = log.clone();
            tokio::spawn(async move {
                let Some((first, _)) = read_packet(&mut stream).await else {
                    return;
                };
                assert_eq!(first >> 4, 1, "CONNECT first");
                if stream.write_all(&[0x20, 2, 0, connack_code]).await.is_err() || connack_code != 0 {
                    return;
                }
                while let Some((first, body)) = read_packet(&mut stream).await {
                    let reply = match first >> 4 {
                        3 => {
                            let q = (first >> 1) & 3;
                            if let Some(payload) = publish_payload(first, &body) {
                                log.lock().unwrap().push((conn, first, payload));
                            }
                            let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
                            (ack && q == 1).then(|| packet(0x40, &body[2 + tlen..4 + tlen]))
                        }
                        12 => Some(vec![0xd0, 0]),
                        _ => None,
                    };
                    if let Some(reply) = reply
                        && stream.write_all(&reply).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    FakeBroker {
        addr,
        connects,
        publishes,
    }
}
