// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_exit_bench: the guest exit round trip in guest TSC cycles, through
 * /dev/kvm, for issue 9's benchmark "guest exit round trip under pkvm vs
 * bare KVM with the same view".  The same binary runs on bare KVM and on
 * the host deprivileged by pkvm (selftests/suite-peers.sh, test
 * exit_bench); the numbers are comparable because the guest measures them
 * itself, with RDTSC around one exiting instruction.
 *
 * A VM with 64 KiB of memory at GPA 0, one vCPU in 32-bit flat protected
 * mode without paging, no in-kernel irqchip, runs at GPA 0x1000:
 *
 *   top: rdtsc; mov esi, eax; xor eax, eax; cpuid;  rdtsc; sub eax, esi
 *        out 0x12, eax            ; report: the CPUID round trip
 *        rdtsc; mov esi, eax; out 0x10, al;         rdtsc; sub eax, esi
 *        out 0x12, eax            ; report: the port I/O round trip
 *        rdtsc; mov esi, eax; hlt;                  rdtsc; sub eax, esi
 *        out 0x12, eax            ; report: the HLT round trip
 *        jmp top
 *
 * CPUID exits to KVM, which emulates it in the kernel and resumes the
 * guest; OUT to port 0x10 and HLT (no irqchip) exit to this program
 * (KVM_EXIT_IO, KVM_EXIT_HLT), which calls KVM_RUN again at once: those
 * two are full round trips through user space.  The reports (OUT 0x12,
 * outside the timed windows) carry the low 32 bits of each delta.  The
 * first -w iterations warm up (KVM's shadow page tables, caches) and are
 * dropped; of the next -n the median and the minimum of each kind are
 * printed:
 *
 *   exit_bench n=N cpuid=MEDIAN io=MEDIAN hlt=MEDIAN min_cpuid=.. min_io=.. min_hlt=..
 *
 * Every exit is checked (port, size, direction, order); any surprise
 * prints "FAIL ..." and exits 1.
 *
 * usage: kvm_exit_bench [-n ITERATIONS] [-w WARMUP]
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "kvm_flat.h"

#define MEM_SIZE 0x10000
#define CODE 0x1000
#define PORT_IO 0x10
#define PORT_REPORT 0x12
#define MAX_N 100000

static const uint8_t bench_code[] = {
	/* CPUID */
	0x0f, 0x31,		/* top: rdtsc */
	0x89, 0xc6,		/* mov esi, eax */
	0x31, 0xc0,		/* xor eax, eax */
	0x0f, 0xa2,		/* cpuid */
	0x0f, 0x31,		/* rdtsc */
	0x29, 0xf0,		/* sub eax, esi */
	0xe7, PORT_REPORT,	/* out 0x12, eax */
	/* port I/O */
	0x0f, 0x31,		/* rdtsc */
	0x89, 0xc6,		/* mov esi, eax */
	0xe6, PORT_IO,		/* out 0x10, al */
	0x0f, 0x31,		/* rdtsc */
	0x29, 0xf0,		/* sub eax, esi */
	0xe7, PORT_REPORT,	/* out 0x12, eax */
	/* HLT */
	0x0f, 0x31,		/* rdtsc */
	0x89, 0xc6,		/* mov esi, eax */
	0xf4,			/* hlt */
	0x0f, 0x31,		/* rdtsc */
	0x29, 0xf0,		/* sub eax, esi */
	0xe7, PORT_REPORT,	/* out 0x12, eax */
	0xeb, 0xd9,		/* jmp top (-39) */
};

enum kind { CPUID, IO, HLT, KINDS };
static const char *const kind_name[KINDS] = { "cpuid", "io", "hlt" };

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* One KVM_RUN that must end in OUT to PORT with SIZE bytes; *val gets the data. */
static int expect_out(int vcpu, struct kvm_run *run, uint16_t port, uint8_t size, uint32_t *val)
{
	if (ioctl(vcpu, KVM_RUN, 0) < 0)
		return kvm_flat_fail("KVM_RUN");
	if (run->exit_reason != KVM_EXIT_IO || run->io.direction != KVM_EXIT_IO_OUT ||
	    run->io.port != port || run->io.size != size || run->io.count != 1) {
		printf("FAIL exit %u (port 0x%x size %u): want OUT to port 0x%x, %u bytes\n",
		       run->exit_reason, run->io.port, run->io.size, port, size);
		return 1;
	}
	*val = 0;
	memcpy(val, (uint8_t *)run + run->io.data_offset, size);
	return 0;
}

int main(int argc, char **argv)
{
	int n = 200, warm = 20, opt, kvm, vm, vcpu, size;
	struct kvm_run *run;
	uint32_t *samples[KINDS], mins[KINDS], meds[KINDS];
	uint8_t *mem;

	while ((opt = getopt(argc, argv, "n:w:")) != -1) {
		if (opt == 'n')
			n = atoi(optarg);
		else if (opt == 'w')
			warm = atoi(optarg);
		else
			return 2;
	}
	if (n < 1 || n > MAX_N || warm < 0 || warm > MAX_N) {
		printf("FAIL usage: kvm_exit_bench [-n 1..%d] [-w 0..%d]\n", MAX_N, MAX_N);
		return 2;
	}
	for (int k = 0; k < KINDS; k++) {
		samples[k] = calloc(n, sizeof(uint32_t));
		if (!samples[k])
			return kvm_flat_fail("calloc");
	}
	kvm = open("/dev/kvm", O_RDWR);
	if (kvm < 0)
		return kvm_flat_fail("open /dev/kvm");
	if (kvm_flat_vm(kvm, MEM_SIZE, &vm, &mem))
		return 1;
	memcpy(mem + CODE, bench_code, sizeof(bench_code));
	if (kvm_flat_slot(vm, 0, 0, MEM_SIZE, mem, "KVM_SET_USER_MEMORY_REGION") ||
	    kvm_flat_vcpu(kvm, vm, 0, &vcpu, &run, &size) || kvm_flat_regs(vcpu, CODE))
		return 1;

	for (int i = 0; i < warm + n; i++) {
		uint32_t d[KINDS], al;

		/* CPUID: handled in KVM, only its report reaches us. */
		if (expect_out(vcpu, run, PORT_REPORT, 4, &d[CPUID]))
			return 1;
		/* Port I/O: the timed exit, then its report. */
		if (expect_out(vcpu, run, PORT_IO, 1, &al) ||
		    expect_out(vcpu, run, PORT_REPORT, 4, &d[IO]))
			return 1;
		/* HLT: the timed exit, then its report. */
		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			return kvm_flat_fail("KVM_RUN");
		if (run->exit_reason != KVM_EXIT_HLT) {
			printf("FAIL exit %u: want HLT\n", run->exit_reason);
			return 1;
		}
		if (expect_out(vcpu, run, PORT_REPORT, 4, &d[HLT]))
			return 1;
		if (i >= warm)
			for (int k = 0; k < KINDS; k++)
				samples[k][i - warm] = d[k];
	}
	for (int k = 0; k < KINDS; k++) {
		qsort(samples[k], n, sizeof(uint32_t), cmp_u32);
		mins[k] = samples[k][0];
		meds[k] = samples[k][n / 2];
		if (!mins[k]) {
			printf("FAIL %s: a round trip of 0 TSC cycles (RDTSC not advancing?)\n",
			       kind_name[k]);
			return 1;
		}
	}
	printf("exit_bench n=%d cpuid=%u io=%u hlt=%u min_cpuid=%u min_io=%u min_hlt=%u\n", n,
	       meds[CPUID], meds[IO], meds[HLT], mins[CPUID], mins[IO], mins[HLT]);
	return 0;
}
