//! Picks the machine's memory map from the target: thumbv6m is the micro:bit (nRF51822,
//! 256 KiB flash, SRAM raised to 64 KiB, see memory-microbit.x), thumbv7em the MPS2 AN386
//! (4 MiB code SRAM, 4 MiB data SRAM).
use std::{env, fs, path::PathBuf};

fn main() {
    let target = env::var("TARGET").unwrap();
    let machine = if target.starts_with("thumbv6m") {
        "microbit"
    } else {
        "mps2"
    };
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let src = format!("memory-{machine}.x");
    fs::copy(&src, out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-check-cfg=cfg(microbit)");
    if machine == "microbit" {
        println!("cargo:rustc-cfg=microbit");
    }
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=build.rs");
}
