/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Prototypes of pkvm_x86's C helpers (helpers.c); the Rust side declares
 * the same functions in `extern "C"` blocks next to their users.
 */
#ifndef PKVM_X86_HELPERS_H
#define PKVM_X86_HELPERS_H

#include <linux/types.h>

struct module;

u64 pkvm_helper_pa(const void *virt);
void *pkvm_helper_va(u64 pa);
void pkvm_helper_reload_host_tr(void);
void *pkvm_helper_module_region(struct module *mod, int type, unsigned int *size);

int pkvm_helper_ram_ranges(u64 *ranges, unsigned int max);
u64 pkvm_helper_module_first_pfn(int type);

int pkvm_helper_write_nofault(void *dst, u64 v);

int pkvm_helper_nmi_test(int cpu, int n);
/* RDMSR that survives #GP (0, or -EIO with *val = 0). */
int pkvm_helper_rdmsr_safe(u32 msr, u64 *val);

/* The reserve's periodic refill (host/reserve.rs). */
void pkvm_helper_refill_start(unsigned int (*fn)(void), unsigned int period_ms);
void pkvm_helper_refill_stop(void);

#endif
