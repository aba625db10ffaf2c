//! The `Persistence` backend over ekv (feature `ekv`): Paho semantics through an ekv database.
#![cfg(feature = "ekv")]

use ekv::flash::PageID;
use embassy_sync_ekv::blocking_mutex::raw::NoopRawMutex;
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use mqtt_persist::ekv_backend::EkvPersistence;
use mqtt_persist::flash::{SimFlash, SimFlashError, block_on};
use mqtt_persist::{Error, Key, KeyCursor, Persistence};

const PAGE: usize = 4096;
const PAGES: usize = 16;
type Sim = SimFlash<PAGE, PAGES, 4, 4>;

/// ekv's flash trait over the simulator in ECC mode (ekv never writes a word twice).
struct Flash<'a>(&'a mut Sim);

impl ekv::flash::Flash for Flash<'_> {
    type Error = SimFlashError;
    fn page_count(&self) -> usize {
        PAGES
    }
    async fn erase(&mut self, page_id: PageID) -> Result<(), SimFlashError> {
        let p = (page_id.index() * PAGE) as u32;
        NorFlash::erase(self.0, p, p + PAGE as u32)
    }
    async fn read(&mut self, page_id: PageID, offset: usize, data: &mut [u8]) -> Result<(), SimFlashError> {
        ReadNorFlash::read(self.0, (page_id.index() * PAGE + offset) as u32, data)
    }
    async fn write(&mut self, page_id: PageID, offset: usize, data: &[u8]) -> Result<(), SimFlashError> {
        NorFlash::write(self.0, (page_id.index() * PAGE + offset) as u32, data)
    }
}

fn all_keys<P: Persistence>(p: &mut P) -> Vec<Key> {
    let mut out = Vec::new();
    let mut keys = [Key::sent(0); 3];
    loop {
        let n = block_on(p.keys(&mut KeyCursor::default(), &mut keys)).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&keys[..n]);
    }
}

#[test]
fn paho_semantics_over_ekv() {
    let mut sim = Sim::boxed();
    sim.set_ecc(true);
    {
        let db = ekv::Database::<_, NoopRawMutex>::new(Flash(&mut sim), ekv::Config::default());
        block_on(db.format()).unwrap();
        let mut p = EkvPersistence::<_, _, 256>::new(&db);
        assert_eq!(block_on(p.put(Key::command(1), &[b"x"])), Err(Error::NotOpen));
        block_on(p.open("dev", "tcp://a")).unwrap();
        assert_eq!(block_on(p.open("other", "tcp://a")), Err(Error::AlreadyOpen));

        block_on(p.put(Key::command(7), &[b"plant/", b"temp", b"21.5"])).unwrap();
        block_on(p.put(Key::sent(3), &[b"s3"])).unwrap();
        block_on(p.put(Key::command(2), &[b"c2"])).unwrap();
        block_on(p.put(Key::command(300), &[b"c300"])).unwrap();
        block_on(p.put(Key::queued(1), &[b"q1"])).unwrap();
        block_on(p.put(Key::pubrel(9), &[b"sc9"])).unwrap();

        let mut buf = [0u8; 64];
        assert_eq!(block_on(p.get(Key::command(7), &mut buf)).unwrap(), b"plant/temp21.5");
        assert_eq!(block_on(p.get(Key::command(8), &mut buf)), Err(Error::NotFound));
        assert!(block_on(p.contains(Key::sent(3))).unwrap());
        assert!(!block_on(p.contains(Key::sent(4))).unwrap());
        assert_eq!(
            block_on(p.put(Key::command(1), &[&[0u8; 300]])),
            Err(Error::TooLarge { max: 256 })
        );

        // Sorted by kind, then id (big-endian), in batches through the backend's own position.
        assert_eq!(
            all_keys(&mut p),
            [
                Key::sent(3),
                Key::pubrel(9),
                Key::command(2),
                Key::command(7),
                Key::command(300),
                Key::queued(1)
            ]
        );

        block_on(p.remove(Key::command(7))).unwrap();
        assert_eq!(block_on(p.remove(Key::command(7))), Err(Error::NotFound));
        block_on(p.remove_deferred(Key::command(2))).unwrap();
        block_on(p.close()).unwrap();

        // Another identity sees nothing of the first and keeps its own keys.
        block_on(p.open("other", "tcp://a")).unwrap();
        assert_eq!(all_keys(&mut p), []);
        block_on(p.put(Key::command(1), &[b"other"])).unwrap();
        block_on(p.close()).unwrap();
    }

    // After a "reboot" (a new database on the same flash) everything is where it was.
    let db = ekv::Database::<_, NoopRawMutex>::new(Flash(&mut sim), ekv::Config::default());
    block_on(db.mount()).unwrap();
    let mut p = EkvPersistence::<_, _, 256>::new(&db);
    block_on(p.open("dev", "tcp://a")).unwrap();
    assert_eq!(
        all_keys(&mut p),
        [Key::sent(3), Key::pubrel(9), Key::command(300), Key::queued(1)]
    );
    block_on(p.clear()).unwrap();
    assert_eq!(all_keys(&mut p), []);
    block_on(p.close()).unwrap();
    block_on(p.open("other", "tcp://a")).unwrap();
    assert_eq!(all_keys(&mut p), [Key::command(1)]);
    let mut buf = [0u8; 8];
    assert_eq!(block_on(p.get(Key::command(1), &mut buf)).unwrap(), b"other");
}
