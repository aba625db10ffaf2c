//! The size of each log operation's future, nested as they are called (DESIGN.md section 22):
//! a future holds every local that lives across an `.await` plus the future it awaits, so
//! the outer operations' sizes are sums down the call chain. The ceilings are today's host
//! (64-bit) figures plus about 2 %: a change that grows a future fails here and has to say so
//! (raise the ceiling in the same commit, with the reason) instead of growing the stack of
//! every blocking call unseen. Thumb figures are smaller (32-bit pointers); the QEMU run
//! (`scripts/qemu.sh`) measures those.

use super::*;
use crate::flash::{SimFlash, block_on};
extern crate std;

#[test]
fn futures_stay_within_their_ceilings() {
    type S = SimFlash<4096, 16, 4, 4>;
    let mut f = S::boxed();
    let Ok(mut log) = block_on(Log::<&mut S, 16>::mount(&mut *f, 512)) else {
        panic!("mount")
    };
    let k = Key::sent(1);
    let want = [(0u64, k); 4];
    let mut locs = [Loc::Absent; 4];
    let mut keys = [k; 4];
    let mut counts = [NsCount::default(); 2];
    let mut word = [0u8; 4];
    let mut sizes: std::vec::Vec<(&str, usize, usize)> = std::vec::Vec::new();
    macro_rules! size {
        ($name:expr, $ceiling:expr, $fut:expr) => {{
            let fut = $fut;
            sizes.push(($name, core::mem::size_of_val(&fut), $ceiling));
            drop(fut);
        }};
    }
    size!("put", 4_260, log.put(0, k, &[b"x"], 1));
    size!("flush_pending", 4_160, log.flush_pending());
    size!("remove", 3_390, log.remove(0, k));
    size!("clear", 3_370, log.clear(0));
    size!("mount_inner", 3_370, log.mount_inner());
    size!("room_to_remove", 3_330, log.room_to_remove(10, 10, 0));
    size!("room_for", 3_330, log.room_for(10, 0));
    size!("make_room", 3_270, log.make_room(10, 0));
    size!("reclaim_damage", 3_240, log.reclaim_damage(0));
    size!("compact_oldest", 3_180, log.compact_oldest(0));
    size!("refine", 3_150, log.refine());
    size!("walk_live", 3_130, log.walk_live(0, false));
    size!("census", 2_600, log.census(0, &mut counts));
    size!(
        "next_keys",
        3_060,
        log.next_keys(0, ((0, 0, 0), 0, 0), &mut keys, false)
    );
    size!("locate", 1_280, log.locate(0, k));
    size!("locate_many", 1_280, log.locate_many(&want, &mut locs));
    size!(
        "append_small",
        1_330,
        log.append_small(Tag::new(RecordType::Sync, false, 0, 0), b"x", 0, None, true)
    );
    size!("open_page", 1_110, log.open_page(log.head_ctx, None, false));
    size!("check_head", 900, log.check_head());
    size!("find_sync", 720, log.find_sync(0, 0, 100, 0));
    size!("recent_loc", 670, log.recent_loc(0, k));
    size!("plan_head", 470, log.plan_head());
    size!("log_cursor", 400, log.log_cursor(0));
    size!("next_fragment_at", 370, log.next_fragment_at(0, 100));
    size!("read", 230, log.read(0, &mut word));
    for &(name, bytes, ceiling) in &sizes {
        std::println!("future {name}: {bytes} B (ceiling {ceiling})");
    }
    let over: std::vec::Vec<_> = sizes.iter().filter(|(_, b, c)| b > c).collect();
    assert!(over.is_empty(), "futures above their ceiling: {over:?}");
}
