#!/usr/bin/env bash
# scripts/mkinitramfs-peers.sh OUT.cpio.gz KDIR: the second initramfs of the
# test VM, used only by the peer runs (selftests/suite-peers.sh), so the
# other runs don't carry (or decompress) its ~150 MB.  scripts/run-bochs.py
# --extra-initrd appends it to the main one: Linux unpacks concatenated cpio
# archives in order.  Contents:
#
#   /opt/kvm-selftests/    KVM's selftests, static (build-kvm-selftests.sh)
#   /opt/qemu/             Debian 12's QEMU, its libraries, loader, firmware
#                          (build-qemu.sh); /opt/qemu/qemu runs it
#   /opt/guest/bzImage     the guest kernel: the test kernel itself
#   /opt/guest/initrd.gz   the guest's initramfs: static busybox and
#                          selftests/peers/guest-init as /init
#   /selftests/peers/      the view, skip and subset lists (selftests/peers/*.txt)
#
# gzip -1, not xz: the emulated CPU decompresses xz at a crawl.  Rebuilt
# only when one of its inputs changed (a stamp of their keys next to OUT).
source "$(dirname "$0")/lib.sh"
out=$1 kdir=$2
[ -x /bin/busybox ] || die "/bin/busybox missing: run scripts/setup-host.sh (busybox-static)"
sel=$(bash "$PKVM_ROOT/scripts/build-kvm-selftests.sh" "$kdir")
qemu=$(bash "$PKVM_ROOT/scripts/build-qemu.sh")
bz=$kdir/arch/x86/boot/bzImage
key="$sel $qemu $(sha256sum "$bz" "$PKVM_ROOT"/selftests/peers/*.txt "$0" /bin/busybox | cut -c1-16 | tr '\n' ' ')"
if [ -f "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then
	exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/opt/guest" "$root/opt/kvm-selftests" "$root/opt/qemu" "$root/guest/bin" "$root/guest/proc" \
	"$root/selftests/peers"
cp "$PKVM_ROOT"/selftests/peers/*.txt "$root/selftests/peers/"
cp "$sel"/* "$root/opt/kvm-selftests/"
cp -r "$qemu"/bin "$qemu"/lib "$qemu"/share "$qemu"/qemu "$qemu"/VERSION "$root/opt/qemu/"
cp "$bz" "$root/opt/guest/bzImage"
# The guest's own initramfs.
cp /bin/busybox "$root/guest/bin/busybox"
cp "$PKVM_ROOT/selftests/peers/guest-init" "$root/guest/init"
chmod +x "$root/guest/init"
(cd "$root/guest" && find . | cpio -o -H newc --quiet | gzip -1) > "$root/opt/guest/initrd.gz"
rm -rf "$root/guest"
mkdir -p "$(dirname "$out")"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$key" > "$out.key"
log "peer initramfs: $out ($(du -h "$out" | cut -f1))"
