//! The QEMU figures for BENCHMARKS.md: `bash scripts/qemu.sh` runs the qemu/ binary on a
//! Cortex-M0 and a Cortex-M4F and writes what it prints to target/qemu-stack-m0.txt and
//! target/qemu-stack-m4.txt; `flash_compare` reads them here (like target/code-size.txt).

use std::fmt::Write;

/// The two runs' output, if `scripts/qemu.sh` ran.
fn runs() -> Option<(String, String)> {
    let m0 = std::fs::read_to_string("target/qemu-stack-m0.txt").ok()?;
    let m4 = std::fs::read_to_string("target/qemu-stack-m4.txt").ok()?;
    Some((m0, m4))
}

/// The number in `<kind> <name>: <N> B` (`kind` is `stack`, `future` or `struct`).
fn figure(out: &str, kind: &str, name: &str) -> Option<u64> {
    let prefix = format!("{kind} {name}: ");
    let line = out.lines().find(|l| l.starts_with(&prefix))?;
    line[prefix.len()..].split(' ').next()?.parse().ok()
}

/// Store and outbox operations, then sequential-storage's, as the binary names them.
const OURS: [&str; 13] = [
    "mount",
    "put",
    "get",
    "remove",
    "remove_deferred",
    "flush",
    "keys",
    "clear",
    "contains",
    "outbox_restore",
    "outbox_publish",
    "outbox_next_transmit",
    "outbox_puback",
];
const THEIRS: [&str; 6] = [
    "ss_queue_push",
    "ss_queue_peek",
    "ss_queue_pop",
    "ss_map_store_item",
    "ss_map_fetch_item",
    "ss_map_remove_item",
];

/// The BENCHMARKS.md section.
pub fn section() -> String {
    let mut md = String::from(
        "\n### Peak stack per operation on Cortex-M0 and Cortex-M4F (QEMU, blocking facade, release; `bash scripts/qemu.sh`)\n\n",
    );
    let Some((m0, m4)) = runs() else {
        md.push_str("Not measured in this run: run `bash scripts/qemu.sh` first.\n");
        return md;
    };
    md.push_str(
        "Measured on the instruction set by painting the stack (docs/DESIGN.md section 22): each\n\
         operation runs through the blocking facade (`Blocking`, `block_on`) and the figure is the\n\
         deepest word it overwrote below its caller, the maximum over every call of the run (churn\n\
         with compaction, removals, clear, the outbox cycle). M0: `thumbv6m-none-eabi` on QEMU's\n\
         micro:bit, 8 pages of 512 B, values up to 64 B (the SoC's SRAM raised to 64 KiB: the\n\
         figures do not fit the real 16 KiB). M4F: `thumbv7em-none-eabihf` on the MPS2 AN386, 16\n\
         pages of 4 KiB, values up to 512 B. Futures: `size_of_val` before the first poll, 32-bit.\n\
         sequential-storage 8 runs the same kind of workload on the same simulated flash, with the\n\
         caches of the tables above (its key-pointer cache: 8 entries).\n\n\
         | operation | M0 peak stack B | M4F peak stack B | future B (M4F) |\n|---|---|---|---|\n",
    );
    let v = |out: &str, kind: &str, name: &str| figure(out, kind, name).map_or("-".into(), |x| x.to_string());
    for name in OURS.iter().chain(&THEIRS) {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} |",
            v(&m0, "stack", name),
            v(&m4, "stack", name),
            v(&m4, "future", name)
        );
    }
    let structs = |out: &str| {
        out.lines()
            .filter(|l| l.starts_with("struct "))
            .map(|l| l.trim_start_matches("struct ").to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(md, "\nStructs, M0: {}; M4F: {}.", structs(&m0), structs(&m4));
    md
}

/// `(name, value, goal, met)` for the Targets block: the deepest store operation and the
/// largest store future on thumbv7em (goals of issue 10 point 1).
pub fn targets() -> Vec<(String, String, &'static str, Option<bool>)> {
    let Some((_, m4)) = runs() else {
        return vec![(
            "peak stack of every store operation (thumbv7em, QEMU)".into(),
            "run bash scripts/qemu.sh".into(),
            "<= 1536 B",
            None,
        )];
    };
    let deepest = OURS[..9]
        .iter()
        .filter_map(|n| Some((*n, figure(&m4, "stack", n)?)))
        .max_by_key(|&(_, b)| b);
    let largest = OURS[..9]
        .iter()
        .filter_map(|n| Some((*n, figure(&m4, "future", n)?)))
        .max_by_key(|&(_, b)| b);
    let mut out = Vec::new();
    if let Some((name, b)) = deepest {
        out.push((
            "peak stack of every store operation (thumbv7em, QEMU, blocking facade)".into(),
            format!("{b} B ({name})"),
            "<= 1536 B",
            Some(b <= 1536),
        ));
    }
    if let Some((name, b)) = largest {
        out.push((
            "largest store future (thumbv7em)".into(),
            format!("{b} B ({name})"),
            "<= 1024 B",
            Some(b <= 1024),
        ));
    }
    out
}
