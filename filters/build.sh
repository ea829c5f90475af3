#!/usr/bin/env bash
# Builds the built-in filters to $CARGO_TARGET_DIR/wasm32-wasip1/wasm/lateen_*.wasm and,
# with no arguments, the sample component filter to
# $CARGO_TARGET_DIR/wasm32-wasip2/wasm/ua_tagger_component.wasm.
# Usage: bash filters/build.sh [PACKAGE...]     (default: all six, and the component)
#
# The crates declare only an rlib (the host links their config types natively), and the
# .wasm is made here with `cargo rustc --crate-type cdylib`. Declaring cdylib in Cargo.toml
# would give the native rlib an unhashed file name, which another build sharing the target
# directory (a filter crate outside the workspace, the fuzz workspace) silently overwrites.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=("$@")
# A fresh machine has neither wasm target; `rustup target add` is a no-op when present.
if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null 2>&1 ||
    rustup target add wasm32-wasip1 wasm32-wasip2
fi
if [ ${#pkgs[@]} -eq 0 ]; then
  pkgs=(lateen-router lateen-fault lateen-ratelimit lateen-metrics lateen-authz lateen-jwt)
  # A component: the wasm32-wasip2 linker makes it from the cdylib.
  cargo build -q --profile wasm --target wasm32-wasip2 -p ua-tagger-component
fi
for p in "${pkgs[@]}"; do
  cargo rustc -q --profile wasm --target wasm32-wasip1 -p "$p" --lib --crate-type cdylib
done
