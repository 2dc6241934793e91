#!/usr/bin/env bash
# scripts/build-kernel.sh: fetch Debian's linux-source-$PKVM_KERNEL_SERIES through
# the private apt configuration, configure it (tinyconfig + 64BIT + kernel.config)
# and build bzImage and modules, cached under $PKVM_CACHE/kernel/<version>-<cfghash>.
#
# Prints the kernel tree's path (the KDIR for the module) on stdout.
# A warm run (same version, same fragment) rebuilds nothing.
source "$(dirname "$0")/lib.sh"
pkvm_build_env

frag=$PKVM_ROOT/scripts/kernel.config

# Which 7.2 version?  PKVM_KERNEL_VERSION pins it; otherwise reuse the newest
# one already built with this fragment, else take apt's candidate.
cfghash=$(sha256sum "$frag" | cut -c1-12)
ver=${PKVM_KERNEL_VERSION:-}
if [ -z "$ver" ]; then
	ver=$(find "$PKVM_CACHE/kernel" -maxdepth 1 -name "*-$cfghash" 2>/dev/null |
		while read -r d; do if [ -e "$d/.pkvm-built" ]; then basename "$d" | sed "s/-$cfghash\$//"; fi; done |
		sort -V | tail -1 || true)
fi
if [ -z "$ver" ]; then
	pkvm_apt_update >&2
	# shellcheck disable=SC2046
	ver=$(apt-cache $(pkvm_apt_opts) policy "linux-source-$PKVM_KERNEL_SERIES" 2>/dev/null |
		sed -n 's/^  Candidate: //p')
	if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
		die "linux-source-$PKVM_KERNEL_SERIES is in none of the suites of $PKVM_APT/sources.list.
  Debian no longer carries it there.  Either add a suite that does (a snapshot archive is
  not reachable from CI), or build your own Rust-enabled kernel and pass KDIR=/path/to/tree."
	fi
fi

out=$PKVM_CACHE/kernel/$ver-$cfghash
kdir=$out/linux-source-$PKVM_KERNEL_SERIES
if [ -e "$out/.pkvm-built" ]; then
	echo "$kdir"
	exit 0
fi

mkdir -p "$out"
if [ ! -e "$kdir/Makefile" ]; then
	pkvm_apt_update >&2
	deb=$PKVM_CACHE/debs/kernel
	ls "$deb"/linux-source-"${PKVM_KERNEL_SERIES}"_"${ver//:/%3a}"_all.deb >/dev/null 2>&1 ||
		{ log "downloading linux-source-$PKVM_KERNEL_SERIES=$ver"; pkvm_apt_download "$deb" "linux-source-$PKVM_KERNEL_SERIES=$ver"; }
	log "unpacking kernel source"
	rm -rf "$kdir" "$out/deb"
	mkdir -p "$out/deb"
	dpkg-deb --fsys-tarfile "$deb"/linux-source-"${PKVM_KERNEL_SERIES}"_*"${ver##*:}"_all.deb |
		tar -x -C "$out/deb" "./usr/src/linux-source-$PKVM_KERNEL_SERIES.tar.xz"
	tar -xf "$out/deb/usr/src/linux-source-$PKVM_KERNEL_SERIES.tar.xz" -C "$out"
	rm -rf "$out/deb"
fi

cd "$kdir"
make -s rustavailable >&2 || die "the kernel says Rust is not available (see above): run scripts/setup-host.sh"

log "configuring $ver (fragment $cfghash)"
make -s tinyconfig >/dev/null
./scripts/config --enable 64BIT
make -s olddefconfig >/dev/null
./scripts/kconfig/merge_config.sh -m -O . .config "$frag" >/dev/null
make -s olddefconfig >/dev/null
# Every line of the fragment must have survived olddefconfig.
bad=0
while IFS= read -r line; do
	case "$line" in CONFIG_*=n) o=${line%%=*}; grep -q "^$o=" .config && { echo "  $o is set, wanted off" >&2; bad=1; } ;;
	CONFIG_*) grep -qx "$line" .config || { echo "  wanted $line, got: $(grep "^${line%%=*}=" .config || echo unset)" >&2; bad=1; } ;; esac
done < "$frag"
[ $bad = 0 ] || die "kernel config lost options of $frag (above); for CONFIG_RUST check 'make rustavailable'"

log "building $ver: bzImage and modules (about 10 minutes on 2 cores, once)"
if ! make -j"$(nproc)" bzImage modules > "$out/build.log" 2>&1; then
	tail -40 "$out/build.log" >&2
	die "kernel build failed; full log: $out/build.log"
fi
touch "$out/.pkvm-built"
log "kernel ready: $kdir"
echo "$kdir"
