//! A wrong const generic or config is refused at mount with a typed error whose message names
//! the rule and the fix (issue 10), and the refused mount touches nothing.

use mqtt_persist::flash::{SimFlash, SimFlashError, block_on};
use mqtt_persist::{Config, Error, GeometryError, Store};

type E = Error<SimFlashError>;

/// Mounts `Store<_, N>` on `f` with `max`, expects a geometry refusal, checks nothing was read
/// or written and returns the error and its message.
fn refused<const P: usize, const C: usize, const R: usize, const W: usize, const N: usize>(
    f: &mut SimFlash<P, C, R, W>,
    max: usize,
) -> (GeometryError, String) {
    match block_on(Store::<_, N>::mount(&mut *f, Config::new(max))) {
        Ok(_) => panic!("mounted {C} x {P} B (R {R}, W {W}) as {N} pages with max {max}"),
        Err((_, E::BadGeometry(g))) => {
            assert_eq!(f.stats(), Default::default(), "a refused mount touched the flash");
            let msg = g.to_string();
            assert_eq!(
                msg,
                E::BadGeometry(g)
                    .to_string()
                    .trim_start_matches("flash geometry not supported: ")
            );
            (g, msg)
        }
        Err((_, e)) => panic!("expected BadGeometry, got {e:?}"),
    }
}

#[test]
fn a_page_count_that_does_not_match_the_flash_names_the_pages_that_would() {
    let mut f = SimFlash::<1024, 8, 4, 4>::boxed();
    let (g, msg) = refused::<1024, 8, 4, 4, 6>(&mut f, 64);
    assert_eq!(
        g,
        GeometryError::Capacity {
            flash_bytes: 8192,
            expected: 6144,
            page_size: 1024
        }
    );
    assert_eq!(
        msg,
        "flash capacity 8192 B is not PAGES * page size = 6144 B: use Store<_, 8> for this flash, \
         or mount a partition of exactly 6144 B"
    );
    // The type it names mounts.
    assert!(block_on(Store::<_, 8>::mount(&mut *f, Config::new(64))).is_ok());
}

#[test]
fn a_page_count_out_of_range_says_the_range() {
    let mut f = SimFlash::<1024, 3, 4, 4>::boxed();
    let (g, msg) = refused::<1024, 3, 4, 4, 3>(&mut f, 64);
    assert_eq!(g, GeometryError::PageCount { pages: 3 });
    assert!(msg.starts_with("Store<_, 3>: PAGES must be from 4 to 4096"), "{msg}");
}

#[test]
fn a_value_limit_too_large_names_the_config_that_fits() {
    type S<'a> = Store<&'a mut SimFlash<1024, 8, 4, 4>, 8>;
    let limit = S::max_value_limit();
    let mut f = SimFlash::<1024, 8, 4, 4>::boxed();
    let (g, msg) = refused::<1024, 8, 4, 4, 8>(&mut f, limit + 1);
    assert_eq!(
        g,
        GeometryError::ValueTooLarge {
            max_value_len: limit + 1,
            limit
        }
    );
    assert!(msg.contains(&format!("use Config::new({limit}) or less")), "{msg}");
    assert!(block_on(Store::<_, 8>::mount(&mut *f, Config::new(limit))).is_ok());
}

#[test]
fn write_and_page_size_rules_name_the_fix() {
    let mut f = SimFlash::<1024, 4, 4, 64>::boxed();
    let (g, msg) = refused::<1024, 4, 4, 64, 4>(&mut f, 64);
    assert_eq!(g, GeometryError::WriteSize { write_size: 64 });
    assert!(
        msg.contains("wrap the flash in a driver that programs in such units"),
        "{msg}"
    );

    let mut f = SimFlash::<128, 8, 4, 4>::boxed();
    let (g, msg) = refused::<128, 8, 4, 4, 8>(&mut f, 16);
    assert_eq!(g, GeometryError::PageSize { page_size: 128 });
    assert!(msg.contains("not a multiple of 32 from 256 to 131072"), "{msg}");
}

#[test]
fn no_room_for_data_says_what_to_change() {
    // 256-byte pages with WRITE_SIZE 32: the compaction reserves take every page.
    let mut f = SimFlash::<256, 8, 32, 32>::boxed();
    let (g, msg) = refused::<256, 8, 32, 32, 8>(&mut f, 16);
    assert_eq!(g, GeometryError::NoRoom);
    assert!(
        msg.contains("use more pages, larger pages or a smaller WRITE_SIZE"),
        "{msg}"
    );
}
