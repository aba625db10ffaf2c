#!/usr/bin/env bash
# The store on the real instruction set: builds qemu/ (a no_std test binary) for a Cortex-M0
# (thumbv6m-none-eabi, QEMU's micro:bit) and a Cortex-M4F (thumbv7em-none-eabihf, QEMU's MPS2
# AN386) and runs both under qemu-system-arm with semihosting. The binary checks mount,
# put/get/remove/keys/clear, a power-cut sweep and the outbox publish-restore cycle, and prints
# the peak stack of every operation (painted stack), the struct and future sizes, the same for
# sequential-storage, and `target ...: VALUE (goal G) met|missed` lines. A failed check exits
# non-zero; a missed target does not. Writes target/qemu-stack-m0.txt and target/qemu-stack-m4.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if ! command -v qemu-system-arm >/dev/null 2>&1; then
    apt-get update && apt-get install -y qemu-system-arm
fi
rustup target add thumbv6m-none-eabi thumbv7em-none-eabihf >/dev/null 2>&1 || true
rustup component add rustfmt clippy >/dev/null 2>&1 || true

cd qemu
# Its own workspace (the main crate's std dev-dependencies stay out); the runners are in
# qemu/.cargo/config.toml, which cargo only reads when run from this directory.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$root/target"
cargo fmt -- --check
for t in thumbv6m-none-eabi thumbv7em-none-eabihf; do
    cargo clippy --quiet --release --target "$t" -- -D warnings
done
for m in m0:thumbv6m-none-eabi m4:thumbv7em-none-eabihf; do
    name=${m%%:*}
    t=${m#*:}
    cargo build --quiet --release --target "$t"
    out="$root/target/qemu-stack-$name.txt"
    echo "== QEMU $name ($t)"
    # Nothing in the binary waits: a hang is a failure.
    timeout 300 cargo run --quiet --release --target "$t" | tee "$out"
    grep -q '^all checks passed$' "$out"
done
