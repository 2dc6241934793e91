# selftests/suite-pagestate.sh: the page-state machine on the running
# hypervisor, driven from user space through the debug interface
# (pkvm_x86 debug=1).  The host must lose access to what it gives away and
# get it back (zeroed where a guest owned it) when it is returned.

DBG=/sys/kernel/debug/pkvm_x86
CTL=$DBG/debug/ctl
TESTS="insmod_debug host_ept_types pool_unreachable donate_hyp_and_back hostile_alias double_donate_refused \
share_hyp protected_vm normal_vm bad_commands nmis_not_lost hostile_hypercalls rmmod_gives_back rmmod_scrubs dmesg_clean"

ctl() { echo "$*" > $CTL || { echo "write '$*' failed"; return 1; }; cat $CTL; }
# expect_ctl PATTERN CMD...: run CMD, check the reply matches PATTERN
expect_ctl() {
	pat=$1; shift
	r=$(ctl "$@") || return 1
	echo "$* -> $r"
	echo "$r" | grep -q -E "$pat" || fail "'$*' answered '$r', want /$pat/"
}

t_insmod_debug() {
	insmod /lib/modules/pkvm_x86-debug.ko debug=1 || fail "insmod debug=1"
	[ -w $CTL ] || fail "no debug interface"
	expect_ctl '^ok 0:0x[0-9a-f]+ 1:0x[0-9a-f]+ 2:0x[0-9a-f]+ 3:0x[0-9a-f]+' alloc 4
	expect_ctl '^ok invariants hold' check
}

t_host_ept_types() {
	expect_ctl '^ok level=[0-9] .*rwx.* mt=6 .*Owned' lookup 0
	expect_ctl '^ok level=[0-9] ' lookup_pa 0xfee00000
	expect_ctl '^ok level=3 .*rwx.*Owned' lookup_pa 0x8000000000
}

t_pool_unreachable() {
	expect_ctl '^fault -14' probe_pool
}

t_donate_hyp_and_back() {
	expect_ctl '^ok 0xa0a0a0a0a0a0a0a0' read 0
	expect_ctl '^ok 0$' donate_hyp 0
	expect_ctl '^fault -14' read 0
	expect_ctl '^fault -14' write 0
	expect_ctl 'EptEntry\(0x0000000000000000' lookup 0
	expect_ctl '^ok invariants hold' check
	expect_ctl '^ok 0$' undonate_hyp 0
	expect_ctl '^ok 0xa0a0a0a0a0a0a0a0' read 0
	expect_ctl '^ok ' write 0
	expect_ctl '^ok invariants hold' check
}

# The hostile host (selftests/hostile) does not use pkvm's debug interface:
# it maps the frame of a donated page with a fresh vmap() alias of its own
# and donates through its own VMCALL.  The protection is the host EPT's,
# not the absence of a kernel mapping.
H=/sys/kernel/debug/pkvm_hostile/ctl
hostile() { echo "$*" > $H || { echo "hostile '$*' refused"; return 1; }; cat $H; }
expect_hostile() {
	pat=$1; shift
	r=$(hostile "$@") || return 1
	echo "hostile $* -> $r"
	echo "$r" | grep -q -E "$pat" || fail "hostile '$*' answered '$r', want /$pat/"
}

t_hostile_alias() {
	insmod /lib/modules/pkvm_hostile.ko || fail "insmod pkvm_hostile"
	pa=$(ctl alloc 1 | sed -n 's/.* 4:\(0x[0-9a-f]*\).*/\1/p')
	[ -n "$pa" ] || { fail "no test page 4"; return; }
	pfn=$(printf '0x%x' $((pa >> 12)))
	expect_hostile '^ok 0xa4a4a4a4a4a4a4a4' read $pfn 8
	# HOST_DONATE_HYP (0x10) from CPU 0, by the hostile module itself.
	expect_hostile '^ok rax=0x0 ' vmcall 0 0x10 $pfn 1
	expect_hostile '^fault' read $pfn 8
	expect_hostile '^fault' write $pfn 8 0x1234
	expect_ctl '^ok invariants hold' check
	# HYP_DONATE_HOST (0x11): the page comes back, contents intact.
	expect_hostile '^ok rax=0x0 ' vmcall 0 0x11 $pfn 1
	expect_hostile '^ok 0xa4a4a4a4a4a4a4a4' read $pfn 8
	expect_hostile '^ok' write $pfn 8 0x1234
	expect_hostile '^ok 0x1234$' read $pfn 8
	rmmod pkvm_hostile || fail "rmmod pkvm_hostile"
}

t_double_donate_refused() {
	expect_ctl '^ok 0$' donate_hyp 1
	expect_ctl '^err 1$' donate_hyp 1
	expect_ctl '^ok 0$' undonate_hyp 1
	expect_ctl '^err 1$' undonate_hyp 1
	expect_ctl '^ok 0xa1a1a1a1a1a1a1a1' read 1
}

t_share_hyp() {
	expect_ctl '^ok 0$' share_hyp 1
	expect_ctl '^ok 0xa1a1a1a1a1a1a1a1' read 1
	expect_ctl 'SharedOwned' lookup 1
	expect_ctl '^err 1$' donate_hyp 1
	expect_ctl '^ok invariants hold' check
	expect_ctl '^ok 0$' unshare_hyp 1
	expect_ctl 'rwx.*Owned' lookup 1
}

t_protected_vm() {
	expect_ctl '^ok handle=0x' vm_create protected
	expect_ctl '^ok 0$' donate_guest 2 16
	expect_ctl '^fault -14' read 2
	expect_ctl '^ok invariants hold' check
	# A protected VM's page shared back (virtio): the host can read it.
	expect_ctl '^ok 0$' guest_share_host 16
	expect_ctl '^ok 0xa2a2a2a2a2a2a2a2' read 2
	expect_ctl 'SharedBorrowed' lookup 2
	expect_ctl '^ok 0$' guest_unshare_host 16
	expect_ctl '^fault -14' read 2
	expect_ctl '^ok invariants hold' check
	# Teardown reclaims it, zeroed.
	expect_ctl '^ok' vm_teardown
	expect_ctl '^ok 0x0000000000000000' read 2
	expect_ctl '^ok invariants hold' check
}

t_normal_vm() {
	expect_ctl '^ok handle=0x' vm_create normal
	expect_ctl '^ok 0$' share_guest 3 32
	expect_ctl '^ok 0xa3a3a3a3a3a3a3a3' read 3
	expect_ctl 'SharedOwned' lookup 3
	expect_ctl '^err ' donate_guest 0 33
	expect_ctl '^err 1$' donate_hyp 3
	expect_ctl '^ok invariants hold' check
	expect_ctl '^ok' vm_teardown
	expect_ctl '^ok 0xa3a3a3a3a3a3a3a3' read 3
	expect_ctl 'rwx.*Owned' lookup 3
}

t_bad_commands() {
	if echo "donate_hyp 99" > $CTL 2>/dev/null; then fail "bad index accepted"; fi
	if echo "frobnicate" > $CTL 2>/dev/null; then fail "unknown command accepted"; fi
	expect_ctl '^err ' lookup_pa 0xffffffffffffffff
	expect_ctl '^ok invariants hold' check
}

# NMIs sent one at a time to a CPU busy taking VM exits: every one must
# reach the host, including those that arrive while the CPU is in root
# mode (the hypervisor re-injects them).  Needs two CPUs.
t_nmis_not_lost() {
	[ "$(grep -c ^processor /proc/cpuinfo)" -ge 2 ] || { echo "one CPU: skipped"; return 0; }
	taskset -c 1 /bin/cpuid -loop 100000000 &
	busy=$!
	r=$(taskset -c 0 sh -c "echo nmi_test 1 200 > $CTL && cat $CTL")
	kill $busy
	echo "nmi_test 1 200 -> $r"
	echo "$r" | grep -q '^ok sent=200 seen=200 ' || fail "NMIs lost: $r"
	in_root=$(echo "$r" | sed -n 's/.*in_root=\([0-9]*\).*/\1/p')
	[ "${in_root:-0}" -ge 1 ] || fail "no NMI hit root mode; the test did not exercise it"
}

# Thousands of hypercalls with hostile arguments (test pages, the pool,
# memory beyond RAM, absurd values): the host stays up, the ownership
# invariants hold, and the test pages can all be brought home.
t_hostile_hypercalls() {
	for seed in 1 2 3; do
		expect_ctl '^ok calls=2000 .* invariants hold, arena back' fuzz 2000 $seed || return 1
	done
	expect_ctl '^fault -14' probe_pool
	/bin/workload 4 1 > /dev/null || fail "host broken after the fuzzing"
}

t_rmmod_gives_back() {
	# Leave a page donated: unload must still give everything back.
	expect_ctl '^ok 0$' donate_hyp 0
	pkvm_rmmod || fail "rmmod"
	dmesg | grep 'pkvm_x86' | tail -3
	if dmesg | grep -q 'leaking'; then fail "pages leaked on unload"; fi
}

# Unload scrubs: the hostile host fills a page with a pattern and leaves it
# donated to the hypervisor, fills a VM's metadata page with another and
# creates (then tears down) a VM whose host id is a third pattern, which
# the hypervisor records in its pool.  After rmmod none of the patterns is
# left: not in the donated page, not in the metadata page, not in the
# pool's first chunk.
t_rmmod_scrubs() {
	insmod /lib/modules/pkvm_x86-debug.ko debug=1 || fail "insmod debug=1" || return 1
	insmod /lib/modules/pkvm_hostile.ko || fail "insmod pkvm_hostile" || return 1
	pool=$(ctl pool_pa | sed -n 's/^ok //p')
	ppfn=$(printf '0x%x' $((pool >> 12)))
	D=0xd0d0d0d0d0d0d0d0 M=0x3e7a3e7a3e7a3e7a V=0x5ca1ab1e5ca1ab1e
	d=$(hostile alloc $D | sed -n 's/^ok //p')
	m=$(hostile alloc $M | sed -n 's/^ok //p')
	expect_hostile '^ok rax=0x0 ' vmcall 0 0x10 $d 1
	r=$(hostile vmcall 0 0x20 $V 1 $m 1); echo "VM_CREATE -> $r"
	h=$(echo "$r" | sed -n 's/^ok rax=\(0x[0-9a-f]*\) .*/\1/p')
	[ -n "$h" ] && [ $((h)) -gt 0 ] || fail "VM_CREATE: $r" || return 1
	expect_hostile '^fault' read $d 0
	expect_hostile '^ok rax=0x0 ' vmcall 0 0x21 $h
	rmmod pkvm_hostile
	pkvm_rmmod || fail "rmmod"
	insmod /lib/modules/pkvm_hostile.ko || fail "insmod pkvm_hostile" || return 1
	expect_hostile '^ok 0 0$' scan $d 1 $D
	expect_hostile '^ok 512 0$' scan $d 1 0
	expect_hostile '^ok 0 0$' scan $m 1 $M
	expect_hostile '^ok 0 0$' scan $ppfn 512 $V
	rmmod pkvm_hostile
}

t_dmesg_clean() {
	dmesg_clean
}
