#!/usr/bin/env bash
# Code size and static RAM of each store on thumbv7em-none-eabihf (opt-level "s", LTO,
# panic=abort): builds tools/size once per store and once as the baseline (same program, store
# calls removed) and prints .text and .bss beyond the baseline. Writes target/code-size.txt,
# which `cargo run --release --example flash_compare` reads for its targets.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rustup target add thumbv7em-none-eabihf >/dev/null 2>&1 || true
if command -v arm-none-eabi-size >/dev/null; then
    SIZE=arm-none-eabi-size
elif command -v llvm-size >/dev/null; then
    SIZE=llvm-size
else
    rustup component add llvm-tools >/dev/null 2>&1 || true
    SIZE=$(find "$(rustc --print sysroot)" -name llvm-size -type f | head -n1)
    if [ -z "$SIZE" ]; then
        apt-get update >/dev/null && apt-get install -y binutils-arm-none-eabi >/dev/null
        SIZE=arm-none-eabi-size
    fi
fi

cd tools/size
# The probe is its own workspace: its ELF goes to tools/size/target whatever CARGO_TARGET_DIR
# the caller set for the main crate.
export CARGO_TARGET_DIR="$root/tools/size/target"
declare -A text bss
for v in baseline mqtt-persist ss-queue ss-map ekv; do
    cargo build --quiet --release --target thumbv7em-none-eabihf --features "$v" >&2
    elf=target/thumbv7em-none-eabihf/release/size-probe
    # Berkeley format: text data bss dec hex filename
    read -r t d b _ < <("$SIZE" "$elf" | tail -n1)
    text[$v]=$t
    bss[$v]=$((d + b))
    cp "$elf" "target/size-probe-$v.elf"
done

out="$root/target/code-size.txt"
mkdir -p "$root/target"
{
    echo "# thumbv7em-none-eabihf, opt-level s, LTO, panic=abort; beyond the baseline program"
    echo "# (put, get, remove, iterate on a dummy flash; RAM = static .data+.bss: the store struct and caches)"
    echo "mqtt_persist_text = $((text[mqtt-persist] - text[baseline]))"
    echo "mqtt_persist_ram = $((bss[mqtt-persist] - bss[baseline]))"
    echo "ss_queue_text = $((text[ss-queue] - text[baseline]))"
    echo "ss_queue_ram = $((bss[ss-queue] - bss[baseline]))"
    echo "ss_map_text = $((text[ss-map] - text[baseline]))"
    echo "ss_map_ram = $((bss[ss-map] - bss[baseline]))"
    echo "ekv_text = $((text[ekv] - text[baseline]))"
    echo "ekv_ram = $((bss[ekv] - bss[baseline]))"
    echo "baseline_text = ${text[baseline]}"
} >"$out"
cat "$out"
