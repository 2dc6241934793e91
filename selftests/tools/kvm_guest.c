// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_guest: a KVM-selftest-like guest through /dev/kvm, checked exit by
 * exit.  Creates a VM with 64 KiB of guest memory at GPA 0 (anonymous, or
 * the mmap of a file with -m FILE), one vCPU in 32-bit flat protected mode
 * (no paging: KVM's shadow MMU runs it in its "nonpaging" mode), and runs
 * this loop at GPA 0x1000:
 *
 *	xor esi, esi
 *   1: inc esi
 *	mov [0x2000], esi	; guest memory write, checked by the tool
 *	xor eax, eax
 *	cpuid			; leaf 0 (exits to KVM, which emulates it)
 *	mov eax, esi
 *	out 0x10, al		; KVM_EXIT_IO, the counter's low byte
 *	hlt			; KVM_EXIT_HLT (no in-kernel irqchip)
 *	jmp 1b
 *
 * Every KVM_RUN must end with the expected exit (IO port 0x10 with the
 * counter, then HLT), RSI and the memory word must hold the counter,
 * RIP must point after the instruction.  One line per run and a summary;
 * exit status 0 if everything matched.  The output does not depend on the
 * hypervisor below KVM, so bare and pkvm runs compare with diff.
 *
 * usage: kvm_guest [-q] [-n ITERATIONS] [-s SECONDS] [-m FILE]
 *   -q       print only the summary
 *   -s SECS  keep the VM (and its vCPU's VMCS) alive SECS seconds after
 *            the loop, printing "holding" first
 *   -m FILE  back guest memory with a MAP_SHARED mapping of FILE (e.g. the
 *            hostile module's remap_pfn_range of a hypervisor page); then
 *            the guest reads GPA 0x3000 into the port: "read=0x..."
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEM_SIZE 0x10000
#define CODE 0x1000
#define DATA 0x2000

static const uint8_t loop_code[] = {
	0x31, 0xf6,			/* xor esi, esi */
	0x46,				/* 1: inc esi */
	0x89, 0x35, 0x00, 0x20, 0x00, 0x00, /* mov [0x2000], esi */
	0x31, 0xc0,			/* xor eax, eax */
	0x0f, 0xa2,			/* cpuid */
	0x89, 0xf0,			/* mov eax, esi */
	0xe6, 0x10,			/* out 0x10, al */
	0xf4,				/* hlt */
	0xeb, 0xee,			/* jmp 1b */
};

/* Reads GPA 0x3000 (the hostile page when -m) and outputs it, then HLT. */
static const uint8_t read_code[] = {
	0xa1, 0x00, 0x30, 0x00, 0x00,	/* mov eax, [0x3000] */
	0xe7, 0x11,			/* out 0x11, eax */
	0xf4,				/* hlt */
	0xeb, 0xfe,			/* jmp $ */
};

static int fail(const char *what)
{
	printf("FAIL %s: %s\n", what, strerror(errno));
	return 1;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->dpl = 0;
	s->db = 1;
	s->s = 1;
	s->g = 1;
}

static const char *reason(int r)
{
	switch (r) {
	case KVM_EXIT_IO: return "io";
	case KVM_EXIT_HLT: return "hlt";
	case KVM_EXIT_SHUTDOWN: return "shutdown";
	case KVM_EXIT_FAIL_ENTRY: return "fail_entry";
	case KVM_EXIT_INTERNAL_ERROR: return "internal_error";
	case KVM_EXIT_MMIO: return "mmio";
	default: return "other";
	}
}

int main(int argc, char **argv)
{
	int quiet = 0, n = 20, opt, bad = 0, ios = 0, hlts = 0, hold = 0;
	const char *file = NULL;
	struct kvm_userspace_memory_region region;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_run *run;
	uint8_t *mem;
	int kvm, vm, vcpu, size;

	while ((opt = getopt(argc, argv, "qn:m:s:")) != -1) {
		if (opt == 'q')
			quiet = 1;
		else if (opt == 'n')
			n = atoi(optarg);
		else if (opt == 's')
			hold = atoi(optarg);
		else if (opt == 'm')
			file = optarg;
		else
			return 2;
	}
	kvm = open("/dev/kvm", O_RDWR);
	if (kvm < 0)
		return fail("open /dev/kvm");
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return fail("KVM_CREATE_VM");
	if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0)
		return fail("KVM_SET_TSS_ADDR");
	mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return fail("mmap");
	memset(mem, 0xf4, MEM_SIZE);
	memcpy(mem + CODE, file ? read_code : loop_code, file ? sizeof(read_code) : sizeof(loop_code));
	/* With -m, slot 0 ends below GPA 0x3000, which slot 1 maps. */
	region = (struct kvm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = 0, .memory_size = file ? 0x3000 : MEM_SIZE,
		.userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return fail("KVM_SET_USER_MEMORY_REGION");
	if (file) {
		/* Slot 1: one page at GPA 0x3000 from FILE. */
		int fd = open(file, O_RDWR);
		void *p;

		if (fd < 0)
			return fail("open -m FILE");
		p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			return fail("mmap -m FILE");
		region = (struct kvm_userspace_memory_region){
			.slot = 1, .guest_phys_addr = 0x3000, .memory_size = 4096,
			.userspace_addr = (uintptr_t)p,
		};
		if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
			return fail("KVM_SET_USER_MEMORY_REGION slot 1");
	}
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		return fail("KVM_CREATE_VCPU");
	size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		return fail("mmap run");
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		return fail("KVM_GET_SREGS");
	seg(&sregs.cs, 0x8, 0xb);
	seg(&sregs.ds, 0x10, 0x3);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.cr0 = 0x11; /* PE | ET */
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		return fail("KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = CODE;
	regs.rflags = 0x2;
	regs.rsp = 0x8000;
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		return fail("KVM_SET_REGS");

	if (file) {
		uint32_t got = 0;

		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			return fail("KVM_RUN");
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x11)
			memcpy(&got, (uint8_t *)run + run->io.data_offset, 4);
		printf("hostile slot: exit=%s read=0x%08x\n", reason(run->exit_reason), got);
		return 0;
	}

	for (int i = 1; i <= n; i++) {
		uint8_t val = 0;

		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			return fail("KVM_RUN");
		if (run->exit_reason == KVM_EXIT_IO) {
			val = *((uint8_t *)run + run->io.data_offset);
			ios++;
		}
		if (run->exit_reason != KVM_EXIT_IO || run->io.port != 0x10 ||
		    run->io.direction != KVM_EXIT_IO_OUT || run->io.size != 1 || val != (uint8_t)i) {
			printf("iteration %d: exit=%s (%u) port=0x%x val=%u: want io port 0x10 val %u\n",
			       i, reason(run->exit_reason), run->exit_reason, run->io.port, val, (uint8_t)i);
			bad++;
			break;
		}
		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			return fail("KVM_RUN");
		if (run->exit_reason != KVM_EXIT_HLT) {
			printf("iteration %d: exit=%s (%u): want hlt\n", i, reason(run->exit_reason),
			       run->exit_reason);
			bad++;
			break;
		}
		hlts++;
		if (ioctl(vcpu, KVM_GET_REGS, &regs) < 0)
			return fail("KVM_GET_REGS");
		if (regs.rsi != (uint64_t)i || regs.rip != CODE + 0x12 ||
		    *(uint32_t *)(mem + DATA) != (uint32_t)i) {
			printf("iteration %d: rsi=%llu rip=0x%llx mem=%u\n", i,
			       (unsigned long long)regs.rsi, (unsigned long long)regs.rip,
			       *(uint32_t *)(mem + DATA));
			bad++;
			break;
		}
		if (!quiet)
			printf("iteration %d: io val=%u hlt rsi=%llu rip=0x%llx mem=%u cpuid0=%llx,%llx,%llx\n",
			       i, val, (unsigned long long)regs.rsi, (unsigned long long)regs.rip,
			       *(uint32_t *)(mem + DATA), (unsigned long long)regs.rbx,
			       (unsigned long long)regs.rcx, (unsigned long long)regs.rdx);
	}
	printf("summary: iterations=%d io_exits=%d hlt_exits=%d %s\n", n, ios, hlts,
	       bad ? "FAIL" : "ok");
	if (hold) {
		printf("holding\n");
		fflush(stdout);
		sleep(hold);
	}
	return bad ? 1 : 0;
}
