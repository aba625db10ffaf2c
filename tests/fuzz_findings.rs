//! Minimal reproductions of the store bugs the fuzzers found (issue 4). They were found on the
//! store as of a2d3aa8; four of them were fixed on main meanwhile (bffa96f: pending removals
//! ignoring the namespace, the torn mark lost across sessions; 0c2eda8: removals may use the
//! spill reserve) and the fifth, the sequence-number wrap, by 21c1c95 (`Error::Exhausted`):
//! all are plain regression tests now. The bug the fuzzers found on main since (`close()`
//! failing with `Full` after a power cut) has only its fuzz input as a reproduction, in
//! `tests/fuzz_regressions.rs` (`bug_close_full_after_cut`, ignored).

use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Error, Key, Store};

type Sim = SimFlash<1024, 6, 4, 4>;

/// Fixed on main (bffa96f). Found by a `tests/fuzz_seeds` power_loss input (see `fuzz_regressions::bug_pending_other_ns`).
///
/// `Log::locate_many` treats a key with a pending deferred removal as removed in *every*
/// namespace (`is_pending(key)` ignores `want[i].0`). Compaction (`walk_live`) therefore sees
/// another client's record of the same key as dead, does not move it, and erases it: client B's
/// `remove_deferred(s-5)` destroys client A's `s-5`, durably, without any power cut.
#[test]
fn deferred_removal_in_one_namespace_does_not_lose_the_key_in_another() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    let mut s: Store<&mut Sim, 6> = block_on(Store::mount(&mut *flash, Config::new(256)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("a", "tcp://broker:1883")).unwrap();
    block_on(s.put(Key::sent(5), &[b"a-five"])).unwrap();
    block_on(s.close()).unwrap();

    block_on(s.open("b", "tcp://broker:1883")).unwrap();
    // B never had s-5: the deferred removal is a no-op for B's state...
    block_on(s.remove_deferred(Key::sent(5))).unwrap();
    // ...but B's traffic compacts the page holding A's s-5 while the removal is pending.
    let mut i = 0u32;
    while s.flash().stats().erases == 0 {
        block_on(s.put(Key::command(i % 4), &[&[7u8; 100]])).unwrap();
        i += 1;
    }
    block_on(s.close()).unwrap();

    block_on(s.open("a", "tcp://broker:1883")).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        block_on(s.get(Key::sent(5), &mut buf)).map(|v| v.to_vec()),
        Ok(b"a-five".to_vec()),
        "client a lost s-5 to client b's deferred removal"
    );
}

fn mount(flash: &mut Sim) -> Store<&mut Sim, 6> {
    let mut s: Store<&mut Sim, 6> = block_on(Store::mount(flash, Config::new(256)))
        .map_err(|e| e.1)
        .unwrap();
    block_on(s.open("a", "tcp://broker:1883")).unwrap();
    s
}

/// Fixed on main (bffa96f). Found by the `power_loss` fuzz target
/// (`fuzz_regressions::bug_torn_put_resurrected`).
///
/// A put torn by a power cut leaves a record with a valid tag and a bad CRC in the head page.
/// The next session scans the head page with CRC checks, so the key reads absent (correct), and
/// its first write resumes behind a Sync record. But `Log::mount` does not set `prev_torn` when
/// the head page it scanned had garbage skipped, so when a *later* session (after another
/// remount) opens the next page, that header says `prev_torn: false`. From then on the page is
/// scanned tags-only (no CRC checks, as for any non-head page whose successor does not flag it),
/// and the torn record counts as a complete put: the key the cut left absent comes back, and
/// `get` returns `Corrupted` for a key `keys()` lists.
#[test]
fn torn_put_stays_absent_after_later_page_switch() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    {
        let mut s = mount(&mut flash);
        block_on(s.put(Key::sent(1), &[&[1u8; 40]])).unwrap();
    }
    {
        // Power fails 40 bytes into the put of s-7: its tag is on flash, its CRC is not.
        flash.cut_power_after(Some(40));
        let mut s = mount(&mut flash);
        assert!(matches!(
            block_on(s.put(Key::sent(7), &[&[7u8; 200]])),
            Err(mqtt_persist::Error::Flash(_))
        ));
    }
    flash.restore_power();
    {
        // Recovery: s-7 is absent, and a write resumes behind a Sync record.
        let mut s = mount(&mut flash);
        assert_eq!(block_on(s.contains(Key::sent(7))), Ok(false));
        block_on(s.put(Key::sent(2), &[&[2u8; 16]])).unwrap();
    }
    {
        // A later session fills the page and opens the next one.
        let mut s = mount(&mut flash);
        let mut i = 10u16;
        while s.usage().log_pages < 2 {
            block_on(s.put(Key::sent(i), &[&[3u8; 100]])).unwrap();
            i += 1;
        }
    }
    let mut s = mount(&mut flash);
    let mut buf = [0u8; 300];
    assert_eq!(
        block_on(s.get(Key::sent(7), &mut buf)).map(|v| v.len()),
        Err(mqtt_persist::Error::NotFound),
        "the torn put of s-7 came back"
    );
}

/// Fixed on main (21c1c95: `Error::Exhausted`). Found by the `image` fuzz target
/// (`fuzz_regressions::bug_seq_wrap`). A sequence number this high takes 2^32 page switches,
/// far beyond any flash's endurance, so only a corrupted or crafted image gets there.
///
/// `Log::open_page` computed the next sequence number as `head_seq.wrapping_add(1).max(1)`. If
/// the newest header had `seq = u32::MAX`, the next page got `seq = 1`; at the next mount the
/// page with `u32::MAX` was still the newest, the new page was outside the log, and puts that
/// returned `Ok` were gone. Now the store refuses with `Exhausted`; every acknowledged put stays.
#[test]
fn acknowledged_puts_survive_when_sequence_numbers_run_out() {
    use mqtt_persist::codec::PageHeader;
    let mut flash = Sim::boxed();
    let header = PageHeader {
        seq: u32::MAX,
        tail_seq: u32::MAX,
        erase_count: 0,
        namespace: 0,
        id_high: 0,
        prev_torn: false,
    };
    flash.as_bytes_mut()[..32].copy_from_slice(&header.encode());
    let mut acked = Vec::new();
    {
        let mut s = mount(&mut flash);
        // Enough to need the next page.
        for i in 0..12u16 {
            match block_on(s.put(Key::sent(i + 1), &[&[i as u8; 100]])) {
                Ok(()) => acked.push(i),
                Err(mqtt_persist::Error::Exhausted) => {}
                Err(e) => panic!("put {i}: {e:?}"),
            }
        }
        assert!(
            acked.len() < 12,
            "the store never reported running out of sequence numbers"
        );
    }
    let mut s = mount(&mut flash);
    let mut buf = [0u8; 100];
    for i in acked {
        assert_eq!(
            block_on(s.get(Key::sent(i + 1), &mut buf)).map(|v| v.to_vec()),
            Ok(vec![i as u8; 100]),
            "an acknowledged put was lost"
        );
    }
}

/// Fixed on main (bffa96f). Found by the `power_loss` fuzz target
/// (`fuzz_regressions::bug_torn_page_scan_stops`): the
/// same missing `prev_torn` as [`torn_put_stays_absent_after_later_page_switch`], when the
/// interrupted write left a word that is not a valid tag. After a later page switch the page is
/// scanned tags-only, the scan stops at the garbage, `mount_report()` counts a damaged record
/// (for a plain power cut), and every record written behind the Sync record in that page is
/// lost: here `s-2`, a put that returned `Ok` after the recovery.
#[test]
fn records_behind_sync_survive_a_later_page_switch() {
    let mut flash = Sim::boxed();
    flash.set_ecc(true);
    {
        let mut s = mount(&mut flash);
        block_on(s.put(Key::sent(1), &[&[1u8; 40]])).unwrap();
    }
    // The next session's first write is a 16-byte Sync record behind the old end; power fails 2
    // bytes into the tag of the record after it: an invalid tag word at a record boundary.
    flash.cut_power_after(Some(16 + 2));
    {
        let mut s = mount(&mut flash);
        assert!(matches!(
            block_on(s.put(Key::sent(7), &[&[7u8; 100]])),
            Err(mqtt_persist::Error::Flash(_))
        ));
    }
    flash.restore_power();
    {
        let mut s = mount(&mut flash);
        assert_eq!(s.mount_report().damaged_records, 0);
        block_on(s.put(Key::sent(2), &[b"after the cut"])).unwrap();
    }
    {
        let mut s = mount(&mut flash);
        let mut i = 10u16;
        while s.usage().log_pages < 2 {
            block_on(s.put(Key::sent(i), &[&[3u8; 100]])).unwrap();
            i += 1;
        }
    }
    let mut s = mount(&mut flash);
    let report = s.mount_report();
    let mut buf = [0u8; 32];
    let got = block_on(s.get(Key::sent(2), &mut buf)).map(|v| v.to_vec());
    assert_eq!(
        (report.damaged_records, got),
        (0, Ok(b"after the cut".to_vec())),
        "power cut reported as damage / acknowledged put lost"
    );
}

/// Fixed on main (0c2eda8). Found by the `hooks` fuzz target (`fuzz_regressions::bug_remove_full`; the hooks only chose
/// the stored lengths, this is the plain store). `Store::remove` documents "Never fails with
/// `Error::Full`: every value's tombstone is reserved when it is put", but on 4 pages of 1 KiB
/// with `max_value_len` 784 (below `max_value_limit()`), after a few puts near capacity, a put
/// fails with `Full`, the same put then succeeds, the next put fails with `Full` again, and a
/// remove of an existing key fails with `Full`: the key cannot be removed at all.
#[test]
fn remove_never_fails_with_full() {
    type Small = SimFlash<1024, 4, 1, 1>;
    for ecc in [false, true] {
        let mut flash = Small::boxed();
        flash.set_ecc(ecc);
        // Found with max_value_len 784; the limit is lower since the space model counts one
        // dead continuation (DESIGN.md section 9): lengths above it are clamped to it.
        let max = Store::<&mut Small, 4>::max_value_limit();
        let mut s: Store<&mut Small, 4> = block_on(Store::mount(&mut *flash, Config::new(784.min(max))))
            .map_err(|e| e.1)
            .unwrap();
        block_on(s.open("dev-a", "tcp://broker:1883")).unwrap();
        let v = |n: usize| vec![0x5Au8; n.min(max)];
        let puts = [
            (Key::queued(0x2_0000), 365),
            (Key::command(0), 378),
            (Key::received(7), 670),
            (Key::command(0), 0),
            (Key::pubrel(1), 0),
            (Key::sent(1), 0),
            (Key::pubrel(1), 445),
        ];
        // A put may be refused only when it would exceed the capacity.
        let mut lens = std::collections::BTreeMap::new();
        let mut put = |s: &mut Store<&mut Small, 4>, k: Key, n: usize| match block_on(s.put(k, &[&v(n)])) {
            Ok(()) => {
                lens.insert(k, n);
            }
            Err(Error::Full) => {
                let u = s.usage();
                assert!(
                    u.live_bytes + u.damaged_bytes + s.charge_for(n.min(max)) > u.capacity_bytes,
                    "{k} {n}: {u:?}"
                );
            }
            Err(e) => panic!("{k}: {e:?}"),
        };
        for (k, n) in puts {
            put(&mut s, k, n);
        }
        assert_eq!(block_on(s.remove(Key::pubrel(1))), Ok(()));
        for (k, n) in [
            (Key::queued(5), 8),
            (Key::command(70_001), 99),
            (Key::command(70_000), 439),
        ] {
            put(&mut s, k, n);
        }
        // Near capacity: Full is a fair answer for these puts...
        let _ = block_on(s.put(Key::command(1), &[&v(337)]));
        let _ = block_on(s.put(Key::command(u32::MAX), &[&v(46)]));
        let _ = block_on(s.put(Key::command(u32::MAX), &[&v(46)]));
        let _ = block_on(s.put(Key::command(u32::MAX), &[&v(29)]));
        // ...but removing a key must always work.
        assert_eq!(
            block_on(s.remove(Key::received(7))),
            if lens.contains_key(&Key::received(7)) {
                Ok(())
            } else {
                Err(Error::NotFound)
            },
            "ecc={ecc}: usage {:?}",
            s.usage()
        );
    }
}
