#!/usr/bin/env bash
# scripts/check-core.sh: the fast checks of the pure core and the module
# sources, no kernel needed: rustfmt (Cargo crate and the module crate
# root, which reaches every file), clippy with -D warnings, cargo test.
source "$(dirname "$0")/lib.sh"
cd "$PKVM_ROOT"
log "rustfmt --check"
cargo fmt --check
rustfmt --check --edition 2021 pkvm_x86/pkvm_x86.rs
log "cargo clippy -D warnings"
cargo clippy --quiet --all-targets -- -D warnings
log "cargo test"
cargo test --quiet 2>&1 | tail -n 40
