use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Key, Store};
type Sim = SimFlash<1024, 8, 4, 4>;
#[test]
fn repro_pending_other_ns() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    let mut s: Store<&mut Sim, 8> = block_on(Store::mount(&mut *flash, Config::new(256)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("a", "u")).unwrap();
    block_on(s.put(Key::sent(5), &[b"a-five"])).unwrap();
    block_on(s.close()).unwrap();
    block_on(s.open("b", "u")).unwrap();
    if std::env::var("NODEF").is_err() {
        block_on(s.remove_deferred(Key::sent(5))).unwrap();
    }
    let mut n = 0;
    while flash_erases(&s) == 0 {
        block_on(s.put(Key::command(n % 4), &[&[7u8; 100]])).unwrap();
        n += 1;
    }
    println!("puts {n}");
    block_on(s.close()).unwrap();
    block_on(s.open("a", "u")).unwrap();
    let mut buf = [0u8; 100];
    println!("get s-5 {:?}", block_on(s.get(Key::sent(5), &mut buf)));
}
fn flash_erases(s: &Store<&mut Sim, 8>) -> u64 {
    s.flash().stats().erases
}
