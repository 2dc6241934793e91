// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_vcpus_rr: several vCPUs of one VM run in turn from ONE thread that
 * moves between host CPUs, as KVM's msrs_test does (three vCPUs, one task,
 * not pinned).  Every move makes KVM VMCLEAR the vCPU's VMCS on the CPU it
 * was loaded on (an IPI) and VMPTRLD it on the new one; every turn switches
 * the current VMCS; each vCPU's first VMLAUNCH comes after such a move
 * between its KVM_SET_REGS and its first KVM_RUN.  Several rounds create
 * and free the VM, so VMCS pages are freed and allocated again.
 *
 * Each vCPU k runs its own copy of this loop (32-bit flat protected mode,
 * no paging, set up by kvm_flat.h), at GPA 0x1000 + 0x100 * k, storing to
 * 0x2000 + 4 * k:
 *
 *	xor esi, esi
 *   1: inc esi
 *	mov [0x2000 + 4 * k], esi
 *	mov edi, C
 *   2: xor eax, eax
 *	cpuid			; C exits KVM handles in the kernel
 *	dec edi
 *	jnz 2b
 *	mov eax, esi
 *	out 0x10 + k, al	; KVM_EXIT_IO: the vCPU's port, the counter
 *	hlt			; KVM_EXIT_HLT
 *	jmp 1b
 *
 * Every KVM_RUN must end with the expected exit (the vCPU's port and
 * counter, then HLT), and RSI, RDI, RAX, RIP and the memory word must
 * match: a vCPU entered with another vCPU's or a stale guest state (RIP 0
 * of a VMCS whose VMWRITEs were lost, another vCPU's counter, a CPUID
 * exit whose RIP advance was lost) shows at once.  The C CPUID exits of
 * each iteration happen inside one KVM_RUN, where KVM writes the guest's
 * RIP through the VMCS (VMCS shadowing under pkvm) at every re-entry;
 * with -m a second thread moves the running thread between CPUs all the
 * time, so KVM is preempted inside KVM_RUN and VMCLEARs the vCPU's VMCS
 * on the old CPU (an IPI) and VMPTRLDs it on the new one between such a
 * VMWRITE and the VMRESUME it is for.  Exit status 0 if everything
 * matched.
 *
 * usage: kvm_vcpus_rr [-v VCPUS] [-n ITERATIONS] [-r ROUNDS] [-c CPUIDS] [-m]
 *   (defaults 3 vCPUs, 20 iterations, 3 rounds, 1 CPUID per iteration,
 *   no migrating thread)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kvm_flat.h"

#define MEM_SIZE 0x10000
#define CODE 0x1000
#define DATA 0x2000
#define MAX_VCPUS 8

static int ncpus;
static uint32_t cpuids = 1;
static volatile int stop_migrating;
static pid_t main_tid;

/* Moves this thread to host CPU `c % ncpus` (a migration if it changes). */
static void move_to(int c)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(c % ncpus, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

/* The HLT exit's RIP: after `hlt`, at offset 26 of the loop. */
#define LOOP_AFTER_HLT 0x1a

static void put_code(uint8_t *mem, int k)
{
	uint32_t data = DATA + 4 * k;
	uint8_t code[] = {
		0x31, 0xf6,				/* xor esi, esi */
		0x46,					/* 1: inc esi */
		0x89, 0x35, 0, 0, 0, 0,			/* mov [data], esi */
		0xbf, 0, 0, 0, 0,			/* mov edi, cpuids */
		0x31, 0xc0,				/* 2: xor eax, eax */
		0x0f, 0xa2,				/* cpuid */
		0x4f,					/* dec edi */
		0x75, 0xf9,				/* jnz 2b */
		0x89, 0xf0,				/* mov eax, esi */
		0xe6, (uint8_t)(0x10 + k),		/* out 0x10 + k, al */
		0xf4,					/* hlt */
		0xeb, 0xe6,				/* jmp 1b */
	};

	memcpy(code + 5, &data, 4);
	memcpy(code + 10, &cpuids, 4);
	memcpy(mem + CODE + 0x100 * k, code, sizeof(code));
}

/* -m: moves the main thread to another CPU every 100 us or so, while it
 * is inside KVM_RUN as much as outside. */
static void *migrator(void *arg)
{
	cpu_set_t set;

	(void)arg;
	for (int c = 0; !stop_migrating; c++) {
		CPU_ZERO(&set);
		CPU_SET(c % ncpus, &set);
		sched_setaffinity(main_tid, sizeof(set), &set);
		usleep(100);
	}
	return NULL;
}

/* One VM with `nv` vCPUs run round-robin for `n` iterations; 0 if right. */
static int round_of(int kvm, int nv, int n, int round)
{
	struct kvm_run *run[MAX_VCPUS];
	int vcpu[MAX_VCPUS];
	int vm, size = 0, bad = 0;
	uint8_t *mem;

	move_to(round);
	if (kvm_flat_vm(kvm, MEM_SIZE, &vm, &mem) ||
	    kvm_flat_slot(vm, 0, 0, MEM_SIZE, mem, "KVM_SET_USER_MEMORY_REGION"))
		return 1;
	for (int k = 0; k < nv; k++) {
		put_code(mem, k);
		/* Created on one CPU, set up on the next, run on others. */
		move_to(round + k);
		if (kvm_flat_vcpu(kvm, vm, k, &vcpu[k], &run[k], &size))
			return 1;
		move_to(round + k + 1);
		if (kvm_flat_regs(vcpu[k], CODE + 0x100 * k))
			return 1;
	}
	for (int i = 1; i <= n && !bad; i++) {
		for (int k = 0; k < nv && !bad; k++) {
			struct kvm_regs regs;
			uint8_t val = 0;
			uint32_t word;

			/* Each turn on another CPU than the vCPU's last one. */
			move_to(i + k + round);
			if (ioctl(vcpu[k], KVM_RUN, 0) < 0)
				return kvm_flat_fail("KVM_RUN");
			if (run[k]->exit_reason == KVM_EXIT_IO)
				val = *((uint8_t *)run[k] + run[k]->io.data_offset);
			if (run[k]->exit_reason != KVM_EXIT_IO || run[k]->io.port != 0x10 + k ||
			    val != (uint8_t)i) {
				printf("round %d vcpu %d iteration %d: exit %u port 0x%x val %u: want io port 0x%x val %u\n",
				       round, k, i, run[k]->exit_reason, run[k]->io.port, val,
				       0x10 + k, (uint8_t)i);
				bad = 1;
				break;
			}
			move_to(i + k + round + 1);
			if (ioctl(vcpu[k], KVM_RUN, 0) < 0)
				return kvm_flat_fail("KVM_RUN");
			if (run[k]->exit_reason != KVM_EXIT_HLT) {
				printf("round %d vcpu %d iteration %d: exit %u: want hlt\n", round, k, i,
				       run[k]->exit_reason);
				bad = 1;
				break;
			}
			if (ioctl(vcpu[k], KVM_GET_REGS, &regs) < 0)
				return kvm_flat_fail("KVM_GET_REGS");
			memcpy(&word, mem + DATA + 4 * k, 4);
			if (regs.rsi != (uint64_t)i || regs.rip != (uint64_t)(CODE + 0x100 * k + LOOP_AFTER_HLT) ||
			    word != (uint32_t)i || regs.rdi != 0 || regs.rax != (uint64_t)i) {
				printf("round %d vcpu %d iteration %d: rsi=%llu rip=0x%llx mem=%u rdi=%llu rax=%llu: want %d, 0x%x, %d, 0, %d\n",
				       round, k, i, (unsigned long long)regs.rsi,
				       (unsigned long long)regs.rip, word,
				       (unsigned long long)regs.rdi, (unsigned long long)regs.rax, i,
				       CODE + 0x100 * k + LOOP_AFTER_HLT, i, i);
				bad = 1;
			}
		}
	}
	for (int k = 0; k < nv; k++) {
		munmap(run[k], size);
		close(vcpu[k]);
	}
	close(vm);
	munmap(mem, MEM_SIZE);
	return bad;
}

int main(int argc, char **argv)
{
	int nv = 3, n = 20, rounds = 3, opt, kvm, bad = 0, migrate = 0;
	pthread_t mig;

	while ((opt = getopt(argc, argv, "v:n:r:c:m")) != -1) {
		if (opt == 'v')
			nv = atoi(optarg);
		else if (opt == 'n')
			n = atoi(optarg);
		else if (opt == 'r')
			rounds = atoi(optarg);
		else if (opt == 'c')
			cpuids = (uint32_t)atoi(optarg);
		else if (opt == 'm')
			migrate = 1;
		else
			return 2;
	}
	if (nv < 1 || nv > MAX_VCPUS || cpuids < 1)
		return 2;
	ncpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpus < 1)
		ncpus = 1;
	kvm = open("/dev/kvm", O_RDWR);
	if (kvm < 0)
		return kvm_flat_fail("open /dev/kvm");
	main_tid = (pid_t)syscall(SYS_gettid);
	if (migrate) {
		/* pthread_create returns the error; it does not set errno. */
		int err = pthread_create(&mig, NULL, migrator, NULL);

		if (err) {
			errno = err;
			return kvm_flat_fail("pthread_create");
		}
	}
	for (int r = 0; r < rounds && !bad; r++)
		bad = round_of(kvm, nv, n, r);
	if (migrate) {
		stop_migrating = 1;
		pthread_join(mig, NULL);
	}
	printf("summary: cpus=%d vcpus=%d iterations=%d rounds=%d cpuids=%u%s %s\n", ncpus, nv, n,
	       rounds, cpuids, migrate ? " migrating" : "", bad ? "FAIL" : "ok");
	return bad;
}
