#!/usr/bin/env bash
# Builds the library for every no_std target the README names, with no features (the default
# set) and with each no_std feature on its own: an embedded project that adds
# `mqtt-persist = "0.1"` (with or without one of these features) must build.
# Installs the targets it needs. Debug profile: this proves the build, QEMU and code_size.sh
# measure release code. Uses its own target dir (CARGO_TARGET_DIR/no-std or target/no-std).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(thumbv6m-none-eabi thumbv7em-none-eabihf thumbv8m.main-none-eabihf riscv32imc-unknown-none-elf)
# "" is the default feature set (none). std, rumqttc (std + tokio) and ekv's tests are host-only.
FEATURES=("" mqtt adapter mqttrust rust-mqtt minimq defmt ekv)

rustup target add "${TARGETS[@]}" >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/no-std"
# defmt needs a global logger only when linking a binary; a library build needs none.
failed=0
for t in "${TARGETS[@]}"; do
    for f in "${FEATURES[@]}"; do
        label="${f:-default}"
        if cargo build --quiet --lib --target "$t" --no-default-features ${f:+--features "$f"} 2>/tmp/no_std_build.err; then
            echo "no_std build $t [$label]: ok"
        else
            echo "no_std build $t [$label]: FAILED"
            cat /tmp/no_std_build.err
            failed=1
        fi
    done
done
exit $failed
