/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kvm_flat.h: the set-up the /dev/kvm test tools share (kvm_guest,
 * kvm_exit_bench, kvm_vcpus_rr): a VM with guest memory at GPA 0 and vCPUs
 * in 32-bit flat protected mode without paging (KVM's shadow MMU runs them
 * in its "nonpaging" mode), no in-kernel irqchip.  Header-only (static
 * inline): scripts/mkinitramfs.sh builds each .c of selftests/tools as one
 * static binary, and the tools find this file next to them.
 *
 * Every function returns 0 on success, or prints "FAIL WHAT: ERRNO" and
 * returns 1 (kvm_flat_fail), so a tool can `return kvm_flat_...(...)`'s
 * failure as its exit status.
 */
#ifndef KVM_FLAT_H
#define KVM_FLAT_H

#include <errno.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

/* Prints "FAIL WHAT: <errno's message>"; returns 1. */
static inline int kvm_flat_fail(const char *what)
{
	printf("FAIL %s: %s\n", what, strerror(errno));
	return 1;
}

/* A flat 4 GiB segment: base 0, present, DPL 0, 32-bit, page granular. */
static inline void kvm_flat_seg(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->db = 1;
	s->s = 1;
	s->g = 1;
}

/*
 * A VM (*vm) and `size` bytes of shared anonymous memory for it (*mem),
 * filled with HLT (0xf4); no memory slot yet (kvm_flat_slot).
 */
static inline int kvm_flat_vm(int kvm, size_t size, int *vm, uint8_t **mem)
{
	*vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (*vm < 0)
		return kvm_flat_fail("KVM_CREATE_VM");
	if (ioctl(*vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0)
		return kvm_flat_fail("KVM_SET_TSS_ADDR");
	*mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (*mem == MAP_FAILED)
		return kvm_flat_fail("mmap");
	memset(*mem, 0xf4, size);
	return 0;
}

/* Memory slot `slot`: `size` bytes at GPA `gpa` from `host` (`what` on failure). */
static inline int kvm_flat_slot(int vm, uint32_t slot, uint64_t gpa, uint64_t size, void *host,
				const char *what)
{
	struct kvm_userspace_memory_region region = {
		.slot = slot, .guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = (uintptr_t)host,
	};

	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return kvm_flat_fail(what);
	return 0;
}

/* vCPU `id` of `vm` (*vcpu) and its kvm_run mapping (*run, *run_size bytes). */
static inline int kvm_flat_vcpu(int kvm, int vm, int id, int *vcpu, struct kvm_run **run,
				int *run_size)
{
	*vcpu = ioctl(vm, KVM_CREATE_VCPU, id);
	if (*vcpu < 0)
		return kvm_flat_fail("KVM_CREATE_VCPU");
	*run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	*run = mmap(NULL, *run_size, PROT_READ | PROT_WRITE, MAP_SHARED, *vcpu, 0);
	if (*run == MAP_FAILED)
		return kvm_flat_fail("mmap run");
	return 0;
}

/*
 * The vCPU in 32-bit flat protected mode (CS 0x8, the data segments 0x10,
 * CR0 = PE | ET, no paging, EFER 0), every general-purpose register 0 but
 * RSP = 0x8000, RFLAGS = 2 and RIP = `rip`.
 */
static inline int kvm_flat_regs(int vcpu, uint64_t rip)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		return kvm_flat_fail("KVM_GET_SREGS");
	kvm_flat_seg(&sregs.cs, 0x8, 0xb);
	kvm_flat_seg(&sregs.ds, 0x10, 0x3);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.cr0 = 0x11; /* PE | ET */
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		return kvm_flat_fail("KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = rip;
	regs.rflags = 0x2;
	regs.rsp = 0x8000;
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		return kvm_flat_fail("KVM_SET_REGS");
	return 0;
}

#endif /* KVM_FLAT_H */
