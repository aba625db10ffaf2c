//! sequential-storage 8 on the same simulated flash, measured the same way (its own async API
//! driven by the crate's `block_on`, as the blocking facade does): queue push/peek/pop and map
//! store_item/fetch_item/remove_item, with the page caches its docs recommend. The
//! workloads mirror `checks::churn`: the same value sizes, enough to wrap the flash many times.

use mqtt_persist::flash::block_on;
use sequential_storage::cache::key_pointers::ArrayKeyPointers;
use sequential_storage::cache::page_pointers::ArrayPagePointers;
use sequential_storage::cache::page_states::ArrayPageStates;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};
use sequential_storage::queue::{QueueConfig, QueueStorage};

use crate::checks::size_of_val;
use crate::{MAX_VALUE, Meter, Op, PAGES, Sim, reset};

type QCache = Cache<ArrayPageStates<PAGES>, ArrayPagePointers<PAGES>, Uncached>;
type MCache = Cache<ArrayPageStates<PAGES>, ArrayPagePointers<PAGES>, ArrayKeyPointers<u32, 8>, u32>;
type Queue<'f> = QueueStorage<&'f mut Sim, QCache>;
type Map<'f> = MapStorage<u32, &'f mut Sim, MCache>;

fn queue_on(flash: &mut Sim) -> Queue<'_> {
    let cache = Cache::new(ArrayPageStates::new(), ArrayPagePointers::new(), Uncached);
    QueueStorage::new(flash, QueueConfig::new(0..Sim::CAPACITY as u32), cache)
}

fn map_on(flash: &mut Sim) -> Map<'_> {
    let cache = Cache::new(
        ArrayPageStates::new(),
        ArrayPagePointers::new(),
        ArrayKeyPointers::new(),
    );
    MapStorage::new(flash, MapConfig::new(0..Sim::CAPACITY as u32), cache)
}

fn item(i: u32, buf: &mut [u8; MAX_VALUE]) -> usize {
    let len = 1 + ((i * 37 + 11) as usize % MAX_VALUE);
    for (j, b) in buf[..len].iter_mut().enumerate() {
        *b = (i as usize * 13 + j) as u8;
    }
    len
}

/// 240 rounds of push two, peek, pop two: the queue wraps the flash many times. Each popped
/// item must be the oldest pushed, byte for byte.
#[inline(never)]
pub fn queue(m: &mut Meter, flash: &mut Sim) {
    let flash = reset(flash);
    let mut q = queue_on(flash);
    let (mut pushed, mut popped) = (0u32, 0u32);
    for _ in 0..240 {
        for _ in 0..2 {
            let mut v = [0u8; MAX_VALUE];
            let len = item(pushed, &mut v);
            m.run(Op::SsQueuePush, || block_on(q.push(&v[..len], false)))
                .expect("ss push");
            pushed += 1;
        }
        let mut want = [0u8; MAX_VALUE];
        let len = item(popped, &mut want);
        let mut buf = [0u8; MAX_VALUE + 8];
        let got = m.run(Op::SsQueuePeek, || {
            block_on(q.peek(&mut buf)).map(|v| v.map(|v| v.len()))
        });
        assert_eq!(got, Ok(Some(len)), "ss peek");
        assert_eq!(buf[..len], want[..len]);
        for _ in 0..2 {
            let len = item(popped, &mut want);
            let got = m.run(Op::SsQueuePop, || block_on(q.pop(&mut buf)).map(|v| v.map(|v| v.len())));
            assert_eq!(got, Ok(Some(len)), "ss pop");
            assert_eq!(buf[..len], want[..len]);
            popped += 1;
        }
    }
    let mut buf = [0u8; MAX_VALUE + 8];
    assert_eq!(block_on(q.pop(&mut buf)).map(|v| v.is_none()), Ok(true));
    cortex_m_semihosting::hprintln!("sequential-storage queue: {} pushed and popped in order", pushed);
}

/// 80 rounds of storing 6 keys (the churn workload) with removals; every key must then fetch
/// its last value.
#[inline(never)]
pub fn map(m: &mut Meter, flash: &mut Sim) {
    let flash = reset(flash);
    let mut map = map_on(flash);
    let mut data = [0u8; MAX_VALUE + 16];
    const ROUNDS: u32 = 80;
    for round in 0..ROUNDS {
        for k in 0..6u32 {
            let mut v = [0u8; MAX_VALUE];
            let len = item(k * 1000 + round, &mut v);
            let value: &[u8] = &v[..len];
            m.run(Op::SsMapStore, || block_on(map.store_item(&mut data, &k, &value)))
                .expect("ss store_item");
        }
        if round % 5 == 2 {
            let k = round % 6;
            m.run(Op::SsMapRemove, || block_on(map.remove_item(&mut data, &k)))
                .expect("ss remove_item");
            let got = block_on(map.fetch_item::<&[u8]>(&mut data, &k)).map(|v| v.is_none());
            assert_eq!(got, Ok(true), "ss removed key");
        }
    }
    for k in 0..6u32 {
        let mut want = [0u8; MAX_VALUE];
        let len = item(k * 1000 + ROUNDS - 1, &mut want);
        let got = m.run(Op::SsMapFetch, || {
            block_on(map.fetch_item::<&[u8]>(&mut data, &k)).map(|v| v.map(|v| (v.len(), v == &want[..len])))
        });
        assert_eq!(got, Ok(Some((len, true))), "ss fetch_item {k}");
    }
    cortex_m_semihosting::hprintln!("sequential-storage map: {} stores, last values fetched", ROUNDS * 6);
}

/// The size of each sequential-storage future before it is polled.
#[inline(never)]
pub fn future_sizes(flash: &mut Sim) -> [(&'static str, usize); 6] {
    let flash = reset(flash);
    let mut buf = [0u8; MAX_VALUE + 16];
    let (push, peek, pop) = {
        let mut q = queue_on(&mut *flash);
        let push = size_of_val(q.push(b"x", false));
        let peek = size_of_val(q.peek(&mut buf));
        let pop = size_of_val(q.pop(&mut buf));
        (push, peek, pop)
    };
    let mut map = map_on(flash);
    let value: &[u8] = b"x";
    let store = size_of_val(map.store_item(&mut buf, &0, &value));
    let fetch = size_of_val(map.fetch_item::<&[u8]>(&mut buf, &0));
    let remove = size_of_val(map.remove_item(&mut buf, &0));
    [
        ("ss_queue_push", push),
        ("ss_queue_peek", peek),
        ("ss_queue_pop", pop),
        ("ss_map_store_item", store),
        ("ss_map_fetch_item", fetch),
        ("ss_map_remove_item", remove),
    ]
}
