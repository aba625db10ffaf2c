#![allow(dead_code, unused_imports)]
include!("../target/scratch/model_body.rs");

use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

fn fails(g: u8, ops: &[Op]) -> Option<String> {
    let r = std::panic::catch_unwind(|| match g {
        0 => run::<1024, 8, 4, 4>(true, Geo { max: 256, write: 4 }, ops),
        1 => run::<4096, 6, 4, 16>(true, Geo { max: 512, write: 16 }, ops),
        _ => run::<2048, 8, 1, 1>(false, Geo { max: 600, write: 1 }, ops),
    });
    match r {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e}")),
        Err(p) => Some(
            p.downcast_ref::<String>()
                .cloned()
                .or(p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
    }
}

fn category(msg: &str) -> String {
    let m = msg.rsplit_once(" at ").map(|x| x.0).unwrap_or(msg);
    let m = m.rsplit_once(": ").map(|x| x.1).unwrap_or(m);
    m.to_string()
}
fn filt(ops: Vec<Op>) -> Vec<Op> {
    let no = std::env::var("NO").unwrap_or_default();
    ops.into_iter()
        .filter(|o| !no.split(',').any(|n| !n.is_empty() && format!("{o:?}").starts_with(n)))
        .collect()
}

#[test]
fn minimize() {
    std::panic::set_hook(Box::new(|_| {}));
    let g: u8 = std::env::var("GEO").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut runner = TestRunner::deterministic();
    for attempt in 0..2000 {
        let mut ops = filt(ops_strategy().new_tree(&mut runner).unwrap().current());
        let Some(msg0) = fails(g, &ops) else { continue };
        let want = std::env::var("CAT").unwrap_or_default();
        if !category(&msg0).contains(&want) {
            eprintln!("skip {attempt}: {}", category(&msg0));
            continue;
        }
        eprintln!("attempt {attempt} fails: {msg0}");
        let cat = category(&msg0);
        let fails = |g, ops: &[Op]| fails(g, ops).filter(|m| category(m) == cat);
        // ddmin-ish: remove chunks
        let mut chunk = ops.len() / 2;
        while chunk >= 1 {
            let mut i = 0;
            let mut progress = false;
            while i < ops.len() {
                let mut cand = ops.clone();
                let end = (i + chunk).min(cand.len());
                cand.drain(i..end);
                if fails(g, &cand).is_some() {
                    ops = cand;
                    progress = true;
                } else {
                    i += chunk;
                }
            }
            if !progress {
                chunk /= 2;
            }
        }
        // shrink values
        for i in 0..ops.len() {
            if let Op::Put(k, v) = ops[i].clone() {
                for (len, style, cuts) in [
                    (0, v.style, vec![]),
                    (v.len / 2, v.style, vec![]),
                    (v.len, 2, vec![]),
                    (v.len, v.style, vec![]),
                ] {
                    let mut cand = ops.clone();
                    cand[i] = Op::Put(
                        k,
                        Val {
                            len,
                            style,
                            seed: v.seed,
                            cuts,
                        },
                    );
                    if fails(g, &cand).is_some() {
                        ops = cand;
                        break;
                    }
                }
            }
        }
        let msg = fails(g, &ops).unwrap();
        eprintln!("MINIMAL ({} ops): {msg}", ops.len());
        for op in &ops {
            match op {
                Op::Put(k, v) => eprintln!(
                    "  Put({k}, len {} style {} seed {} parts {})",
                    v.len,
                    v.style,
                    v.seed,
                    v.cuts.len() + 1
                ),
                o => eprintln!("  {o:?}"),
            }
        }
        return;
    }
    eprintln!("no failure found");
}
