#!/usr/bin/env bash
# scripts/build-kvm-selftests.sh KDIR: builds KVM's own selftests
# (tools/testing/selftests/kvm of the same kernel source) as static x86
# binaries, for the peer suite (selftests/suite-peers.sh) in the test VM.
#
# Cached under $PKVM_CACHE/kvm-selftests/<kernel key>-<hash of this script>,
# where the kernel key is the cached kernel's <version>-<config hash>
# directory (or, for your own KDIR, its kernelversion and path).  Prints the
# directory holding the stripped binaries (flat: one file per test, named as
# the test without its x86/ prefix) on stdout.  A warm run builds nothing.
source "$(dirname "$0")/lib.sh"
kdir=$(cd "$1" && pwd)
[ -f "$kdir/tools/testing/selftests/kvm/Makefile" ] || die "$kdir has no tools/testing/selftests/kvm"

case "$kdir" in
"$PKVM_CACHE"/kernel/*) kkey=$(basename "$(dirname "$kdir")") ;;
*) kkey=$(make -s -C "$kdir" kernelversion 2>/dev/null)-$(echo "$kdir" | sha256sum | cut -c1-8) ;;
esac
key=$kkey-$(sha256sum "$0" | cut -c1-8)
out=$PKVM_CACHE/kvm-selftests/$key
if [ -e "$out/.pkvm-built" ]; then
	echo "$out/bin"
	exit 0
fi

rm -rf "$out"
mkdir -p "$out/obj" "$out/bin"
log "building KVM selftests of $kkey (static; about a minute, once per kernel)"
# The uapi headers of this very kernel (`make headers` is headers_install
# without its rsync step), copied outside the tree.
if ! make -C "$kdir" headers > "$out/build.log" 2>&1; then
	tail -30 "$out/build.log" >&2
	die "make headers failed; log: $out/build.log"
fi
mkdir -p "$out/hdr"
cp -r "$kdir/usr/include" "$out/hdr/"
find "$out/hdr" -name '.*' -delete
if ! make -C "$kdir/tools/testing/selftests/kvm" -j"$(nproc)" OUTPUT="$out/obj" \
	KHDR_INCLUDES="-isystem $out/hdr/include" EXTRA_CFLAGS=-static >> "$out/build.log" 2>&1; then
	tail -30 "$out/build.log" >&2
	die "building KVM selftests failed; log: $out/build.log"
fi
# Every program the Makefile generates for x86, flat, stripped (they are
# about 1 MB each static; the peer initramfs carries all of them).
n=0
while IFS= read -r f; do
	name=$(basename "$f")
	strip -o "$out/bin/$name" "$f"
	n=$((n + 1))
done < <(find "$out/obj" -type f -perm -u+x ! -name '*.o' ! -name '*.d' ! -name '*.a' | sort)
[ "$n" -gt 50 ] || die "only $n KVM selftest binaries built (log: $out/build.log)"
# Static, or the test VM (which has no libc) cannot run them.
for f in "$out"/bin/*; do
	file -b "$f" | grep -q 'statically linked' || die "$f is not statically linked"
done
touch "$out/.pkvm-built"
log "KVM selftests ready: $n binaries in $out/bin"
echo "$out/bin"
