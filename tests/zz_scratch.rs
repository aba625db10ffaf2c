use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Key, KeyCursor, Store};
type Sim = SimFlash<1024, 8, 4, 4>;
fn keys<F: embedded_storage_async::nor_flash::NorFlash, const N: usize>(s: &mut Store<F, N>) -> Vec<Key> {
    let mut c = KeyCursor::default();
    let mut b = [Key::sent(0); 32];
    let n = block_on(s.keys(&mut c, &mut b)).unwrap();
    b[..n].to_vec()
}
#[test]
fn repro_clear_other_ns() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    let mut s: Store<&mut Sim, 8> = block_on(Store::mount(&mut *flash, Config::new(256)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("a", "u")).unwrap();
    for i in 1..=16u16 {
        block_on(s.put(Key::sent(i), &[&[i as u8; 100]])).unwrap();
    }
    block_on(s.close()).unwrap();
    block_on(s.open("b", "u")).unwrap();
    block_on(s.put(Key::sent(1), &[b"b-one"])).unwrap();
    if std::env::var("NOCLEAR").is_err() {
        block_on(s.clear()).unwrap();
    }
    for i in 0..100u32 {
        block_on(s.put(Key::command(i % 4), &[&[7u8; 100]])).unwrap();
    }
    block_on(s.close()).unwrap();
    block_on(s.open("a", "u")).unwrap();
    println!("a's keys {:?}", keys(&mut s));
    let mut buf = [0u8; 100];
    println!("get s-1 {:?}", block_on(s.get(Key::sent(1), &mut buf)).map(|v| v[0]));
}
