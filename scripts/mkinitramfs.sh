#!/usr/bin/env bash
# scripts/mkinitramfs.sh OUT.cpio.gz KDIR MODULE.ko [[NAME=]EXTRA.ko...]
#
# Builds the test VM's initramfs: busybox-static, selftests/init as /init,
# the suites under /selftests, the static test tools from selftests/tools,
# and under /lib/modules the pkvm module, extra modules (the debug build,
# the hostile host of selftests/hostile; NAME=PATH installs PATH as NAME)
# and KVM's own modules from KDIR.
source "$(dirname "$0")/lib.sh"
out=$1 kdir=$2 ko=$3
shift 3
[ -f "$ko" ] || die "module $ko not found"
[ -x /bin/busybox ] || die "/bin/busybox missing: run scripts/setup-host.sh (busybox-static)"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,selftests,lib/modules}
cp /bin/busybox "$root/bin/busybox"
cp "$PKVM_ROOT/selftests/init" "$root/init"
chmod +x "$root/init"
cp "$PKVM_ROOT"/selftests/*.sh "$root/selftests/"
for c in "$PKVM_ROOT"/selftests/tools/*.c; do
	gcc -static -O2 -Wall -Werror -o "$root/bin/$(basename "$c" .c)" "$c"
done
cp "$ko" "$root/lib/modules/pkvm_x86.ko"
for m in "$@"; do
	case "$m" in
	*=*) cp "${m#*=}" "$root/lib/modules/${m%%=*}" ;;
	*) cp "$m" "$root/lib/modules/" ;;
	esac
done
for m in virt/lib/irqbypass.ko arch/x86/kvm/kvm.ko arch/x86/kvm/kvm-intel.ko; do
	[ -f "$kdir/$m" ] && cp "$kdir/$m" "$root/lib/modules/"
done
mkdir -p "$(dirname "$out")"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
