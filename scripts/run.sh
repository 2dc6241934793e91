#!/usr/bin/env bash
# scripts/run.sh: the main job (`make run`).  Sets everything up on a fresh
# machine, builds the test kernel (cached) and pkvm_x86.ko, and boots the
# test VM in Bochs with pkvm loaded, showing what the module found.
#
# Environment: PKVM_CPUS (default 2), PKVM_MODEL (default corei7_icelake_u),
# KDIR (your own kernel tree instead of the cached test kernel).
source "$(dirname "$0")/lib.sh"
cd "$PKVM_ROOT"
bash scripts/setup-host.sh
if [ -n "${KDIR:-}" ]; then kdir=$KDIR; else kdir=$(bash scripts/build-kernel.sh); fi
ko=$(KDIR=$kdir bash scripts/build-module.sh)
bochs=$(bash scripts/setup-bochs.sh)
initrd=build/initramfs.cpio.gz
bash scripts/mkinitramfs.sh "$initrd" "$kdir" "$ko"
log "booting the test VM in Bochs (${PKVM_MODEL:-corei7_icelake_u}, ${PKVM_CPUS:-2} CPUs)"
python3 scripts/run-bochs.py --bochs "$bochs" --kernel "$kdir/arch/x86/boot/bzImage" --initrd "$initrd" \
	--out build/runs/run --suite run --model "${PKVM_MODEL:-corei7_icelake_u}" --cpus "${PKVM_CPUS:-2}"
