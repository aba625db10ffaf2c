//! Unit tests of the rumqttc adapter.

use super::*;

fn assert_send<T: Send>(_: &T) {}

/// Compiles only if the drain and publish futures are `Send` over a file-backed store, so
/// they can be `tokio::spawn`ed.
#[allow(dead_code)]
fn futures_are_send(
    driver: &mut Driver<crate::Store<crate::file_flash::FileFlash<4096, 4, 4>, 64>, 8, 256>,
    outbox: &RumqttcOutbox<crate::Store<crate::file_flash::FileFlash<4096, 4, 4>, 64>, 8, 256>,
) {
    let publish = Publish::new("t", b"1");
    assert_send(&outbox.publish(&publish, 0));
    assert_send(&driver.run(|| 0, |_| {}, false));
}

type FileStore = crate::Store<crate::file_flash::FileFlash<4096, 4, 4>, 64>;

/// The same over a RAM-first tier.
#[allow(dead_code)]
fn tiered_futures_are_send(
    driver: &mut Driver<FileStore, 8, 256, TieredOutbox<FileStore, 8, 256, 16>>,
    outbox: &RumqttcOutbox<FileStore, 8, 256, TieredOutbox<FileStore, 8, 256, 16>>,
    store: FileStore,
) {
    let publish = Publish::new("t", b"1");
    assert_send(&outbox.publish(&publish, 0));
    assert_send(&outbox.spill_all());
    assert_send(&driver.run(|| 0, |_| {}, false));
    assert_send(
        &RumqttcOutbox::<FileStore, 8, 256, TieredOutbox<FileStore, 8, 256, 16>>::restore_tiered(
            store,
            OutboxConfig::new(10),
            Persist::default(),
        ),
    );
}

#[test]
fn backoff_doubles_and_saturates() {
    let s = Settings {
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        ..Settings::default()
    };
    let got: Vec<u128> = (1..=6).map(|n| s.backoff(n).as_millis()).collect();
    assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(s.backoff(u32::MAX), Duration::from_secs(1));
    assert_eq!(s.backoff(0), Duration::from_millis(100));
}

#[test]
fn connection_losses_are_told_from_client_errors() {
    let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    assert!(is_connection_loss(&ConnectionError::Io(io())));
    assert!(is_connection_loss(&ConnectionError::MqttState(
        StateError::ConnectionAborted
    )));
    assert!(is_connection_loss(&ConnectionError::MqttState(
        StateError::Deserialization(::rumqttc::Error::Io(io()))
    )));
    assert!(is_connection_loss(&ConnectionError::ConnectionRefused(
        ConnectReturnCode::ServiceUnavailable
    )));
    assert!(!is_connection_loss(&ConnectionError::ConnectionRefused(
        ConnectReturnCode::NotAuthorized
    )));
    assert!(!is_connection_loss(&ConnectionError::MqttState(
        StateError::Deserialization(::rumqttc::Error::OutgoingPacketTooLarge { pkt_size: 9, max: 8 })
    )));
    assert!(!is_connection_loss(&ConnectionError::RequestsDone));
}

#[test]
fn requests_carry_the_outbox_packet_id_and_dup() {
    let mut p = Publish::new("a/b", b"x");
    p.qos = QoS::ExactlyOnce;
    p.packet_id = 40_000;
    p.dup = true;
    p.retain = true;
    let Request::Publish(r) = to_request(&p) else {
        panic!("not a publish");
    };
    assert_eq!(
        (r.pkid, r.dup, r.retain, r.qos),
        (40_000, true, true, ::rumqttc::QoS::ExactlyOnce)
    );
    assert_eq!((r.topic.as_str(), &r.payload[..]), ("a/b", &b"x"[..]));
}
