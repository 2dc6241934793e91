#!/usr/bin/env bash
# scripts/run.sh: the main job (`make run`).  Sets everything up on a fresh
# machine, builds the test kernel (cached) and pkvm_x86.ko, and boots the
# test VM in Bochs with pkvm loaded, showing what the module found; then
# loads the stock kvm_intel and boots a QEMU guest (the test kernel with a
# busybox /init, from the peer-suite initramfs of scripts/mkinitramfs-peers.sh)
# on the deprivileged host, its console shown, and a one-line summary of
# what the hypervisor did for it.  PKVM_RUN_GUEST=0 skips the guest.
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
extra=()
if [ "${PKVM_RUN_GUEST:-1}" != 0 ]; then
	peers_initrd=build/peers.cpio.gz
	bash scripts/mkinitramfs-peers.sh "$peers_initrd" "$kdir"
	extra=(--extra-initrd "$peers_initrd" --megs 2048)
fi
log "booting the test VM in Bochs (${PKVM_MODEL:-corei7_icelake_u}, ${PKVM_CPUS:-2} CPUs)"
python3 scripts/run-bochs.py --bochs "$bochs" --kernel "$kdir/arch/x86/boot/bzImage" --initrd "$initrd" \
	--out build/runs/run --suite run --model "${PKVM_MODEL:-corei7_icelake_u}" --cpus "${PKVM_CPUS:-2}" \
	--timeout 1800 "${extra[@]}"
