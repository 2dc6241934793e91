# selftests/reserve-tests.sh: the reserve for shadow state
# (Documentation/nested.rst "Memory for shadow state"), sourced by the
# pagestate and nested suites.  Uses their ctl/hostile helpers.
#
# pagestate: reserve_filled reserve_hostile reserve_scrubbed
# nested:    reserve_many_guests

# Hypercalls the tests make through the hostile module.
RESERVE_DONATE=0x14
HYP_DONATE_HOST=0x11
HOST_DONATE_HYP=0x10
# Hypercall results as the hostile module prints them.
R_EPERM='^ok rax=0xffffffffffffffff '
R_EINVAL='^ok rax=0xffffffffffffffea '
R_EBUSY='^ok rax=0xfffffffffffffff0 '
# The last CPU (the other one in 2-CPU runs).
LAST_CPU=$(( $(grep -c ^processor /proc/cpuinfo) - 1 ))
# A batch header's magic word ("pkvmresv").
RESERVE_MAGIC=0x767365726d766b70

# The pagestate suite's helpers, for the nested suite.
command -v ctl > /dev/null || ctl() { echo "$*" > $CTL || { echo "write '$*' failed"; return 1; }; cat $CTL; }
command -v expect_ctl > /dev/null || expect_ctl() {
	pat=$1; shift
	r=$(ctl "$@") || return 1
	echo "$* -> $r"
	echo "$r" | grep -q -E "$pat" || fail "'$*' answered '$r', want /$pat/"
}

# reserve_field NAME: a field of the debug interface's `reserve` line.
reserve_field() { ctl reserve | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# At load the host half filled the reserve: it wants nothing, holds
# batches of 16 pages, and the invariant checker agrees with its books.
t_reserve_filled() {
	r=$(ctl reserve); echo "$r"
	echo "$r" | grep -q -E '^ok free=[0-9]+ wanted=0 total=[0-9]+ first_pfn=0x[0-9a-f]+$' || fail "reserve: $r"
	[ "$(reserve_field free)" -ge 64 ] || fail "reserve below its target (64 free) after load"
	[ $(( $(reserve_field total) % 16 )) = 0 ] || fail "reserve total not in 16-page batches"
	dmesg | grep 'reserve for shadow state'
	expect_ctl '^ok invariants hold' check
}

# The host calls RESERVE_DONATE with bad arguments and tries to take
# reserve pages back: every call is refused with its errno, nothing
# changes hands, the invariants hold.  The last attack (HYP_DONATE_HOST of
# a reserve page, which would hand the host the hypervisor's shadow
# state) succeeds without the reserve check in `PageStates::hyp_donate_host`.
t_reserve_hostile() {
	insmod /lib/modules/pkvm_hostile.ko || fail "insmod pkvm_hostile" || return 1
	before=$(ctl reserve); echo "before: $before"
	first=$(reserve_field first_pfn)
	pool=$(ctl pool_pa | sed -n 's/^ok //p')
	ppfn=$(printf '0x%x' $((pool >> 12)))
	page=$(hostile alloc 0xabababababababab | sed -n 's/^ok //p')
	[ -n "$page" ] || { fail "hostile alloc"; return 1; }
	# Counts outside 2..512, on a page the host owns: EINVAL.
	for n in 0 1 513 0x100000 0xffffffffffffffff; do
		expect_hostile "$R_EINVAL" vmcall 0 $RESERVE_DONATE $page $n
	done
	# Frames beyond MAXPHYADDR / the ABI: EINVAL.
	expect_hostile "$R_EINVAL" vmcall 0 $RESERVE_DONATE 0xffffffffffffffff 2
	expect_hostile "$R_EINVAL" vmcall $LAST_CPU $RESERVE_DONATE 0x10000000000 2
	# MMIO (local APIC, I/O APIC, VGA, a PCI BAR): EINVAL.
	for pfn in 0xfee00 0xfec00 0xa0 $(pci_bar_pfn); do
		expect_hostile "$R_EINVAL" vmcall 0 $RESERVE_DONATE $pfn 2
	done
	# The pool, the module image, a reserve page: not the host's (EPERM).
	expect_hostile "$R_EPERM" vmcall 0 $RESERVE_DONATE $ppfn 2
	va=$(grep ' pkvm_vmexit_entry' /proc/kallsyms | head -1 | cut -d' ' -f1)
	text=$(hostile pfn 0x$va | sed -n 's/^ok \(0x[0-9a-f]*\)$/\1/p')
	[ -n "$text" ] && expect_hostile "$R_EPERM" vmcall $LAST_CPU $RESERVE_DONATE $text 2
	expect_hostile "$R_EPERM" vmcall 0 $RESERVE_DONATE $first 2
	expect_hostile "$R_EPERM" vmcall 0 $RESERVE_DONATE $(printf '0x%x' $((first + 15))) 2
	# A page donated elsewhere (to the hypervisor, outside the reserve).
	expect_hostile '^ok rax=0x0 ' vmcall 0 $HOST_DONATE_HYP $page 1
	expect_hostile "$R_EPERM" vmcall $LAST_CPU $RESERVE_DONATE $page 2
	expect_hostile '^ok rax=0x0 ' vmcall 0 $HYP_DONATE_HOST $page 1
	expect_hostile '^ok 0xabababababababab' read $page 0
	# Reserve pages never go back to the host (header, any page, a range
	# reaching into the batch): EBUSY, and the host still cannot read them.
	for p in $first $(printf '0x%x' $((first + 1))) $(printf '0x%x' $((first + 15))); do
		expect_hostile "$R_EBUSY" vmcall 0 $HYP_DONATE_HOST $p 1
	done
	expect_hostile "$R_EBUSY" vmcall $LAST_CPU $HYP_DONATE_HOST $(printf '0x%x' $((first - 1))) 2
	expect_hostile '^fault' read $first 0
	expect_hostile '^fault' read $(printf '0x%x' $((first + 3))) 0
	expect_hostile '^fault' write $(printf '0x%x' $((first + 3))) 0 0x1234
	after=$(ctl reserve); echo "after: $after"
	expect_eq "reserve after the attacks" "$after" "$before"
	expect_ctl '^ok invariants hold' check
	rmmod pkvm_hostile
}

# reserve_given_back TOTAL: the unload's last message says the reserve's
# TOTAL pages went back, with the pool chunks grown on demand (512 pages
# each; host/reserve.rs).
reserve_given_back() {
	want=$1
	line=$(dmesg | tail -5 | grep 'reserve and grown pool chunks: ' | tail -1)
	echo "${line#*pkvm_x86: }"
	n=$(echo "$line" | sed -n 's/.*chunks: \([0-9]*\) pages given back (\([0-9]*\) chunks).*/\1 \2/p')
	[ -n "$n" ] || { fail "no 'given back' message at unload"; return; }
	pages=${n% *} chunks=${n#* }
	expect_eq "pages given back at unload (the reserve's $want and $chunks grown chunks)" "$pages" "$((want + 512 * chunks))"
}

# Unload gives the reserve back, scrubbed: the batch header's magic is
# gone from the first batch's pages, and the host half says so.
t_reserve_scrubbed() {
	insmod /lib/modules/pkvm_x86-debug.ko debug=1 || fail "insmod debug=1" || return 1
	first=$(reserve_field first_pfn)
	total=$(reserve_field total)
	echo "first batch at $first, $total pages"
	pkvm_rmmod || fail "rmmod" || return 1
	dmesg | grep 'reserve: ' | tail -1
	reserve_given_back "$total"
	insmod /lib/modules/pkvm_hostile.ko || fail "insmod pkvm_hostile" || return 1
	expect_hostile '^ok 0 0$' scan $first 16 $RESERVE_MAGIC
	rmmod pkvm_hostile
}

# Nested VMX beyond the old fixed cache of 16 vmcs12s: 20 VMs at once on
# 2 CPUs, each guest's vCPU migrating between them (KVM's VMCLEAR on every
# move), all run to completion with the right results; the vmcs12 cache
# grew from the reserve to hold them (more than 16 pages taken), the
# reserve was refilled when it ran low, the invariants hold with the
# guests, and every pin and page comes back after `rmmod kvm_intel`.
t_reserve_many_guests() {
	insmod /lib/modules/pkvm_x86-debug.ko debug=1 || fail "insmod debug" || return 1
	insmod /lib/modules/kvm.ko && insmod /lib/modules/kvm-intel.ko || fail "kvm_intel" || return 1
	free0=$(reserve_field free); total0=$(reserve_field total)
	echo "reserve before: $(ctl reserve)"
	n=20
	pids=
	for i in $(seq 1 $n); do
		# -s: the VM (and its vCPU's vmcs12) stays alive after the loop,
		# so all of them are alive at once.
		/bin/kvm_guest -q -n 20 -s 2 > /tmp/many.$i 2>&1 & pids="$pids $!"
	done
	ok=0
	for p in $pids; do wait $p && ok=$((ok + 1)); done
	for i in $(seq 1 $n); do
		grep -q '^summary: iterations=20 io_exits=20 hlt_exits=20 ok$' /tmp/many.$i ||
			{ fail "guest $i: $(tail -n 2 /tmp/many.$i)"; }
	done
	expect_eq "guests that succeeded" $ok $n
	echo "reserve after: $(ctl reserve)"
	free1=$(reserve_field free); total1=$(reserve_field total)
	# In use = held - free - one header per 16-page batch.
	taken=$(( (total1 - free1 - total1 / 16) - (total0 - free0 - total0 / 16) ))
	echo "reserve pages the vmcs12 cache took: $taken"
	[ "$taken" -gt 16 ] || fail "the vmcs12 cache did not grow beyond 16 entries ($taken pages)"
	expect_ctl '^ok invariants hold' check
	/bin/workload 4 1 > /dev/null || fail "host broken after $n guests"
	rmmod kvm_intel; rmmod kvm
	echo nested_stats 0 > $CTL
	expect_eq "pinned frames after rmmod kvm_intel" "$(cat $CTL | tr ' ' '\n' | sed -n 's/^pinned_frames=//p')" 0
	total=$(reserve_field total)
	pkvm_rmmod || fail "rmmod pkvm_x86 after kvm_intel" || return 1
	reserve_given_back "$total"
}
