# shellcheck shell=bash
# scripts/lib.sh: shared settings for every pkvm-x86 script (sourced, not run).
#
# Owns: the version pins, the cache layout, the private apt configuration and
# the environment (PATH, LIBCLANG_PATH) a kernel or module build needs.
# Everything heavy lives under $PKVM_CACHE (default ~/.cache/pkvm-x86), never
# inside the repository, and every step is idempotent.

set -euo pipefail

PKVM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PKVM_CACHE=${PKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pkvm-x86}

# Version pins.  Changing one of these changes the cache key of what depends on it.
PKVM_KERNEL_SERIES=7.2                 # Debian package linux-source-$PKVM_KERNEL_SERIES
PKVM_BINDGEN_VERSION=0.72.1            # cargo install --locked bindgen-cli
PKVM_LIBCLANG_VERSION=18.1.1           # PyPI wheel "libclang" (Debian 12's clang is too old)
PKVM_BOCHS_VERSION=3.0+dfsg-1          # Debian trixie
PKVM_BOCHS_SUITE=trixie

PKVM_TOOLS=$PKVM_CACHE/tools
PKVM_APT=$PKVM_CACHE/apt

mkdir -p "$PKVM_CACHE" "$PKVM_TOOLS"

log() { printf '[pkvm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[pkvm] error: %s\n' "$*" >&2; exit 1; }

# Everything a kernel / module build needs on PATH.
pkvm_build_env() {
	export PATH=$PKVM_TOOLS/bin:$HOME/.cargo/bin:$PATH
	export LIBCLANG_PATH=$PKVM_TOOLS/libclang
}

# A private apt configuration: its own sources list (suites that carry the
# kernel source and Bochs 3.0) and its own lists directory.  The machine's own
# apt sources are never touched.
# pkvm_apt_opts [DIR]: DIR defaults to $PKVM_APT; scripts/build-qemu.sh
# keeps a second one (Debian 12 only) in $PKVM_CACHE/apt-bookworm.
pkvm_apt_opts() {
	local d=${1:-$PKVM_APT}
	echo "-o Dir::Etc::SourceList=$d/sources.list -o Dir::Etc::SourceParts=/dev/null" \
	     "-o Dir::State::Lists=$d/lists -o Dir::Cache=$d/cache" \
	     "-o Dir::State::status=$d/status -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root"
}

# The Debian archive this machine's own apt configuration uses (the first
# main-archive URI, not a security or updates-only one), from deb822
# /etc/apt/sources.list.d/*.sources or one-line sources.list files.  The
# repository names no mirror of its own.
pkvm_debian_mirror() {
	local f uri=
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		uri=$(awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
		[ -n "$uri" ] && break
	done
	if [ -z "$uri" ]; then
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -r "$f" ] || continue
			uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($i !~ /security/) print $i; break } }' "$f" | head -n 1)
			[ -n "$uri" ] && break
		done
	fi
	[ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/ (needed to fetch linux-source and Bochs)"
	echo "${uri%/}"
}

pkvm_apt_update() {
	local stamp=$PKVM_APT/updated
	mkdir -p "$PKVM_APT/lists/partial" "$PKVM_APT/cache/archives/partial"
	[ -e "$PKVM_APT/status" ] || cp /var/lib/dpkg/status "$PKVM_APT/status"
	local mirror
	mirror=$(pkvm_debian_mirror)
	cat > "$PKVM_APT/sources.list.new" <<EOS
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror sid main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-backports main
EOS
	mv "$PKVM_APT/sources.list.new" "$PKVM_APT/sources.list"
	# Refresh at most once a day: indexes change, the pins above do not.
	if [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
		log "updating private apt lists in $PKVM_APT"
		# shellcheck disable=SC2046
		apt-get $(pkvm_apt_opts) -qq update
		touch "$stamp"
	fi
}

# pkvm_apt_download DIR PKG[=VER]... : download .debs into DIR (no install).
pkvm_apt_download() {
	local dir=$1; shift
	mkdir -p "$dir"
	# shellcheck disable=SC2046
	(cd "$dir" && apt-get $(pkvm_apt_opts) -qq download "$@")
}
