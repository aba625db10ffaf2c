//! `mqtt-persist-inspect IMAGE --page-size 4096 --write-size 4 [--json]`
//!
//! Reads a flash image pulled off a device and prints what the store would see: every page
//! (state, sequence numbers, erase count, torn flag), every record (offset, type, key in Paho
//! form, length, CRC, live or dead), live/dead/free bytes per page and in total, and every piece
//! of corruption with its place. Built on the pure codec (`mqtt_persist::codec`) over the image
//! bytes; liveness follows the store's rules (newest event per namespace and key, in log order
//! from the tail page to the head page). Any input gives a report; only bad arguments or an
//! unreadable file give a non-zero exit.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::ExitCode;

use mqtt_persist::Key;
use mqtt_persist::codec::{
    Binding, HeaderState, PAGE_HEADER_LEN, PageHeader, RecordType, SYNC_MAGIC, Tag, TagError, full_id, le32,
    record_crc, stored_len,
};
use mqtt_persist::identity::{REGISTRY_NS, decode_entry};

const USAGE: &str =
    "usage: mqtt-persist-inspect IMAGE --page-size BYTES --write-size BYTES [--read-size BYTES] [--json]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut path = None;
    let mut page_size = None;
    let mut write_size = None;
    let mut read_size = Some(1);
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--page-size" => page_size = it.next().and_then(|v| v.parse::<usize>().ok()),
            "--write-size" => write_size = it.next().and_then(|v| v.parse::<usize>().ok()),
            "--read-size" => read_size = it.next().and_then(|v| v.parse::<usize>().ok()),
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if path.is_none() && !a.starts_with("--") => path = Some(a.clone()),
            _ => {
                eprintln!("unexpected argument {a:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(path), Some(page), Some(ws), Some(rs)) = (path, page_size, write_size, read_size) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let pow2_32 = |x: usize| x.is_power_of_two() && x <= 32;
    if !(256..=128 * 1024).contains(&page) || !page.is_multiple_of(32) || !pow2_32(ws) || !pow2_32(rs) {
        eprintln!(
            "unsupported geometry: page size must be 256..=131072 and a multiple of 32, write and read size powers of two up to 32"
        );
        return ExitCode::from(2);
    }
    // Records are aligned to max(READ_SIZE, WRITE_SIZE) (SPEC section 1).
    let ws = mqtt_persist::codec::alignment(rs, ws);
    let image = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    let report = inspect(&image, page, ws);
    if json {
        print!("{}", report.json());
    } else {
        print!("{}", report.text(&path));
    }
    ExitCode::SUCCESS
}

// ------------------------------------------------------------------------------------- analysis

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageState {
    Erased,
    Valid(PageHeader),
    UnknownVersion(u8),
    Garbage,
}

impl PageState {
    fn name(&self) -> &'static str {
        match self {
            PageState::Erased => "erased",
            PageState::Valid(_) => "valid",
            PageState::UnknownVersion(_) => "unknown-version",
            PageState::Garbage => "garbage",
        }
    }
}

#[derive(Debug, Clone)]
struct Record {
    off: usize,
    tag: Tag,
    stored: usize,
    crc_ok: bool,
    ns: u64,
    key: Option<Key>,
    /// Batch: the keys it removes.
    batch: Vec<Key>,
    /// Namespace / Retire / Origin / Sync payload, for display.
    detail: String,
    live: bool,
    /// For puts: the fragment chain is complete (else the put never happened).
    complete: bool,
    /// For puts: value length over all fragments.
    value_len: usize,
}

#[derive(Debug, Clone)]
struct Page {
    index: usize,
    state: PageState,
    in_log: bool,
    head: bool,
    /// Scanned with CRC checks (the head page, or a page the next header flags `prev_torn`).
    torn: bool,
    records: Vec<Record>,
    /// End of the written part (scan end).
    end: usize,
    live: usize,
    dead: usize,
    free: usize,
}

#[derive(Debug, Clone)]
struct Finding {
    page: usize,
    off: Option<usize>,
    /// Damage loses data; the rest (interrupted writes, stale pages) is what power cuts leave.
    damage: bool,
    what: String,
}

struct Report {
    page_size: usize,
    write_size: usize,
    image_len: usize,
    pages: Vec<Page>,
    head: Option<usize>,
    tail_seq: u32,
    head_seq: u32,
    findings: Vec<Finding>,
    /// Live keys per namespace, in log order of their put.
    live_keys: BTreeMap<u64, Vec<(Key, usize)>>,
    /// The identity registry: client id, server URI and truncation per namespace.
    names: BTreeMap<u64, (String, String, bool)>,
}

fn kind_hi(ctx: &(u64, u16, u16), kind: mqtt_persist::Kind) -> u16 {
    match kind {
        mqtt_persist::Kind::Command => ctx.1,
        mqtt_persist::Kind::Queued => ctx.2,
        _ => 0,
    }
}

fn key_of(kind: mqtt_persist::Kind, id_low: u16, ctx: &(u64, u16, u16)) -> Option<Key> {
    Key::new(kind, full_id(kind, id_low, kind_hi(ctx, kind)))
}

/// What the record's CRC covers before its tag in this context (SPEC section 4).
fn binding_of(tag: Tag, ctx: &(u64, u16, u16)) -> Binding {
    let key = match tag.ty {
        RecordType::Put(_) | RecordType::Tombstone => tag.kind().and_then(|k| key_of(k, tag.id_low, ctx)),
        _ => None,
    };
    Binding::of(tag.ty, ctx.0, key.map_or(0, |k| k.id()))
}

fn type_name(ty: RecordType) -> &'static str {
    match ty {
        RecordType::Put(_) => "put",
        RecordType::Cont => "cont",
        RecordType::Tombstone => "tombstone",
        RecordType::Batch => "batch",
        RecordType::Clear => "clear",
        RecordType::IdHigh => "id-high",
        RecordType::Namespace => "namespace",
        RecordType::Retire => "retire",
        RecordType::Origin => "origin",
        RecordType::Sync => "sync",
    }
}

fn inspect(image: &[u8], page: usize, ws: usize) -> Report {
    let n = image.len() / page;
    let mut findings = Vec::new();
    if !image.len().is_multiple_of(page) {
        findings.push(Finding {
            page: n,
            off: None,
            damage: true,
            what: format!(
                "image length {} is not a multiple of the page size: the last {} bytes are ignored",
                image.len(),
                image.len() % page
            ),
        });
    }
    let bytes = |p: usize| &image[p * page..(p + 1) * page];
    let mut pages: Vec<Page> = (0..n)
        .map(|p| {
            let hb: &[u8; PAGE_HEADER_LEN] = bytes(p)[..PAGE_HEADER_LEN].try_into().unwrap();
            let state = match PageHeader::decode(hb) {
                HeaderState::Erased => PageState::Erased,
                HeaderState::Valid(h) => PageState::Valid(h),
                HeaderState::UnknownVersion(v) => PageState::UnknownVersion(v),
                HeaderState::Garbage => PageState::Garbage,
            };
            Page {
                index: p,
                state,
                in_log: false,
                head: false,
                torn: false,
                records: Vec::new(),
                end: PAGE_HEADER_LEN,
                live: 0,
                dead: 0,
                free: 0,
            }
        })
        .collect();
    let header = |pages: &[Page], p: usize| match pages[p].state {
        PageState::Valid(h) => Some(h),
        _ => None,
    };
    for p in &pages {
        if let PageState::UnknownVersion(v) = p.state {
            findings.push(Finding {
                page: p.index,
                off: None,
                damage: true,
                what: format!("header of format version {v}: the store refuses to mount this image"),
            });
        }
    }
    let newest = (0..n)
        .filter_map(|p| header(&pages, p).map(|h| (h.seq, p)))
        .max_by_key(|&(seq, p)| (seq, std::cmp::Reverse(p)));
    let mut report = Report {
        page_size: page,
        write_size: ws,
        image_len: image.len(),
        pages: Vec::new(),
        head: None,
        tail_seq: 0,
        head_seq: 0,
        findings: Vec::new(),
        live_keys: BTreeMap::new(),
        names: BTreeMap::new(),
    };
    let Some((head_seq, head)) = newest else {
        for p in &mut pages {
            account_outside(p, page);
        }
        report.pages = pages;
        report.findings = findings;
        return report;
    };
    let hh = header(&pages, head).unwrap();

    // The head page first (every CRC checked): its Retire records bound the log.
    pages[head].head = true;
    pages[head].torn = true;
    scan(&mut pages[head], bytes(head), hh, ws, &mut findings);
    let mut retired = hh.tail_seq;
    for r in &pages[head].records {
        if r.tag.ty == RecordType::Retire
            && r.crc_ok
            && let Ok(seq) = r.detail.trim_start_matches("page seq ").parse::<u32>()
        {
            retired = retired.max(seq.saturating_add(1));
        }
    }
    let tail_seq = retired.min(head_seq).max(head_seq.saturating_sub(n as u32 - 1));
    let len = (head_seq - tail_seq + 1) as usize;
    report.head = Some(head);
    report.head_seq = head_seq;
    report.tail_seq = tail_seq;

    // Log pages from the tail to the head.
    let ring_back = |d: usize| (head + n - d % n) % n;
    let mut order = Vec::new();
    for d in (0..len).rev() {
        let p = ring_back(d);
        let expect = head_seq - d as u32;
        pages[p].in_log = true;
        if d > 0 {
            match header(&pages, p).filter(|h| h.seq == expect) {
                Some(h) => {
                    let succ = header(&pages, (p + 1) % n);
                    pages[p].torn = succ.is_some_and(|s| s.seq == expect.wrapping_add(1) && s.prev_torn);
                    scan(&mut pages[p], bytes(p), h, ws, &mut findings);
                }
                None => {
                    findings.push(Finding {
                        page: p,
                        off: None,
                        damage: true,
                        what: format!(
                            "page should hold log sequence {expect} but its header is {}: its records are lost",
                            match pages[p].state {
                                PageState::Valid(h) => format!("seq {}", h.seq),
                                s => s.name().to_string(),
                            }
                        ),
                    });
                    pages[p].dead = page;
                    continue;
                }
            }
        }
        order.push(p);
    }
    for p in &mut pages {
        if !p.in_log && !p.head {
            account_outside(p, page);
            if p.state == PageState::Garbage {
                findings.push(Finding {
                    page: p.index,
                    off: None,
                    damage: false,
                    what: "garbage outside the log (a torn erase or stale data): erased before reuse".into(),
                });
            }
        }
    }

    // Fragment chains: a put counts only if all its fragments are there.
    let chain_of = |pages: &[Page], pi: usize, ri: usize| -> Option<(usize, Vec<(usize, usize)>)> {
        let first = &pages[order[pi]].records[ri];
        let mut frags = vec![(order[pi], ri)];
        let mut len = first.tag.data_len();
        let (mut opi, mut cur) = (pi, ri);
        let mut more = first.tag.more;
        let mut index = 1u16;
        while more {
            let pg = &pages[order[opi]];
            let r = &pg.records[cur];
            let end = r.off + r.stored;
            // SPEC section 7: the next fragment is in the same page unless at most 8 bytes are
            // left there, then at the start of the next log page (never after the head page).
            let readable = if pg.head { pg.end } else { page };
            let next = if page - end > 8 {
                if end + 4 > readable {
                    None
                } else {
                    pg.records.get(cur + 1).filter(|n| n.off == end).map(|_| (opi, cur + 1))
                }
            } else if pg.head {
                None
            } else if opi + 1 < order.len()
                && order[opi + 1] == (order[opi] + 1) % n
                && pages[order[opi + 1]]
                    .records
                    .first()
                    .is_some_and(|r| r.off == PAGE_HEADER_LEN)
            {
                Some((opi + 1, 0))
            } else {
                None
            };
            let (npi, nri) = next?;
            let nr = &pages[order[npi]].records[nri];
            if nr.tag.ty != RecordType::Cont || nr.tag.id_low != index || (pages[order[npi]].torn && !nr.crc_ok) {
                return None;
            }
            index = index.wrapping_add(1);
            len += nr.tag.data_len();
            frags.push((order[npi], nri));
            more = nr.tag.more;
            (opi, cur) = (npi, nri);
        }
        Some((len, frags))
    };

    // Newest event first: the first event met for a (namespace, key) decides it.
    let mut decided: BTreeSet<(u64, Key)> = BTreeSet::new();
    let mut cleared: BTreeSet<u64> = BTreeSet::new();
    let mut live_frags: Vec<(usize, usize)> = Vec::new();
    let mut live_puts: Vec<(usize, usize, u64, Key, usize)> = Vec::new();
    let mut names: BTreeMap<u64, (String, String, bool)> = BTreeMap::new();
    for pi in (0..order.len()).rev() {
        let p = order[pi];
        for ri in (0..pages[p].records.len()).rev() {
            let r = pages[p].records[ri].clone();
            match r.tag.ty {
                RecordType::Put(_) => {
                    let Some(k) = r.key else { continue };
                    let chain = chain_of(&pages, pi, ri);
                    let rec = &mut pages[p].records[ri];
                    rec.complete = chain.is_some();
                    let Some((len, frags)) = chain else { continue };
                    rec.value_len = len;
                    if cleared.contains(&r.ns) || !decided.insert((r.ns, k)) {
                        continue;
                    }
                    rec.live = true;
                    if r.ns == REGISTRY_NS {
                        // An identity registry entry (SPEC section 10.3): its value, whole.
                        let bytes: Vec<u8> = frags
                            .iter()
                            .flat_map(|&(fp, fri)| {
                                let f = &pages[fp].records[fri];
                                let at = pages[fp].index * page + f.off + 4;
                                image.get(at..at + f.tag.data_len()).unwrap_or(&[]).to_vec()
                            })
                            .collect();
                        if let Some((ns, n)) = decode_entry(&bytes) {
                            names.insert(ns, (n.client_id.into(), n.server_uri.into(), n.truncated));
                        }
                    }
                    live_frags.extend(frags);
                    live_puts.push((pi, ri, r.ns, k, len));
                }
                RecordType::Tombstone => {
                    if let Some(k) = r.key {
                        decided.insert((r.ns, k));
                    }
                }
                RecordType::Batch => {
                    for k in r.batch {
                        decided.insert((r.ns, k));
                    }
                }
                RecordType::Clear => {
                    cleared.insert(r.ns);
                }
                _ => {}
            }
        }
    }
    for &(p, ri) in &live_frags {
        pages[p].records[ri].live = true;
    }
    for r in pages.iter().flat_map(|p| p.records.iter().map(move |r| (p, r))) {
        let (p, r) = r;
        if !r.crc_ok && matches!(r.tag.ty, RecordType::Put(_) | RecordType::Cont) {
            let what = if r.live {
                "fails its CRC: get returns Corrupted"
            } else {
                "fails its CRC (superseded, harmless)"
            };
            findings.push(Finding {
                page: p.index,
                off: Some(r.off),
                damage: r.live,
                what: format!("{} {} {what}", type_name(r.tag.ty), record_key(r)),
            });
        }
    }
    live_puts.reverse();
    for (_, _, ns, k, len) in live_puts {
        report.live_keys.entry(ns).or_default().push((k, len));
    }
    report.names = names;
    for &p in &order {
        let pg = &mut pages[p];
        let live: usize = pg.records.iter().filter(|r| r.live).map(|r| r.stored).sum();
        pg.live = live;
        pg.free = if pg.head { page - pg.end } else { 0 };
        pg.dead = page - live - pg.free;
    }
    report.pages = pages;
    findings.sort_by_key(|f| (f.page, f.off));
    report.findings = findings;
    report
}

fn account_outside(p: &mut Page, page: usize) {
    if p.state == PageState::Erased && !p.head {
        p.free = page;
    } else {
        p.dead = page;
    }
}

/// Walks a page's records like the store's scanner: in a torn page every CRC is checked and
/// garbage is skipped up to a Sync record; elsewhere an invalid tag ends the page (damage).
fn scan(pg: &mut Page, b: &[u8], h: PageHeader, ws: usize, findings: &mut Vec<Finding>) {
    let page = b.len();
    let mut ctx = (h.namespace, h.id_high, h.id_high);
    let mut off = PAGE_HEADER_LEN;
    let sync_word = Tag::new(RecordType::Sync, false, 8, 0).encode();
    let find_sync = |from: usize| -> Option<usize> {
        let sync_len = stored_len(8, ws);
        let mut at = from.div_ceil(ws) * ws;
        while at + sync_len <= page {
            if le32(&b[at..at + 4]) == sync_word
                && le32(&b[at + 4..at + 8]) == SYNC_MAGIC
                && le32(&b[at + 8..at + 12]) == h.seq
                && le32(&b[at + 12..at + 16]) == record_crc(&Binding::NONE, sync_word, &[&b[at + 4..at + 12]])
            {
                return Some(at);
            }
            at += ws;
        }
        None
    };
    while off + 4 <= page {
        let word = le32(&b[off..off + 4]);
        let decoded = match Tag::decode(word) {
            Ok(t) if off + stored_len(t.data_len(), ws) <= page => Ok(t),
            Ok(_) => Err(TagError::Invalid),
            Err(e) => Err(e),
        };
        let tag = match decoded {
            Ok(t) => {
                let len = t.data_len();
                let crc_ok = le32(&b[off + 4 + len..off + 8 + len])
                    == record_crc(&binding_of(t, &ctx), word, &[&b[off + 4..off + 4 + len]]);
                if crc_ok || !pg.torn {
                    if !crc_ok && !matches!(t.ty, RecordType::Put(_) | RecordType::Cont) {
                        findings.push(Finding {
                            page: pg.index,
                            off: Some(off),
                            damage: true,
                            what: format!("{} record fails its CRC", type_name(t.ty)),
                        });
                    }
                    Some((t, crc_ok))
                } else {
                    None
                }
            }
            Err(_) => None,
        };
        let Some((tag, crc_ok)) = tag else {
            let erased = word == u32::MAX;
            if !pg.torn && !erased {
                findings.push(Finding {
                    page: pg.index,
                    off: Some(off),
                    damage: true,
                    what: format!("invalid record tag {word:#010x}: the rest of the page is lost to the store"),
                });
                break;
            }
            match find_sync(off + ws) {
                Some(at) => {
                    if !erased || b[off..at].iter().any(|&x| x != 0xFF) {
                        findings.push(Finding {
                            page: pg.index,
                            off: Some(off),
                            damage: false,
                            what: format!(
                                "interrupted write: {} bytes skipped, writing resumed behind a Sync record at {at}",
                                at - off
                            ),
                        });
                    }
                    off = at;
                    continue;
                }
                None => {
                    if !erased {
                        findings.push(Finding {
                            page: pg.index,
                            off: Some(off),
                            damage: false,
                            what: "interrupted write: garbage up to the end of the page (torn tail)".into(),
                        });
                    }
                    break;
                }
            }
        };
        let len = tag.data_len();
        let data = &b[off + 4..off + 4 + len];
        let mut rec = Record {
            off,
            tag,
            stored: stored_len(len, ws),
            crc_ok,
            ns: ctx.0,
            key: None,
            batch: Vec::new(),
            detail: String::new(),
            live: false,
            complete: true,
            value_len: len,
        };
        match tag.ty {
            RecordType::Put(kind) => rec.key = key_of(kind, tag.id_low, &ctx),
            RecordType::Tombstone => rec.key = tag.kind().and_then(|k| key_of(k, tag.id_low, &ctx)),
            RecordType::Batch => {
                // Base id, then a bitmap: bit i of byte j removes base + 8j + i (SPEC, 0x8).
                let base = le32(&data[0..4]);
                if let Some(kind) = tag.kind() {
                    rec.batch = data[4..]
                        .iter()
                        .enumerate()
                        .flat_map(|(j, &byte)| {
                            (0..8u32)
                                .filter(move |i| byte & (1 << i) != 0)
                                .map(move |i| 8 * j as u32 + i)
                        })
                        .filter_map(|i| Key::new(kind, base.wrapping_add(i)))
                        .collect();
                }
            }
            RecordType::IdHigh => {
                match tag.kind() {
                    Some(mqtt_persist::Kind::Command) => ctx.1 = tag.id_low,
                    _ => ctx.2 = tag.id_low,
                }
                rec.detail = format!("{}- high bits {}", tag.kind().map_or("?", |k| k.prefix()), tag.id_low);
            }
            RecordType::Namespace => {
                ctx.0 = u64::from_le_bytes(data[0..8].try_into().unwrap());
                rec.detail = format!("ns {:#018x}", ctx.0);
            }
            RecordType::Retire => rec.detail = format!("page seq {}", le32(&data[0..4])),
            RecordType::Origin => {
                let seq = le32(&data[0..4]);
                rec.detail = if seq == u32::MAX {
                    "end of moved run".into()
                } else {
                    format!("moved from page seq {seq}, ordinal {}", le32(&data[4..8]))
                };
            }
            RecordType::Sync => rec.detail = format!("page seq {}", le32(&data[4..8])),
            _ => {}
        }
        off += rec.stored;
        pg.records.push(rec);
    }
    pg.end = off.min(page);
}

// ----------------------------------------------------------------------------------------- output

fn record_key(r: &Record) -> String {
    match (r.key, r.tag.ty) {
        (Some(k), _) => k.to_string(),
        (None, RecordType::Batch) => r.batch.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(","),
        (None, RecordType::Cont) => format!("fragment {}", r.tag.id_low),
        _ => String::new(),
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl Report {
    fn totals(&self) -> (usize, usize, usize, usize) {
        let live = self.pages.iter().map(|p| p.live).sum();
        let dead = self.pages.iter().map(|p| p.dead).sum();
        let free = self.pages.iter().map(|p| p.free).sum();
        let records = self.pages.iter().map(|p| p.records.len()).sum();
        (live, dead, free, records)
    }

    fn text(&self, path: &str) -> String {
        let mut o = String::new();
        let n = self.pages.len();
        let _ = writeln!(
            o,
            "{path}: {} bytes, {n} pages of {} bytes, record alignment {} B",
            self.image_len, self.page_size, self.write_size
        );
        match self.head {
            Some(h) => {
                let _ = writeln!(
                    o,
                    "log: seq {}..={} ({} pages), head page {h}",
                    self.tail_seq,
                    self.head_seq,
                    self.head_seq - self.tail_seq + 1
                );
            }
            None => {
                let _ = writeln!(o, "log: empty (no valid page header)");
            }
        }
        for p in &self.pages {
            let role = if p.head {
                " [head]"
            } else if p.in_log {
                " [log]"
            } else if matches!(p.state, PageState::Valid(_)) {
                " [stale: outside the log]"
            } else {
                ""
            };
            match p.state {
                PageState::Valid(h) => {
                    let _ = writeln!(
                        o,
                        "page {}: valid seq={} tail_seq={} erase_count={} prev_torn={} ns={:#018x}{role}{}",
                        p.index,
                        h.seq,
                        h.tail_seq,
                        h.erase_count,
                        h.prev_torn,
                        h.namespace,
                        if p.torn && p.in_log { " (CRC-checked)" } else { "" }
                    );
                }
                PageState::UnknownVersion(v) => {
                    let _ = writeln!(o, "page {}: unknown-version {v}{role}", p.index);
                }
                s => {
                    let _ = writeln!(o, "page {}: {}{role}", p.index, s.name());
                }
            }
            for r in &p.records {
                let status = match r.tag.ty {
                    RecordType::Put(_) | RecordType::Cont if r.live => "live",
                    RecordType::Put(_) if !r.complete => "dead (incomplete chain)",
                    _ => "dead",
                };
                let mut line = format!(
                    "  @{:<6} {:<9} {:<14} len {:<5} stored {:<5} crc {} {status}",
                    r.off,
                    type_name(r.tag.ty),
                    record_key(r),
                    r.tag.data_len(),
                    r.stored,
                    if r.crc_ok { "ok " } else { "BAD" },
                );
                if r.tag.more {
                    line.push_str(" more");
                }
                if !r.detail.is_empty() {
                    let _ = write!(line, " ({})", r.detail);
                }
                let _ = writeln!(o, "{}", line.trim_end());
            }
            let _ = writeln!(o, "  bytes: live {} dead {} free {}", p.live, p.dead, p.free);
        }
        let (live, dead, free, records) = self.totals();
        let _ = writeln!(o, "total: {records} records; bytes live {live} dead {dead} free {free}");
        for (ns, keys) in &self.live_keys {
            let list: Vec<String> = keys.iter().map(|(k, len)| format!("{k} ({len} bytes)")).collect();
            let _ = writeln!(o, "live keys ns {ns:#018x} ({}): {}", keys.len(), list.join(", "));
        }
        if self.live_keys.is_empty() {
            let _ = writeln!(o, "live keys: none");
        }
        for (ns, keys) in self.live_keys.iter().filter(|(ns, _)| **ns != REGISTRY_NS) {
            let bytes: usize = keys.iter().map(|k| k.1).sum();
            let name = match self.names.get(ns) {
                Some((c, u, t)) => format!("client {c:?} server {u:?}{}", if *t { " (truncated)" } else { "" }),
                None => "unnamed (no registry entry)".into(),
            };
            let _ = writeln!(o, "identity ns {ns:#018x}: {name}, {} keys, {bytes} bytes", keys.len());
        }
        if self.findings.is_empty() {
            let _ = writeln!(o, "corruption: none");
        } else {
            let damage = self.findings.iter().filter(|f| f.damage).count();
            let _ = writeln!(
                o,
                "corruption: {damage} damaged, {} from interrupted operations",
                self.findings.len() - damage
            );
            for f in &self.findings {
                let at = f.off.map_or(String::new(), |o| format!(" @{o}"));
                let _ = writeln!(
                    o,
                    "  page {}{at}: {}: {}",
                    f.page,
                    if f.damage { "DAMAGE" } else { "interrupted" },
                    f.what
                );
            }
        }
        o
    }

    fn json(&self) -> String {
        let mut o = String::new();
        let _ = write!(
            o,
            "{{\"image_bytes\":{},\"page_size\":{},\"write_size\":{},\"page_count\":{},",
            self.image_len,
            self.page_size,
            self.write_size,
            self.pages.len()
        );
        match self.head {
            Some(h) => {
                let _ = write!(
                    o,
                    "\"log\":{{\"head_page\":{h},\"tail_seq\":{},\"head_seq\":{}}},",
                    self.tail_seq, self.head_seq
                );
            }
            None => o.push_str("\"log\":null,"),
        }
        o.push_str("\"pages\":[");
        for (i, p) in self.pages.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let _ = write!(
                o,
                "{{\"index\":{},\"state\":{},\"in_log\":{},\"head\":{},\"crc_checked\":{},",
                p.index,
                json_str(p.state.name()),
                p.in_log,
                p.head,
                p.torn
            );
            match p.state {
                PageState::Valid(h) => {
                    let _ = write!(
                        o,
                        "\"seq\":{},\"tail_seq\":{},\"erase_count\":{},\"prev_torn\":{},\"namespace\":{},",
                        h.seq,
                        h.tail_seq,
                        h.erase_count,
                        h.prev_torn,
                        json_str(&format!("{:#018x}", h.namespace))
                    );
                }
                PageState::UnknownVersion(v) => {
                    let _ = write!(o, "\"version\":{v},");
                }
                _ => {}
            }
            let _ = write!(
                o,
                "\"live_bytes\":{},\"dead_bytes\":{},\"free_bytes\":{},\"records\":[",
                p.live, p.dead, p.free
            );
            for (j, r) in p.records.iter().enumerate() {
                if j > 0 {
                    o.push(',');
                }
                let _ = write!(
                    o,
                    "{{\"offset\":{},\"type\":{},\"key\":{},\"len\":{},\"stored\":{},\"more\":{},\"crc_ok\":{},\"live\":{},\"complete\":{},\"namespace\":{},\"detail\":{}}}",
                    r.off,
                    json_str(type_name(r.tag.ty)),
                    json_str(&record_key(r)),
                    r.tag.data_len(),
                    r.stored,
                    r.tag.more,
                    r.crc_ok,
                    r.live,
                    r.complete,
                    json_str(&format!("{:#018x}", r.ns)),
                    json_str(&r.detail)
                );
            }
            o.push_str("]}");
        }
        let (live, dead, free, records) = self.totals();
        let _ = write!(
            o,
            "],\"totals\":{{\"records\":{records},\"live_bytes\":{live},\"dead_bytes\":{dead},\"free_bytes\":{free}}},\"live_keys\":["
        );
        let mut first = true;
        for (ns, keys) in &self.live_keys {
            for (k, len) in keys {
                if !first {
                    o.push(',');
                }
                first = false;
                let _ = write!(
                    o,
                    "{{\"namespace\":{},\"key\":{},\"len\":{len}}}",
                    json_str(&format!("{ns:#018x}")),
                    json_str(&k.to_string())
                );
            }
        }
        o.push_str("],\"identities\":[");
        for (i, (ns, keys)) in self.live_keys.iter().filter(|(ns, _)| **ns != REGISTRY_NS).enumerate() {
            let (c, u, t) = self
                .names
                .get(ns)
                .map_or((None, None, false), |(c, u, t)| (Some(c), Some(u), *t));
            let js = |v: Option<&String>| v.map_or("null".to_string(), |v| json_str(v));
            let _ = write!(
                o,
                "{}{{\"namespace\":{},\"client_id\":{},\"server_uri\":{},\"truncated\":{t},\"keys\":{}}}",
                if i > 0 { "," } else { "" },
                json_str(&format!("{ns:#018x}")),
                js(c),
                js(u),
                keys.len()
            );
        }
        o.push_str("],\"corruption\":[");
        for (i, f) in self.findings.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let _ = write!(
                o,
                "{{\"page\":{},\"offset\":{},\"damage\":{},\"what\":{}}}",
                f.page,
                f.off.map_or("null".to_string(), |x| x.to_string()),
                f.damage,
                json_str(&f.what)
            );
        }
        o.push_str("]}\n");
        o
    }
}
