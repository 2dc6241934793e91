#!/usr/bin/env bash
# scripts/build-qemu.sh: packages Debian 12's QEMU for the test VM, where the
# peer suite (selftests/suite-peers.sh) boots a guest with it.
#
# Downloads qemu-system-x86 and its whole dependency closure (apt-cache
# depends --recurse) from Debian 12 (bookworm main, from the mirror this
# machine's apt uses: lib.sh pkvm_debian_mirror) through a private apt
# configuration in $PKVM_CACHE/apt-bookworm, unpacks the .debs with dpkg-deb
# into a staging root, and keeps only what a headless -M pc boot needs:
#
#   bin/qemu-system-x86_64   the binary
#   lib/                     every shared library it loads (resolved with
#                            the staged loader's --list, i.e. ldd, against
#                            the staged libraries only: the host's installed
#                            packages don't matter), and the loader itself
#   share/                   bios-256k.bin, linuxboot_dma.bin, kvmvapic.bin
#                            and the other option ROMs of -M pc (the -L dir)
#   qemu                     wrapper: runs the binary through the staged
#                            loader with --library-path (the VM has no libc)
#
# Cached under $PKVM_CACHE/qemu/<qemu version>_<seabios version>-<hash of
# this script>; a warm run reuses the newest such build without asking apt
# (PKVM_QEMU_REFRESH=1 resolves the versions again).  Prints the directory.
source "$(dirname "$0")/lib.sh"

A=$PKVM_CACHE/apt-bookworm
shash=$(sha256sum "$0" | cut -c1-8)
base=$PKVM_CACHE/qemu

if [ -z "${PKVM_QEMU_REFRESH:-}" ]; then
	hit=$(find "$base" -mindepth 2 -maxdepth 2 -name .pkvm-built -path "*-$shash/*" 2>/dev/null | sort -V | tail -1 || true)
	if [ -n "$hit" ]; then
		dirname "$hit"
		exit 0
	fi
fi

apt_bookworm() {
	mkdir -p "$A/lists/partial" "$A/cache/archives/partial"
	[ -e "$A/status" ] || : > "$A/status"
	local mirror
	mirror=$(pkvm_debian_mirror)
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm main" > "$A/sources.list"
	if [ -z "$(find "$A/updated" -mmin -1440 2>/dev/null)" ]; then
		log "updating private apt lists in $A (Debian 12)"
		# shellcheck disable=SC2046
		apt-get $(pkvm_apt_opts "$A") -qq update
		touch "$A/updated"
	fi
}
apt_bookworm >&2
candidate() { # PKG -> version
	# shellcheck disable=SC2046
	apt-cache $(pkvm_apt_opts "$A") policy "$1" | sed -n 's/^  Candidate: //p'
}
qver=$(candidate qemu-system-x86)
sver=$(candidate seabios)
[ -n "$qver" ] && [ "$qver" != "(none)" ] || die "qemu-system-x86 not found in Debian 12 (see $A/sources.list)"
out=$base/${qver//:/%3a}_${sver}-$shash
if [ -e "$out/.pkvm-built" ]; then
	echo "$out"
	exit 0
fi

# The dependency closure (real packages only; virtual ones print as <name>).
# shellcheck disable=SC2046
mapfile -t pkgs < <(apt-cache $(pkvm_apt_opts "$A") depends --recurse --no-recommends --no-suggests \
	--no-conflicts --no-breaks --no-replaces --no-enhances qemu-system-x86 qemu-system-data seabios |
	grep -v '^[ <]' | sort -u)
# Their candidate versions, in one call: "name version" lines.
# shellcheck disable=SC2046
mapfile -t pv < <(apt-cache $(pkvm_apt_opts "$A") show --no-all-versions "${pkgs[@]}" 2>/dev/null |
	awk '/^Package: / { p = $2 } /^Version: / { print p, $2 }')
[ ${#pv[@]} = ${#pkgs[@]} ] || die "apt-cache show gave ${#pv[@]} versions for ${#pkgs[@]} packages"
debs=$PKVM_CACHE/debs/qemu-bookworm
mkdir -p "$debs"
have() { ls "$debs/${1}_${2//:/%3a}_"*.deb 2>/dev/null | head -1; }
want=()
for x in "${pv[@]}"; do
	set -- $x
	[ -n "$(have "$1" "$2")" ] || want+=("$1=$2")
done
if [ ${#want[@]} -gt 0 ]; then
	log "downloading ${#want[@]} Debian 12 packages (QEMU $qver and its libraries)"
	# shellcheck disable=SC2046
	(cd "$debs" && apt-get $(pkvm_apt_opts "$A") -qq download "${want[@]}") 2>&1 |
		grep -v 'Download is performed unsandboxed' >&2 || true
fi

rm -rf "$out"
stage=$out.stage
rm -rf "$stage"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage" "$out/bin" "$out/lib" "$out/share"
for x in "${pv[@]}"; do
	set -- $x
	f=$(have "$1" "$2")
	[ -n "$f" ] || die "download of $1=$2 failed"
	dpkg-deb -x "$f" "$stage"
done
# cp_staged SRC DST: copy a staged file, following symlinks inside the
# staging root (absolute links, e.g. /usr/share/qemu/bios-256k.bin ->
# /usr/share/seabios/bios-256k.bin, point into the root, not the host).
cp_staged() {
	local f=$1 n=0 t
	while [ -L "$f" ] && [ $n -lt 20 ]; do
		t=$(readlink "$f")
		case "$t" in /*) f=$stage$t ;; *) f=$(dirname "$f")/$t ;; esac
		n=$((n + 1))
	done
	cp "$f" "$2"
}

bin=$stage/usr/bin/qemu-system-x86_64
ld=$stage/lib64/ld-linux-x86-64.so.2
[ -x "$bin" ] && [ -e "$ld" ] || die "qemu-system-x86_64 or the loader missing from the unpacked packages"
libpath=$stage/lib/x86_64-linux-gnu:$stage/usr/lib/x86_64-linux-gnu
# ldd, with the staged loader and libraries only.
"$ld" --library-path "$libpath" --list "$bin" > "$out/ldd.txt"
if grep -q 'not found' "$out/ldd.txt"; then
	cat "$out/ldd.txt" >&2
	die "QEMU needs libraries the dependency closure does not have (above)"
fi
cp "$bin" "$out/bin/"
awk '$2 == "=>" { print $3 }' "$out/ldd.txt" | while read -r l; do
	case "$l" in "$stage"/*) cp_staged "$l" "$out/lib/$(basename "$l")" ;; *) die "library $l resolved outside the staging root" ;; esac
done
cp_staged "$ld" "$out/lib/ld-linux-x86-64.so.2"
# Firmware: the BIOS and the option ROMs QEMU loads for -M pc with -kernel.
for f in bios-256k.bin linuxboot_dma.bin linuxboot.bin kvmvapic.bin; do
	src=$stage/usr/share/qemu/$f
	[ -e "$src" ] || [ -L "$src" ] || src=$stage/usr/share/seabios/$f
	cp_staged "$src" "$out/share/$f" || die "firmware $f missing"
done
cat > "$out/qemu" <<'EOW'
#!/bin/sh
# Runs Debian 12's qemu-system-x86_64 with its own loader and libraries
# (written by scripts/build-qemu.sh; the directory is relocatable).
d=$(dirname "$0")
exec "$d/lib/ld-linux-x86-64.so.2" --library-path "$d/lib" "$d/bin/qemu-system-x86_64" "$@"
EOW
chmod +x "$out/qemu"
"$out/qemu" --version | head -1 > "$out/VERSION" || die "the packaged QEMU does not run on this machine"
rm -rf "$stage"
touch "$out/.pkvm-built"
log "QEMU ready: $(cat "$out/VERSION") in $out ($(du -sh "$out" | cut -f1))"
echo "$out"
