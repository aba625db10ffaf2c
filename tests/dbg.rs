use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Key, KeyCursor, Store};
#[test]
fn dbg() {
    let mut flash = SimFlash::<1024, 6, 4, 4>::boxed();
    flash.set_ecc(true);
    flash.set_seed(2 ^ 1);
    flash.cut_power_at_op(Some(1));
    {
        let mut s: Store<_, 6> = block_on(Store::mount(&mut *flash, Config::new(400)))
            .map_err(|e| e.1)
            .unwrap();
        block_on(s.open("client", "tcp://broker:1883")).unwrap();
        let v = vec![7u8; 49];
        println!("{:?}", block_on(s.put(Key::command(18), &[&v])));
    }
    flash.restore_power();
    println!("{:02x?}", &flash.as_bytes()[..120]);
    let mut s: Store<_, 6> = block_on(Store::mount(&mut *flash, Config::new(400)))
        .map_err(|e| e.1)
        .unwrap();
    println!("{:?}", s.mount_report());
    block_on(s.open("client", "tcp://broker:1883")).unwrap();
    let mut cur = KeyCursor::default();
    let mut buf = [Key::sent(0); 5];
    println!("{:?}", block_on(s.keys(&mut cur, &mut buf)));
    println!("{:?}", &buf);
}
