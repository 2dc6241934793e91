#!/usr/bin/env bash
# scripts/peers.sh KDIR BOCHS INITRD RUNS: the peer-suite runs of the system
# tests (called by scripts/system-test.sh, inside its machine-wide lock).
# See Documentation/testing.rst, "Peer suites".
#
#   peers-bare-cN   KVM's selftests on bare KVM with pkvm's view
#                   (selftests/peers/bare-view.txt): the BASELINE.  Cached
#                   outside the repository, under $PKVM_CACHE/peers-baseline/
#                   <key>, the key hashing the selftest binaries, the kernel
#                   (bzImage and KVM modules), the view, skip and argument
#                   lists, the suite and the timeout: a warm `make test` does
#                   not run it again.  Differences from the list recorded in
#                   the repository (selftests/peers/bare-kvm-cN.txt) are
#                   printed, not judged (they describe the emulator).
#   qemu-bare-c1    QEMU boots the test kernel to a marker on bare KVM (every
#                   run: it checks the QEMU packaging from a fresh machine).
#   peers-pkvm-cN   only with PKVM_PEERS_UNDER_PKVM=1: the same suite under
#                   pkvm (kvm_intel with defaults), judged against the
#                   baseline by scripts/peers-results.py compare (no test that
#                   passes bare may fail, skip or time out), and QEMU's boot.
#
# Environment:
#   PKVM_PEERS_UNDER_PKVM=1   run the pkvm side (off until nesting works)
#   PKVM_PEERS_TESTS          pkvm side's list: subset (default,
#                             selftests/peers/subset.txt) or all
#   PKVM_PEERS_CPUS           CPU counts, default "1" ("1 2": both)
#   PKVM_PEERS_TIMEOUT        per-selftest limit in guest seconds (default 10)
#   PKVM_PEERS_STALL          wall seconds of console silence that mean the
#                             emulated machine stopped (default 600)
#   PKVM_PEERS_REFRESH=1      run the bare baseline even when cached
#   PKVM_PEERS_BARE_TESTS     the baseline's list: all (default) or subset
#                             (development only: a short cold run; part of the key)
#   PKVM_PEERS_RECORD=1       write the bare results into
#                             selftests/peers/bare-kvm-cN.txt (the record)
#   PKVM_PEERS=0              skip every peer run
#   PKVM_ONLY                 as for system-test.sh (run names above)
# Exit status: the number of failed runs.
source "$(dirname "$0")/lib.sh"
kdir=$1 bochs=$2 initrd=$3 runs=$4
[ "${PKVM_PEERS:-1}" != 0 ] || { log "peer suites skipped (PKVM_PEERS=0)"; exit 0; }
cpus_list=${PKVM_PEERS_CPUS:-1}
timeout=${PKVM_PEERS_TIMEOUT:-10}
ptests=${PKVM_PEERS_TESTS:-subset}
P=$PKVM_ROOT/selftests/peers
results=$PKVM_ROOT/scripts/peers-results.py

want() { [ -z "${PKVM_ONLY:-}" ] || [[ " $PKVM_ONLY " == *" $1 "* ]]; }
any=
for c in $cpus_list; do
	for r in peers-bare-c$c peers-pkvm-c$c; do want $r && any=1; done
done
want qemu-bare-c1 && any=1
[ -n "$any" ] || exit 0

peers_initrd=$PKVM_ROOT/build/peers.cpio.gz
bash "$PKVM_ROOT/scripts/mkinitramfs-peers.sh" "$peers_initrd" "$kdir"
sel=$(bash "$PKVM_ROOT/scripts/build-kvm-selftests.sh" "$kdir")

# boot NAME CPUS MODE TESTS WALL_LIMIT: one peer run.  When a test stops
# the whole emulated machine (the console falls silent for $stall s of wall
# time: no guest-clock limit can fire then), the test is recorded as a
# timeout ("$runs/NAME.partK.stall") and the VM boots again, resuming the
# list after it (pkvm.peers_after), up to 8 times.  The consoles of all the
# boots, in order, are listed in $runs/NAME.consoles; $runs/NAME.out ends
# with the last boot's verdict.
stall=${PKVM_PEERS_STALL:-600}
boot() {
	local name=$1 after= part=0 rc out consoles=() hung
	rm -rf "$runs/$name".part* "$runs/$name.out"
	while :; do
		out=$runs/$name
		[ $part = 0 ] || out=$runs/$name.part$part
		rc=0
		python3 "$PKVM_ROOT/scripts/run-bochs.py" --bochs "$bochs" --kernel "$kdir/arch/x86/boot/bzImage" \
			--initrd "$initrd" --extra-initrd "$peers_initrd" --out "$out" --suite peers \
			--model corei7_icelake_u --cpus "$2" --megs 2048 --timeout "$5" --stall-timeout "$stall" --quiet \
			--append "pkvm.peers=$3 pkvm.peers_tests=$4 pkvm.peers_timeout=$timeout${after:+ pkvm.peers_after=$after}" \
			> "$out.log" 2>&1 || rc=$?
		cat "$out.log" >> "$runs/$name.out"
		consoles+=("$out/console.log")
		[ $rc != 0 ] || break
		grep -q '"reason": "stall' "$out/result.json" 2>/dev/null || break
		! grep -q '^\[[ 0-9.]*\] not ok' "$out/console.log" || break
		# The test that started last and never reported.
		hung=$(grep -o 'PEER-\(START\|RESULT\) [^ ]*' "$out/console.log" | tail -1)
		case "$hung" in "PEER-START "*) hung=${hung#PEER-START } ;; *) break ;; esac
		echo "PEER-RESULT $hung timeout rc=- t=- -- the emulated machine stopped during this test" \
			"(console silent for $stall s of wall time); booted again after it" > "$out.stall"
		echo "  $name: $hung stopped the emulated machine; booting again after it" >> "$runs/$name.out"
		consoles+=("$out.stall")
		after=$hung
		part=$((part + 1))
		[ $part -le 8 ] || break
	done
	printf '%s\n' "${consoles[@]}" > "$runs/$name.consoles"
	return $rc
}
fails=0
verdict() { # NAME RC
	local v
	v=$(tail -n 20 "$runs/$1.out" | grep '^== ' || echo "== (no verdict)")
	if [ "$2" = 0 ]; then
		echo "ok   $1: $v"
	else
		echo "FAIL $1 (exit $2): $v"
		grep -E '^\[.*(not ok|FAIL)' "$runs/$1.out" | head -20
		tail -n 5 "$runs/$1.out"
		fails=$((fails + 1))
	fi
	# shellcheck disable=SC2046
	grep -h 'PEER-QEMU' $(cat "$runs/$1.consoles" 2>/dev/null) /dev/null | sed "s/^\[[^]]*\] /  $1 /" || true
}

# The baseline's cache key: everything its results depend on.
kkey=$( (cat "$kdir/arch/x86/boot/bzImage" "$kdir"/arch/x86/kvm/kvm*.ko; cat "$sel"/*) | sha256sum | cut -c1-16)
btests=${PKVM_PEERS_BARE_TESTS:-all}
bkey=$( (echo "$kkey $timeout $btests"; cat "$P/bare-view.txt" "$P/skip.txt" "$P/args.txt" \
	"$PKVM_ROOT/selftests/suite-peers.sh" "$PKVM_ROOT/selftests/init") | sha256sum | cut -c1-16)
bdir=$PKVM_CACHE/peers-baseline/$bkey
mkdir -p "$bdir"
bare_wall=$((60 * ${PKVM_PEERS_BARE_MINUTES:-75}))

for c in $cpus_list; do
	bname=peers-bare-c$c
	base=$bdir/bare-c$c.txt
	pids=()
	if want $bname && { [ ! -s "$base" ] || [ -n "${PKVM_PEERS_REFRESH:-}" ]; }; then
		log "peers: bare KVM baseline, $c CPU(s) (not cached; key $bkey)"
		boot $bname "$c" bare "$btests" $bare_wall & pids+=("$bname:$!")
	elif want $bname; then
		echo "ok   $bname: cached baseline $base"
	fi
	if [ "$c" = 1 ] && want qemu-bare-c1; then
		boot qemu-bare-c1 1 bare none 1200 & pids+=("qemu-bare-c1:$!")
	fi
	for np in "${pids[@]}"; do
		rc=0
		wait "${np#*:}" || rc=$?
		verdict "${np%%:*}" $rc
		if [ "${np%%:*}" = $bname ] && [ $rc = 0 ]; then
			wall=0
			for j in "$runs/$bname"/result.json "$runs/$bname".part*/result.json; do
				[ -f "$j" ] || continue
				wall=$(echo "$wall + $(sed -n 's/.*"wall_seconds": \([0-9.]*\).*/\1/p' "$j")" | bc)
			done
			mapfile -t cons < "$runs/$bname.consoles"
			if python3 "$results" extract "${cons[@]}" "$base.new" \
				--note "bare KVM baseline: kernel $(basename "$(dirname "$kdir")"), selftests $(basename "$(dirname "$sel")"), $c CPU(s)" \
				--note "kvm_intel $(grep -v '^#' "$P/bare-view.txt")" \
				--note "per-test limit ${timeout} s guest clock; run wall time ${wall} s in Bochs"; then
				mv "$base.new" "$base"
			else
				fails=$((fails + 1))
			fi
		fi
	done
	if want $bname && [ -s "$base" ]; then
		rec=$P/bare-kvm-c$c.txt
		grep -h '^# pass' "$base" | sed "s/^# /  $bname: /"
		if [ -n "${PKVM_PEERS_RECORD:-}" ]; then
			cp "$base" "$rec"
			log "recorded $rec"
		elif [ -f "$rec" ]; then
			python3 "$results" compare "$rec" "$base" | sed "s/^/  vs record: /" || true
		fi
	fi

	pname=peers-pkvm-c$c
	if [ -n "${PKVM_PEERS_UNDER_PKVM:-}" ] && want $pname; then
		[ -s "$base" ] || { echo "FAIL $pname: no bare baseline to compare with"; fails=$((fails + 1)); continue; }
		rc=0
		boot $pname "$c" pkvm "$ptests" $bare_wall || rc=$?
		verdict $pname $rc
		mapfile -t cons < "$runs/$pname.consoles"
		if python3 "$results" extract "${cons[@]}" "$runs/$pname/results.txt"; then
			if [ "$ptests" = subset ]; then
				python3 "$results" compare "$base" "$runs/$pname/results.txt" --subset "$P/subset.txt" || fails=$((fails + 1))
			else
				python3 "$results" compare "$base" "$runs/$pname/results.txt" || fails=$((fails + 1))
			fi
		else
			fails=$((fails + 1))
		fi
	fi
done
exit $((fails > 100 ? 100 : fails))
