#!/usr/bin/env bash
# Code size and static RAM of each store on thumbv7em-none-eabihf (opt-level "s", LTO,
# panic=abort): builds tools/size once per store and once as the baseline (same program, store
# calls removed) and prints .text and .bss beyond the baseline. Also the outbox program (mount,
# open, restore, publish, next_transmit, on_puback) and the mqttrust adapter program (the
# outbox program plus SharedOutbox::drain through MqttrustClient), each also beyond the program
# before it. ".text" is the Berkeley text column: .text plus .rodata (the CRC table), what goes
# to flash. Writes target/code-size.txt, which `cargo run --release --example flash_compare`
# reads for its targets, and target/code-size-top.txt (the store's largest functions).
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
for v in baseline mqtt-persist outbox mqttrust ss-queue ss-map ekv; do
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
    echo "# (mount, open, put, get, remove, keys on a dummy flash; text = .text + .rodata; RAM = static .data+.bss: the store struct and caches)"
    echo "mqtt_persist_text = $((text[mqtt-persist] - text[baseline]))"
    echo "mqtt_persist_ram = $((bss[mqtt-persist] - bss[baseline]))"
    echo "outbox_text = $((text[outbox] - text[baseline]))"
    echo "outbox_ram = $((bss[outbox] - bss[baseline]))"
    echo "outbox_beyond_store_text = $((text[outbox] - text[mqtt-persist]))"
    echo "mqttrust_text = $((text[mqttrust] - text[baseline]))"
    echo "mqttrust_ram = $((bss[mqttrust] - bss[baseline]))"
    echo "mqttrust_beyond_outbox_text = $((text[mqttrust] - text[outbox]))"
    echo "ss_queue_text = $((text[ss-queue] - text[baseline]))"
    echo "ss_queue_ram = $((bss[ss-queue] - bss[baseline]))"
    echo "ss_map_text = $((text[ss-map] - text[baseline]))"
    echo "ss_map_ram = $((bss[ss-map] - bss[baseline]))"
    echo "ekv_text = $((text[ekv] - text[baseline]))"
    echo "ekv_ram = $((bss[ekv] - bss[baseline]))"
    echo "baseline_text = ${text[baseline]}"
} >"$out"
cat "$out"
# The store program's largest functions (docs/DESIGN.md section 25 lists them).
NM=$(command -v llvm-nm || command -v arm-none-eabi-nm || echo "$(dirname "$SIZE")/llvm-nm")
if [ -x "$NM" ]; then
    "$NM" --size-sort -S -C --radix=d "$root/tools/size/target/size-probe-mqtt-persist.elf" \
        | grep -v " [bBdD] " | sort -k2,2nr | head -n 25 >"$root/target/code-size-top.txt" || true
fi
