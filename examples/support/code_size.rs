//! The code-size figures `scripts/code_size.sh` writes to `target/code-size.txt` (docs/DESIGN.md
//! section 25): the store's target line and the outbox and mqttrust adapter figures, reported
//! beside it.

/// The store's goal (issue 10 item 2): put, get, remove and keys on thumbv7em, opt-level "s",
/// LTO, at most 12 KiB; 10 KiB is the aim.
pub const GOAL: u64 = 12 * 1024;
/// What the store's figure aims at below the goal.
pub const AIM: u64 = 10 * 1024;

/// A figure from `target/code-size.txt`, if `scripts/code_size.sh` ran.
pub fn figure(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("target/code-size.txt").ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.trim().strip_prefix('='))
                .map(|v| v.trim().to_string())
        })?
        .parse()
        .ok()
}

/// The `target` lines: the store against its goal, the outbox and the mqttrust adapter reported
/// (no goal of their own: `met` stands for "measured").
pub fn targets() -> Vec<(String, String, String, Option<bool>)> {
    let store = "store .text (put/get/remove/keys, thumbv7em s LTO)".to_string();
    let Some(t) = figure("mqtt_persist_text") else {
        return vec![(store, "run scripts/code_size.sh".into(), format!("{GOAL} B"), None)];
    };
    let mut v = vec![(
        store,
        format!("{t} B (aim {AIM} B; .text + .rodata beyond the baseline, mount and open included)"),
        format!("{GOAL} B"),
        Some(t <= GOAL),
    )];
    if let (Some(o), Some(ob)) = (figure("outbox_text"), figure("outbox_beyond_store_text")) {
        v.push((
            "outbox .text (restore/publish/next_transmit/on_puback, thumbv7em s LTO)".into(),
            format!("{o} B with the store code it calls, {ob} B beyond the store program"),
            "reported separately".into(),
            Some(true),
        ));
    }
    if let (Some(m), Some(mb)) = (figure("mqttrust_text"), figure("mqttrust_beyond_outbox_text")) {
        v.push((
            "mqttrust adapter .text (SharedOutbox::drain via MqttrustClient, thumbv7em s LTO)".into(),
            format!(
                "{m} B with the outbox and store, {mb} B beyond the outbox program (mqttrust's client side included)"
            ),
            "reported separately".into(),
            Some(true),
        ));
    }
    v
}
