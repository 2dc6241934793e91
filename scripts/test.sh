#!/usr/bin/env bash
# scripts/test.sh: the project's test command (`make test`, called by .ci/run).
#
# 1. host set-up (idempotent), 2. pure core: rustfmt, clippy -D warnings,
# cargo test, 3. the harness's own unit tests, 4. kernel (cached) and module
# builds (production and debug) with CLIPPY=1 and no warnings, 5. Bochs system tests (they print the
# deprivilege benchmarks), 6. the page-table engine benchmark.
# Stops at the first failing stage; prints a summary.
source "$(dirname "$0")/lib.sh"
cd "$PKVM_ROOT"
t0=$SECONDS
stage() { log "== $*"; }

stage "host set-up"
bash scripts/setup-host.sh
stage "pure core and sources: fmt, clippy, tests"
bash scripts/check-core.sh
stage "harness and audit unit tests"
python3 scripts/test_run_bochs.py -q 2>&1 | tail -n 3
python3 scripts/test_audit_root_calls.py -q 2>&1 | tail -n 3
python3 scripts/test_peers_results.py -q 2>&1 | tail -n 3
stage "kernel (cached) and module builds, production and debug (CLIPPY=1, warnings are errors)"
if [ -n "${KDIR:-}" ]; then kdir=$KDIR; else kdir=$(bash scripts/build-kernel.sh); fi
ko=$(KDIR=$kdir bash scripts/build-module.sh)
ko_debug=$(KDIR=$kdir PKVM_DEBUG=1 bash scripts/build-module.sh)
stage "Bochs system tests"
bash scripts/system-test.sh "$kdir" "$ko" "$ko_debug"
stage "page-table engine benchmark (host build; numbers, not assertions)"
cargo run --quiet --release --example pgtable_bench
log "all tests passed in $((SECONDS - t0)) s"
