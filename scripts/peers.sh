#!/usr/bin/env bash
# scripts/peers.sh KDIR BOCHS INITRD RUNS: the peer-suite runs of the system
# tests (started by scripts/system-test.sh alongside its own runs: every
# emulated machine waits for one of the two machine-wide slots of
# scripts/run-bochs.py, so these fill the slots the pairs leave idle).
# See Documentation/testing.rst, "Peer suites".
#
#   peers-bare-cN   KVM's selftests on bare KVM with pkvm's default view (EPT on)
#                   (selftests/peers/bare-view.txt): the BASELINE, every
#                   selftest on 1 CPU, the subset (selftests/peers/subset.txt)
#                   on 2 (every selftest when the pkvm side runs them all;
#                   a cached full list serves the subset too).  Cached
#                   outside the repository, under
#                   $PKVM_CACHE/peers-baseline/<key>/bare-cN-<list>.txt, the
#                   key hashing the selftest binaries, the kernel (bzImage
#                   and KVM modules), the view, skip and argument lists, the
#                   suite, the tools, the limit and the emulator build
#                   (scripts/setup-bochs.sh): a warm `make test` does
#                   not run it again.  Differences from the list recorded in
#                   the repository (selftests/peers/bare-kvm-cN.txt) are
#                   printed, not judged (they describe the emulator).  Its
#                   header keeps the bare QEMU boot and exit round trips.
#   qemu-pkvm-ept-c1, -c2 (only when named in PKVM_ONLY) QEMU boots under
#                   pkvm with nested_ept=1 named (the default: shadow EPT),
#                   kvm_intel with defaults (EPT on), after the selftests of
#                   PKVM_PEERS_EPT_TESTS; -smp 1 on 1 CPU, -smp 2 on 2 CPUs
#   qemu-pkvm-spt-c1, -c2 (only when named) the same with nested_ept=0: EPT
#                   hidden, KVM's own shadow paging
#   qemu-bare-c1    QEMU boots the test kernel to a marker on bare KVM (every
#                   run: it checks the QEMU packaging from a fresh machine).
#   peers-pkvm-cN   the subset under pkvm (pkvm and kvm_intel with defaults:
#                   EPT on, run on pkvm's shadow EPT), judged
#                   against the baseline by scripts/peers-results.py compare
#                   (no test that passes bare may fail, skip or time out);
#                   QEMU's boot (-smp 1 on 1 CPU, -smp 2 on 2) and the exit
#                   round trips; every difference from the baseline printed
#                   with its explanation from selftests/peers/differences.txt.
# Each CPU count is one chain (baseline if not cached, then pkvm), the chains
# and qemu-bare-c1 run at once; the slots decide who runs.
#
# Environment:
#   PKVM_PEERS_UNDER_PKVM=0   skip the pkvm side (default 1: run it)
#   PKVM_PEERS_TESTS          pkvm side's list: subset (default,
#                             selftests/peers/subset.txt) or all (the long
#                             run, Documentation/testing.rst)
#   PKVM_PEERS_CPUS           CPU counts, default "1 2"
#   PKVM_PEERS_TIMEOUT        bare per-selftest limit in guest seconds (default 10)
#   PKVM_PEERS_PKVM_TIMEOUT   pkvm per-selftest limit in guest seconds (default
#                             90: 2.5 times the slowest subset test measured
#                             under nesting, Documentation/testing.rst)
#   PKVM_PEERS_BARE_MINUTES   wall-time limit of a bare run in minutes (default 75)
#   PKVM_PEERS_PKVM_MINUTES   wall-time limit of a pkvm run (default 75 for the
#                             subset, 240 for all)
#   PKVM_PEERS_STALL          wall seconds of console silence that mean the
#                             emulated machine stopped (default 600)
#   PKVM_PEERS_REFRESH=1      run the bare baseline even when cached
#   PKVM_PEERS_BARE_TESTS     the baseline's list for every CPU count: all or
#                             subset (default: all on 1 CPU, and on 2 when
#                             PKVM_PEERS_TESTS=all, else subset)
#   PKVM_PEERS_RECORD=1       write the results into the records:
#                             selftests/peers/bare-kvm-cN[-subset].txt and
#                             selftests/peers/pkvm-cN.txt (subset) or
#                             pkvm-cN-all.txt (all)
#   PKVM_PEERS_JUDGE_ONLY=1   no emulator: judge (and record) the runs already
#                             in RUNS again, e.g. after editing differences.txt
#   PKVM_PEERS=0              skip every peer run
#   PKVM_PEERS_EPT_TESTS      KVM selftests the qemu-pkvm-ept/-spt runs run
#                             before QEMU's boot, space-separated (default
#                             none; their PEER-RESULT lines are printed, not
#                             judged)
#   PKVM_PEERS_DEBUG=1        the qemu-pkvm-* runs load the debug build and
#                             print the hypervisor's and KVM's counters while
#                             QEMU boots, with the firmware's and the guest
#                             kernel's messages (pkvm.peers_debug=1,
#                             suite-peers.sh); =2: counters only
#   PKVM_ONLY                 as for system-test.sh (run names above)
# Writes $RUNS/peers-bench.txt (the benchmark lines system-test.sh prints).
# Exit status: the number of failed runs.
source "$(dirname "$0")/lib.sh"
kdir=$1 bochs=$2 initrd=$3 runs=$4
bench=$runs/peers-bench.txt
: > "$bench"
[ "${PKVM_PEERS:-1}" != 0 ] || { log "peer suites skipped (PKVM_PEERS=0)"; exit 0; }
cpus_list=${PKVM_PEERS_CPUS:-1 2}
timeout=${PKVM_PEERS_TIMEOUT:-10}
ptimeout=${PKVM_PEERS_PKVM_TIMEOUT:-90}
ptests=${PKVM_PEERS_TESTS:-subset}
under_pkvm=${PKVM_PEERS_UNDER_PKVM:-1}
[ "$under_pkvm" != 0 ] || under_pkvm=
P=$PKVM_ROOT/selftests/peers
results=$PKVM_ROOT/scripts/peers-results.py

want() { [ -z "${PKVM_ONLY:-}" ] || [[ " $PKVM_ONLY " == *" $1 "* ]]; }
any=
for c in $cpus_list; do
	for r in peers-bare-c$c peers-pkvm-c$c; do want $r && any=1; done
done
want qemu-bare-c1 && any=1
# QEMU with nested_ept named (ept: 1, spt: 0): only when named.
ept_run() { [[ " ${PKVM_ONLY:-} " == *" qemu-pkvm-$2-c$1 "* ]]; }
for c in 1 2; do for m in ept spt; do ept_run $c $m && any=1; done; done
[ -n "$any" ] || exit 0

peers_initrd=$PKVM_ROOT/build/peers.cpio.gz
bash "$PKVM_ROOT/scripts/mkinitramfs-peers.sh" "$peers_initrd" "$kdir"
sel=$(bash "$PKVM_ROOT/scripts/build-kvm-selftests.sh" "$kdir")

# boot NAME CPUS MODE TESTS WALL_LIMIT PER_TEST_LIMIT [APPEND]: one peer run.  When a
# test stops the whole emulated machine (the console falls silent for $stall
# s of wall time: no guest-clock limit can fire then), the test is recorded
# as a timeout ("$runs/NAME.partK.stall") and the VM boots again, resuming
# the list after it (pkvm.peers_after), up to 8 times.  The consoles of all
# the boots, in order, are listed in $runs/NAME.consoles; $runs/NAME.out
# ends with the last boot's verdict.
stall=${PKVM_PEERS_STALL:-600}
boot() {
	local name=$1 after= part=0 rc out consoles=() hung
	if [ -n "${PKVM_PEERS_JUDGE_ONLY:-}" ]; then
		# Judge the finished runs in $runs again (after editing
		# differences.txt or the scripts): no emulator.
		[ -s "$runs/$name.consoles" ] || { echo "no run $runs/$name to judge"; return 1; }
		grep -q '"verdict": "PASS"' "$(grep '/console.log$' "$runs/$name.consoles" | tail -1 | sed 's,/console.log$,,')/result.json" 2>/dev/null
		return
	fi
	rm -rf "${runs:?}/$name".part* "$runs/$name.out"
	while :; do
		out=$runs/$name
		[ $part = 0 ] || out=$runs/$name.part$part
		rc=0
		python3 "$PKVM_ROOT/scripts/run-bochs.py" --bochs "$bochs" --kernel "$kdir/arch/x86/boot/bzImage" \
			--initrd "$initrd" --extra-initrd "$peers_initrd" --out "$out" --suite peers \
			--model corei7_icelake_u --cpus "$2" --megs 2048 --timeout "$5" --stall-timeout "$stall" --quiet \
			--append "pkvm.peers=$3 pkvm.peers_tests=$4 pkvm.peers_timeout=$6${after:+ pkvm.peers_after=$after}${7:+ $7}" \
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

# wall NAME: wall seconds of a run in Bochs, summed over its boots.
wall() {
	local w=0 j
	for j in "$runs/$1"/result.json "$runs/$1".part*/result.json; do
		[ -f "$j" ] || continue
		w=$(echo "$w + $(sed -n 's/.*"wall_seconds": \([0-9.]*\).*/\1/p' "$j")" | bc)
	done
	echo "$w"
}

# verdict NAME RC: prints the run's verdict; returns 1 for a failed run.
verdict() {
	local v
	v=$(tail -n 20 "$runs/$1.out" | grep '^== ' || echo "== (no verdict)")
	if [ "$2" = 0 ]; then
		echo "ok   $1 ($(wall "$1") s wall): $v"
	else
		echo "FAIL $1 (exit $2, $(wall "$1") s wall): $v"
		grep -E '^\[.*(not ok|FAIL)' "$runs/$1.out" | head -20
		tail -n 5 "$runs/$1.out"
	fi
	local what='PEER-\(QEMU\|BENCH\)'
	case $1 in qemu-pkvm-*) what='PEER-\(QEMU\|BENCH\|RESULT\)' ;; esac
	# shellcheck disable=SC2046
	grep -h "$what" $(cat "$runs/$1.consoles" 2>/dev/null) /dev/null | sed "s/^\[[^]]*\] /  $1 /" || true
	[ "$2" = 0 ]
}

# The baseline's cache key: everything its results depend on (the emulator
# too: its cache directory names its version and patches).
kkey=$( (cat "$kdir/arch/x86/boot/bzImage" "$kdir"/arch/x86/kvm/kvm*.ko; cat "$sel"/*) | sha256sum | cut -c1-16)
bkey=$( (echo "$kkey $timeout $(basename "$(dirname "$bochs")")"; cat "$P/bare-view.txt" "$P/skip.txt" "$P/args.txt" "$P/subset.txt" \
	"$PKVM_ROOT/selftests/suite-peers.sh" "$PKVM_ROOT/selftests/init" "$PKVM_ROOT/selftests/tools/kvm_exit_bench.c" \
	"$PKVM_ROOT/selftests/tools/kvm_flat.h") |
	sha256sum | cut -c1-16)
bdir=$PKVM_CACHE/peers-baseline/$bkey
mkdir -p "$bdir"
bare_wall=$((60 * ${PKVM_PEERS_BARE_MINUTES:-75}))
# Every selftest under pkvm takes far longer than the subset (see
# Documentation/testing.rst): its own wall limit.
pkvm_wall=$((60 * ${PKVM_PEERS_PKVM_MINUTES:-$([ "$ptests" = all ] && echo 240 || echo 75)}))

# chain C: the runs of one CPU count, in order (baseline if needed, then
# pkvm); its report goes to stdout, its exit status is its failed runs.
chain() {
	local c=$1 fails=0 rc bname=peers-bare-c$1 pname=peers-pkvm-c$1 bt base rec prec
	# The baseline's list: every selftest on 1 CPU and for a pkvm run of
	# every selftest, else the subset; a cached full baseline serves a
	# subset run too (compare --subset judges only the subset).
	bt=${PKVM_PEERS_BARE_TESTS:-$({ [ "$c" = 1 ] || [ "$ptests" = all ]; } && echo all || echo subset)}
	base=$bdir/bare-c$c-$bt.txt
	if [ "$bt" = subset ] && [ -z "${PKVM_PEERS_BARE_TESTS:-}" ] && [ -z "${PKVM_PEERS_REFRESH:-}" ] &&
		[ -s "$bdir/bare-c$c-all.txt" ]; then
		bt=all base=$bdir/bare-c$c-all.txt
	fi
	rec=$P/bare-kvm-c$c.txt
	[ "$bt" = all ] || rec=$P/bare-kvm-c$c-$bt.txt
	# The pkvm record: pkvm-cN.txt for the subset, pkvm-cN-all.txt for all.
	prec=$P/pkvm-c$c.txt
	[ "$ptests" = subset ] || prec=$P/pkvm-c$c-$ptests.txt
	if want $bname && { [ ! -s "$base" ] || [ -n "${PKVM_PEERS_REFRESH:-}" ]; }; then
		log "peers: bare KVM baseline, $c CPU(s), $bt (not cached; key $bkey)"
		rc=0
		boot $bname "$c" bare "$bt" $bare_wall "$timeout" || rc=$?
		verdict $bname $rc || fails=$((fails + 1))
		if [ $rc = 0 ]; then
			mapfile -t cons < "$runs/$bname.consoles"
			if python3 "$results" extract "${cons[@]}" "$base.new" \
				--note "bare KVM baseline: kernel $(basename "$(dirname "$kdir")"), selftests $(basename "$(dirname "$sel")"), $c CPU(s), $bt" \
				--note "kvm_intel $(grep -v '^#' "$P/bare-view.txt")" \
				--note "per-test limit ${timeout} s guest clock; run wall time $(wall $bname) s in Bochs"; then
				mv "$base.new" "$base"
			else
				fails=$((fails + 1))
			fi
		fi
	elif want $bname; then
		echo "ok   $bname: cached baseline $base"
	fi
	if want $bname && [ -s "$base" ]; then
		grep -h '^# pass' "$base" | sed "s/^# /  $bname: /"
		if [ -n "${PKVM_PEERS_RECORD:-}" ]; then
			cp "$base" "$rec"
			log "recorded $rec"
		elif [ -f "$rec" ]; then
			python3 "$results" compare "$rec" "$base" | sed "s/^/  $bname vs record: /" || true
		fi
	fi

	if [ -n "$under_pkvm" ] && want $pname; then
		if [ ! -s "$base" ]; then
			echo "FAIL $pname: no bare baseline to compare with ($base)"
			return $((fails + 1))
		fi
		rc=0
		boot $pname "$c" pkvm "$ptests" $pkvm_wall "$ptimeout" || rc=$?
		verdict $pname $rc || fails=$((fails + 1))
		mapfile -t cons < "$runs/$pname.consoles"
		local res=$runs/$pname/results.txt sub=()
		[ "$ptests" != subset ] || sub=(--subset "$P/subset.txt")
		# (No pipeline here may fail: set -o pipefail and set -e.)
		if python3 "$results" extract "${cons[@]}" "$res" \
			--note "under pkvm: kernel $(basename "$(dirname "$kdir")"), $c CPU(s), $ptests, kvm_intel defaults" \
			--note "per-test limit ${ptimeout} s guest clock (bare: ${timeout} s); run wall time $(wall $pname) s in Bochs"; then
			python3 "$results" compare "$base" "$res" "${sub[@]}" --explained "$P/differences.txt" \
				> "$res.compare" || fails=$((fails + 1))
			sed "s/^/  $pname: /" "$res.compare"
			echo "  $pname: guest seconds per test, bare vs pkvm, largest ratio first (5 of them):"
			python3 "$results" times "$base" "$res" "${sub[@]}" --top 5 | sed "s/^/  $pname: /"
			python3 "$results" bench "c$c" "$base" "$res" >> "$bench"
			if [ -n "${PKVM_PEERS_RECORD:-}" ]; then
				cp "$res" "$prec"
				log "recorded $prec"
			elif [ -f "$prec" ]; then
				python3 "$results" compare "$prec" "$res" > "$res.vs-record" || true
				grep -v '^peers: ' "$res.vs-record" | sed "s/^/  $pname vs record: /" || true
			fi
		else
			fails=$((fails + 1))
		fi
	fi
	return $fails
}

fails=0
pids=()
for c in $cpus_list; do
	chain "$c" > "$runs/peers-c$c.report" 2>&1 & pids+=("c$c:$!")
done
if want qemu-bare-c1; then
	( rc=0; boot qemu-bare-c1 1 bare none 1200 "$timeout" || rc=$?; verdict qemu-bare-c1 $rc ) \
		> "$runs/peers-qemu.report" 2>&1 & pids+=("qemu:$!")
fi
edebug=
etests=none
[ -z "${PKVM_PEERS_EPT_TESTS:-}" ] || etests=list:$(echo $PKVM_PEERS_EPT_TESTS | tr ' ' ',')
[ -z "${PKVM_PEERS_DEBUG:-}" ] || edebug=pkvm.peers_debug=$PKVM_PEERS_DEBUG
for c in 1 2; do
	for m in ept spt; do
		ept_run $c $m || continue
		( rc=0; boot qemu-pkvm-$m-c$c $c pkvm-$m "$etests" 2400 "$ptimeout" $edebug || rc=$?
		  verdict qemu-pkvm-$m-c$c $rc ) > "$runs/peers-qemu-$m-c$c.report" 2>&1 & pids+=("qemu-$m-c$c:$!")
	done
done
for np in "${pids[@]}"; do
	rc=0
	wait "${np#*:}" || rc=$?
	fails=$((fails + rc))
	cat "$runs/peers-${np%%:*}.report"
done
exit $((fails > 100 ? 100 : fails))
