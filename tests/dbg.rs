use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Key, KeyCursor, Store};
#[test]
fn dbg() {
    let mut flash = SimFlash::<1024, 6, 4, 4>::boxed();
    flash.set_ecc(true);
    let mut s: Store<_, 6> = block_on(Store::mount(&mut *flash, Config::new(256)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("c", "u")).unwrap();
    for i in 0..6u32 {
        block_on(s.put(Key::command(i), &[&[i as u8; 100]])).unwrap();
    }
    // Churn one key so the ring wraps and compaction moves the six.
    for j in 0..60u32 {
        block_on(s.put(Key::sent(1), &[&[j as u8; 200]])).unwrap();
    }
    let mut cur = KeyCursor::default();
    let mut buf = [Key::sent(0); 3];
    let mut all = vec![];
    loop {
        let n = block_on(s.keys(&mut cur, &mut buf)).unwrap();
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    println!("{all:?}");
    let want: Vec<Key> = (0..6).map(Key::command).chain([Key::sent(1)]).collect();
    assert_eq!(all, want);
}
