use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Error, Key, KeyCursor, Store};

type Sim = SimFlash<4096, 16, 4, 4>;

fn all_keys<F: embedded_storage_async::nor_flash::NorFlash, const N: usize>(s: &mut Store<F, N>) -> Vec<Key> {
    let mut cur = KeyCursor::default();
    let mut v = Vec::new();
    let mut buf = [Key::sent(0); 7];
    loop {
        let n = block_on(s.keys(&mut cur, &mut buf)).unwrap();
        if n == 0 {
            break;
        }
        v.extend_from_slice(&buf[..n]);
    }
    v
}

#[test]
fn put_get_remove_keys_and_remount() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    {
        let mut s: Store<&mut Sim, 16> = block_on(Store::mount(&mut *flash, Config::new(512)))
            .map_err(|e| e.1)
            .unwrap();
        assert_eq!(block_on(s.put(Key::sent(1), &[b"x"])), Err(Error::NotOpen));
        block_on(s.open("dev", "tcp://b:1883")).unwrap();
        for i in 0..100u32 {
            let v = [i as u8; 64];
            block_on(s.put(Key::command(i), &[&v[..32], &v[32..]])).unwrap();
        }
        let mut buf = [0u8; 64];
        assert_eq!(block_on(s.get(Key::command(7), &mut buf)).unwrap(), &[7u8; 64][..]);
        let mut small = [0u8; 10];
        assert_eq!(
            block_on(s.get(Key::command(7), &mut small)),
            Err(Error::BufferTooSmall { needed: 64 })
        );
        block_on(s.remove(Key::command(7))).unwrap();
        assert_eq!(block_on(s.remove(Key::command(7))), Err(Error::NotFound));
        assert!(!block_on(s.contains(Key::command(7))).unwrap());
        block_on(s.remove_deferred(Key::command(8))).unwrap();
        assert!(!block_on(s.contains(Key::command(8))).unwrap());
        let keys = all_keys(&mut s);
        let want: Vec<Key> = (0..100).filter(|i| *i != 7 && *i != 8).map(Key::command).collect();
        assert_eq!(keys, want);
        block_on(s.close()).unwrap();
    }
    let mut s: Store<&mut Sim, 16> = block_on(Store::mount(&mut *flash, Config::new(512)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("dev", "tcp://b:1883")).unwrap();
    let keys = all_keys(&mut s);
    let want: Vec<Key> = (0..100).filter(|i| *i != 7 && *i != 8).map(Key::command).collect();
    assert_eq!(keys, want);
    let mut buf = [0u8; 64];
    assert_eq!(block_on(s.get(Key::command(99), &mut buf)).unwrap(), &[99u8; 64][..]);
}

#[test]
fn steady_state_wraps_the_ring_many_times() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    let mut s: Store<&mut Sim, 16> = block_on(Store::mount(&mut *flash, Config::new(512)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("dev", "uri")).unwrap();
    let mut buf = [0u8; 64];
    for i in 0..5000u32 {
        let v = [(i % 251) as u8; 64];
        block_on(s.put(Key::command(i), &[&v])).unwrap_or_else(|e| panic!("put {i}: {e:?}"));
        if i >= 50 {
            let old = i - 50;
            if i % 2 == 0 {
                block_on(s.remove(Key::command(old))).unwrap_or_else(|e| panic!("remove {old}: {e:?}"));
            } else {
                block_on(s.remove_deferred(Key::command(old))).unwrap();
            }
        }
    }
    for i in 4950..5000u32 {
        assert_eq!(
            block_on(s.get(Key::command(i), &mut buf)).unwrap(),
            &[(i % 251) as u8; 64][..]
        );
    }
    assert_eq!(all_keys(&mut s), (4950..5000).map(Key::command).collect::<Vec<_>>());
    block_on(s.close()).unwrap();
    // About 381 KB of records and removals fill ~94 pages; the first 16 were blank, so ~78
    // erases. Every page takes its turn in the ring, so erase counts stay level.
    let stats = s.flash().stats();
    assert!((70..=90).contains(&stats.erases), "erases: {}", stats.erases);
    // Page 0 is erased once more: an empty store erases its first page before writing the
    // first header (a torn header write can leave words programmed that read 0xFF).
    let per_page: Vec<u64> = (0..16).map(|p| s.flash().page_erases(p) - u64::from(p == 0)).collect();
    let (min, max) = (per_page.iter().min().unwrap(), per_page.iter().max().unwrap());
    assert!(max - min <= 1, "uneven wear: {per_page:?}");
}
