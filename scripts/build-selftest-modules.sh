#!/usr/bin/env bash
# scripts/build-selftest-modules.sh KDIR: builds the test-only kernel
# modules under selftests/ (selftests/hostile, the hostile host, and
# selftests/vmx_oracle, the VMX-instruction oracle, and selftests/vmx_entry,
# the hostile VM entries)
# against KDIR, warnings as errors, objects under build/selftest-modules/.
# Prints the path of each .ko on stdout.
source "$(dirname "$0")/lib.sh"
kdir=$1
pkvm_build_env
for src in "$PKVM_ROOT"/selftests/hostile "$PKVM_ROOT"/selftests/vmx_oracle "$PKVM_ROOT"/selftests/vmx_entry; do
	name=$(basename "$src")
	out=$PKVM_ROOT/build/selftest-modules/$name
	mkdir -p "$out"
	if ! make -C "$kdir" M="$src" MO="$out" modules > "$out/build.log" 2>&1; then
		cat "$out/build.log" >&2
		die "building the test module $name failed"
	fi
	if grep -E -q '(warning|error):' "$out/build.log"; then
		cat "$out/build.log" >&2
		die "the test module $name built with warnings"
	fi
	ls "$out"/*.ko
done
