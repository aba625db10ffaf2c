//! `FileFlash` takes an exclusive lock on its image: a second process opening the same image
//! gets `ResourceBusy` with `ImageLocked` (with `open`, `create` and `open_or_create`, none of
//! which changes the image), and gets the image once the first has dropped it.
//!
//! The second process is this test binary run again for the ignored test `child_process`,
//! told what to do by environment variables; it prints one `CHILD-RESULT:` line.

#![cfg(feature = "std")]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use mqtt_persist::file_flash::{FileFlash, ImageLocked};
use mqtt_persist::flash::block_on;
use mqtt_persist::{Config, Key, Store};

type Flash = FileFlash<1024, 4, 4>;
const PAGES: usize = 8;
const ENV_IMAGE: &str = "MQTT_PERSIST_LOCK_CHILD_IMAGE";
const ENV_OP: &str = "MQTT_PERSIST_LOCK_CHILD_OP";

fn image_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("mqtt-persist-lock-{name}-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Starts the second process on `image` with `op`.
fn spawn_child(image: &Path, op: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_IMAGE, image)
        .env(ENV_OP, op)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Runs the second process to completion and returns its result line.
fn run_child(image: &Path, op: &str) -> String {
    let mut child = spawn_child(image, op);
    drop(child.stdin.take());
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(child.wait().unwrap().success(), "child failed: {out}");
    result_line(&out)
}

fn result_line(out: &str) -> String {
    // The harness prints `test child_process ... ` before the test's own output.
    out.lines()
        .find_map(|l| l.split_once("CHILD-RESULT: ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result line in {out:?}"))
        .to_string()
}

fn mount(flash: Flash) -> Store<Flash, PAGES> {
    let mut store = block_on(Store::mount(flash, Config::new(64))).map_err(|e| e.1).unwrap();
    block_on(store.open("dev", "tcp://b")).unwrap();
    store
}

fn get(store: &mut Store<Flash, PAGES>, key: Key) -> Vec<u8> {
    let mut buf = [0u8; 64];
    block_on(store.get(key, &mut buf)).unwrap().to_vec()
}

/// Describes an open error as the child reports it: `locked <path>` only for the typed error.
fn describe(e: &std::io::Error) -> String {
    match ImageLocked::in_error(e) {
        Some(l) if e.kind() == std::io::ErrorKind::ResourceBusy => format!("locked {}", l.path().display()),
        _ => format!("error {:?} {e}", e.kind()),
    }
}

/// The second process. Does nothing unless started by a test below.
#[test]
#[ignore = "the second process of the two-process lock tests"]
fn child_process() {
    let (Ok(image), Ok(op)) = (std::env::var(ENV_IMAGE), std::env::var(ENV_OP)) else {
        println!("not started as the second process: nothing to do");
        return;
    };
    let opened = match op.as_str() {
        "open" | "hold" => Flash::open(&image),
        "create" => Flash::create(&image, PAGES),
        "open_or_create" => Flash::open_or_create(&image, PAGES),
        other => panic!("unknown op {other}"),
    };
    let flash = match opened {
        Ok(f) => f,
        Err(e) => {
            println!("CHILD-RESULT: {}", describe(&e));
            return;
        }
    };
    let pages = flash.pages();
    let mut store = mount(flash);
    if op == "hold" {
        println!("CHILD-RESULT: holding {pages}");
        std::io::stdout().flush().unwrap();
        // Hold the image until the parent closes our stdin.
        let mut rest = Vec::new();
        std::io::stdin().read_to_end(&mut rest).unwrap();
        return;
    }
    block_on(store.put(Key::command(7), &[b"from the child"])).unwrap();
    block_on(store.close()).unwrap();
    println!("CHILD-RESULT: opened {pages}, wrote c-7");
}

#[test]
fn a_second_process_gets_image_locked_while_the_first_holds_the_image() {
    let path = image_path("parent-holds");
    let mut store = mount(Flash::create(&path, PAGES).unwrap());
    block_on(store.put(Key::command(1), &[b"from the parent"])).unwrap();
    let before = std::fs::read(&path).unwrap();
    for op in ["open", "create", "open_or_create"] {
        assert_eq!(run_child(&path, op), format!("locked {}", path.display()), "{op}");
    }
    // Nothing changed: `create` did not truncate, nobody wrote.
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(get(&mut store, Key::command(1)), b"from the parent");
    // In this process too, a second FileFlash on the same image is refused.
    let e = Flash::open(&path).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy);
    assert_eq!(ImageLocked::in_error(&e).unwrap().path(), path);
    // Released with the flash: the child gets the image and writes to it.
    drop(store);
    assert_eq!(run_child(&path, "open"), format!("opened {PAGES}, wrote c-7"));
    let mut store = mount(Flash::open(&path).unwrap());
    assert_eq!(get(&mut store, Key::command(1)), b"from the parent");
    assert_eq!(get(&mut store, Key::command(7)), b"from the child");
    drop(store);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_first_process_gets_image_locked_while_a_second_holds_the_image() {
    let path = image_path("child-holds");
    drop(Flash::create(&path, PAGES).unwrap());
    let mut child = spawn_child(&path, "hold");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    while !line.contains("CHILD-RESULT: ") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "child ended without a result");
    }
    assert_eq!(result_line(&line), format!("holding {PAGES}"));
    for e in [
        Flash::open(&path).unwrap_err(),
        Flash::create(&path, PAGES).unwrap_err(),
        Flash::open_or_create(&path, PAGES).unwrap_err(),
    ] {
        assert_eq!(describe(&e), format!("locked {}", path.display()));
        assert!(e.to_string().contains("is in use"), "{e}");
    }
    // The child exits when its stdin closes; then the image is free.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let flash = Flash::open(&path).unwrap();
    assert_eq!(flash.pages(), PAGES);
    drop(flash);
    std::fs::remove_file(&path).unwrap();
}
