#!/usr/bin/env bash
# Build the firmware image with the Debian rustc (which ships core's
# source for -Zbuild-std) and rustup's rust-lld. See README.md.
set -euo pipefail
cd "$(dirname "$0")"
LLD="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_THUMBV7M_NONE_EABI_LINKER="$LLD" \
  cargo build --release --target thumbv7m-none-eabi -Zbuild-std=core "$@"
