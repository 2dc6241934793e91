#!/usr/bin/env bash
# scripts/build-module.sh: build pkvm_x86.ko out of tree, with CLIPPY=1, and
# fail on any compiler or clippy warning, or if root-mode code can reach the
# kernel (scripts/audit-root-calls.py).
#
# KDIR=/path/to/tree builds against a user's own Rust-enabled kernel;
# otherwise the cached test kernel is set up and built first.  The module is
# built with its objects under $PKVM_BUILD (default <repo>/build/module, via
# Kbuild's MO=) so the source tree stays clean.  Prints the path of the .ko on stdout.
#
# PKVM_DEBUG=1 builds the debug variant instead (debug interface, debug
# hypercalls, invariant checker; see Kbuild), under build/module-debug: the
# system tests load both.  Both variants get the same checks.
source "$(dirname "$0")/lib.sh"

if [ -z "${KDIR:-}" ]; then
	bash "$PKVM_ROOT/scripts/setup-host.sh" >&2
	KDIR=$(bash "$PKVM_ROOT/scripts/build-kernel.sh")
fi
pkvm_build_env
[ -e "$KDIR/Makefile" ] || die "KDIR=$KDIR is not a kernel tree"
grep -q '^CONFIG_RUST=y' "$KDIR/.config" 2>/dev/null || die "KDIR=$KDIR was not built with CONFIG_RUST=y"

debug=${PKVM_DEBUG:-0}
if [ "$debug" = 1 ]; then variant=module-debug; else variant=module; fi
out=${PKVM_BUILD:-$PKVM_ROOT/build/$variant}
mkdir -p "$out"
log "building pkvm_x86.ko ($variant) against $KDIR"
set +e
make -C "$KDIR" M="$PKVM_ROOT" MO="$out" CLIPPY=1 PKVM_DEBUG="$debug" modules > "$out/build.log" 2>&1
rc=$?
set -e
if [ $rc != 0 ]; then
	cat "$out/build.log" >&2
	die "module build failed"
fi
if grep -E -q '^(warning|error)(\[|:)|: warning:' "$out/build.log"; then
	cat "$out/build.log" >&2
	die "module build produced warnings (see above); the build must be warning-free"
fi
# Root mode must not run kernel code or touch the module's writable data
# (it maps neither): audit the Rust object's call graph from the root-mode
# entry points.
if ! python3 "$PKVM_ROOT/scripts/audit-root-calls.py" "$out/pkvm_x86/pkvm_x86.o" --strict -v >&2; then
	die "root-mode code reaches the kernel, writable data or an indirect call (above)"
fi
echo "$out/pkvm_x86.ko"
