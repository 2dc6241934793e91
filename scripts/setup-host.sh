#!/usr/bin/env bash
# scripts/setup-host.sh: install what building and testing pkvm-x86 needs on a
# Debian 12 machine.  Idempotent: a second run changes nothing.
#
#   - Debian build dependencies of the kernel and of the test images (libc6-dev
#     and file: the static KVM selftests of scripts/build-kvm-selftests.sh),
#     and of the emulator (g++, SDL2, ltdl, ncurses: scripts/setup-bochs.sh);
#   - rustup's rust-src, clippy and rustfmt components;
#   - bindgen-cli $PKVM_BINDGEN_VERSION (cargo install --locked) into $PKVM_TOOLS;
#   - libclang $PKVM_LIBCLANG_VERSION from the PyPI wheel into $PKVM_TOOLS/libclang.
source "$(dirname "$0")/lib.sh"

APT_PKGS=(flex bison libelf-dev libssl-dev bc cpio xz-utils make gcc binutils python3 python3-pip
	busybox-static syslinux syslinux-common mtools dosfstools kmod
	libc6-dev file
	libsdl2-2.0-0 libltdl7 libgtk-3-0 libglib2.0-0 libpango-1.0-0 libpulse0 libasound2 libsamplerate0 libreadline8
	g++ dpkg-dev patch curl libsdl2-dev libltdl-dev libncurses-dev)

missing=()
for p in "${APT_PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "apt-get install ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v rustup >/dev/null || die "rustup not found: install Rust with rustup (rustc 1.95 is what Linux $PKVM_KERNEL_SERIES was verified with)"
installed=$(rustup component list --installed)
for c in rust-src clippy rustfmt; do
	grep -q "^$c" <<<"$installed" || { log "rustup component add $c"; rustup component add "$c"; }
done

if [ "$("$PKVM_TOOLS/bin/bindgen" --version 2>/dev/null)" != "bindgen $PKVM_BINDGEN_VERSION" ]; then
	log "cargo install bindgen-cli $PKVM_BINDGEN_VERSION (a few minutes, once)"
	cargo install --quiet --locked bindgen-cli --version "$PKVM_BINDGEN_VERSION" --root "$PKVM_TOOLS"
fi

lc=$PKVM_TOOLS/libclang
if [ "$(cat "$lc/VERSION" 2>/dev/null)" != "$PKVM_LIBCLANG_VERSION" ]; then
	log "fetching libclang $PKVM_LIBCLANG_VERSION from PyPI"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	python3 -m pip download --quiet --no-deps --only-binary=:all: \
		--platform manylinux2010_x86_64 "libclang==$PKVM_LIBCLANG_VERSION" -d "$tmp"
	python3 -m zipfile -e "$tmp"/libclang-"$PKVM_LIBCLANG_VERSION"-*.whl "$tmp/x"
	rm -rf "$lc" && mkdir -p "$lc"
	cp "$(find "$tmp/x" -name libclang.so | head -1)" "$lc/"
	echo "$PKVM_LIBCLANG_VERSION" > "$lc/VERSION"
fi
log "host set-up complete (tools in $PKVM_TOOLS)"
