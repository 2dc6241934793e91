#!/usr/bin/env bash
# scripts/msrs-stress.sh [ROUNDS]: a soak run of nested VMX under vCPU
# migration, and the reproduction of what was issue 9's msrs_test failure
# (an emulator bug: Documentation/testing.rst, "The emulator's SMP exception
# bug"): boots the test VM on 2 CPUs with the debug build and the peer
# initramfs and runs selftests/suite-msrs-stress.sh (KVM's msrs_test and
# vmx_msrs_test ROUNDS times each, default 12, with nested VMX's stress mode
# on, in its modes 2, 3 and 4, then off).  Not part of `make test`.
# PKVM_MSRS_APPEND adds kernel parameters (pkvm.msrs_phases=...,
# pkvm.msrs_kvm=...: the suite's header); PKVM_MSRS_TAG names the run, so
# that two can run at once.  Logs in build/runs/msrs-stress-c2[-TAG]/.
# Takes one emulator slot for about 4 minutes (plus the wait for a free slot).
source "$(dirname "$0")/lib.sh"
pkvm_build_env
rounds=${1:-12}
kdir=$(bash "$PKVM_ROOT/scripts/build-kernel.sh")
ko=$(bash "$PKVM_ROOT/scripts/build-module.sh")
kod=$(PKVM_DEBUG=1 bash "$PKVM_ROOT/scripts/build-module.sh")
bochs=$(bash "$PKVM_ROOT/scripts/setup-bochs.sh")
runs=$PKVM_ROOT/build/runs
mkdir -p "$runs"
initrd=$PKVM_ROOT/build/initramfs-msrs${PKVM_MSRS_TAG:+-$PKVM_MSRS_TAG}.cpio.gz
peers_initrd=$PKVM_ROOT/build/peers.cpio.gz
# (Not a process substitution: a failed build must stop the run.)
mods=$(bash "$PKVM_ROOT/scripts/build-selftest-modules.sh" "$kdir") || die "the test modules did not build"
mapfile -t test_modules <<< "$mods"
bash "$PKVM_ROOT/scripts/mkinitramfs.sh" "$initrd" "$kdir" "$ko" "pkvm_x86-debug.ko=$kod" "${test_modules[@]}"
bash "$PKVM_ROOT/scripts/mkinitramfs-peers.sh" "$peers_initrd" "$kdir"
python3 "$PKVM_ROOT/scripts/run-bochs.py" --bochs "$bochs" --kernel "$kdir/arch/x86/boot/bzImage" \
	--initrd "$initrd" --extra-initrd "$peers_initrd" --out "$runs/msrs-stress-c2${PKVM_MSRS_TAG:+-$PKVM_MSRS_TAG}" --suite msrs-stress \
	--model corei7_icelake_u --cpus 2 --megs 2048 --timeout 1800 --quiet \
	--append "pkvm.msrs_rounds=$rounds ${PKVM_MSRS_APPEND:-}"
