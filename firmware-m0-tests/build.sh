#!/usr/bin/env bash
# Build the Cortex-M0 test image with the Debian rustc (which ships core's
# source for -Zbuild-std) and rustup's rust-lld, as firmware-example/build.sh.
set -euo pipefail
cd "$(dirname "$0")"
LLD="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_THUMBV6M_NONE_EABI_LINKER="$LLD" \
  cargo build --release --target thumbv6m-none-eabi -Zbuild-std=core "$@"
