// SPDX-License-Identifier: GPL-2.0
/*
 * Host-side C helpers for pkvm_x86: thin wrappers around kernel inline
 * functions and macros that Rust cannot reach through bindings.  Nothing
 * here runs in VMX root mode.
 */
#include <linux/ioport.h>
#include <linux/mm.h>
#include <linux/pfn.h>
#include <linux/module.h>
#include <linux/smp.h>
#include <linux/uaccess.h>
#include <asm/desc.h>
#include <asm/io.h>
#include <asm/apic.h>
#include <asm/msr.h>
#include <asm/nmi.h>
#include <linux/delay.h>
#include <linux/workqueue.h>

#include "helpers.h"

/* Physical address of a direct-map (kmalloc / page allocator) address. */
u64 pkvm_helper_pa(const void *virt)
{
	return virt_to_phys((void *)virt);
}

/* Direct-map address of physical address @pa. */
void *pkvm_helper_va(u64 pa)
{
	return phys_to_virt(pa);
}


/*
 * After a CPU leaves VMX operation through TEARDOWN_CPU its task register
 * still caches the hypervisor's TSS.  Reload the host's own: LTR needs the
 * writable GDT (it sets the busy bit) and an available descriptor, then
 * the GDTR the host had (the read-only fixmap alias) goes back.
 * Runs with interrupts off on the CPU concerned.
 */
void pkvm_helper_reload_host_tr(void)
{
	struct desc_struct *gdt = get_cpu_gdt_rw(smp_processor_id());
	struct desc_ptr old, rw = {
		.address = (unsigned long)gdt,
		.size = GDT_SIZE - 1,
	};
	tss_desc tss;

	memcpy(&tss, &gdt[GDT_ENTRY_TSS], sizeof(tss));
	tss.type = DESC_TSS;	/* available, as LTR wants it */
	write_gdt_entry(gdt, GDT_ENTRY_TSS, &tss, DESC_TSS);
	native_store_gdt(&old);
	native_load_gdt(&rw);
	asm volatile("ltr %w0" : : "q" (GDT_ENTRY_TSS * 8));
	native_load_gdt(&old);
}

/* Start and size of one memory region (MOD_TEXT, MOD_RODATA, ...) of @mod. */
void *pkvm_helper_module_region(struct module *mod, int type, unsigned int *size)
{
	if (type < 0 || type >= MOD_MEM_NUM_TYPES) {
		*size = 0;
		return NULL;
	}
	*size = mod->mem[type].size;
	return mod->mem[type].base;
}

struct pkvm_ram_walk {
	u64 *ranges;	/* pairs: start, end (bytes) */
	unsigned int max, n;
};

static int pkvm_ram_range(struct resource *res, void *arg)
{
	struct pkvm_ram_walk *w = arg;
	/* Whole pages only, as walk_system_ram_range() rounds. */
	u64 start = PFN_UP(res->start), end = PFN_DOWN(res->end + 1);

	if (end <= start)
		return 0;
	if (w->n >= w->max)
		return -ENOSPC;
	w->ranges[2 * w->n] = start << PAGE_SHIFT;
	w->ranges[2 * w->n + 1] = end << PAGE_SHIFT;
	w->n++;
	return 0;
}

/*
 * The RAM ranges (busy "System RAM" resources of the iomem tree) below
 * 2^52, in ascending order, as pairs start, end in @ranges (room for @max
 * pairs).  walk_system_ram_range() is not exported; this walks the same
 * resources through walk_iomem_res_desc(), as walk_system_ram_res() does.
 * Returns how many, or -ENOSPC if there are more than @max.
 */
int pkvm_helper_ram_ranges(u64 *ranges, unsigned int max)
{
	struct pkvm_ram_walk w = { .ranges = ranges, .max = max, .n = 0 };
	int ret = walk_iomem_res_desc(IORES_DESC_NONE,
				      IORESOURCE_SYSTEM_RAM | IORESOURCE_BUSY,
				      0, (1ULL << 52) - 1, &w, pkvm_ram_range);

	/* -EINVAL: no System RAM at all, which is no machine we run on. */
	if (ret < 0)
		return ret;
	return w.n;
}

/*
 * Frame of the first page of this module's memory region @type (MOD_TEXT,
 * ...), or 0 if the region is empty (debug interface: frames for the fuzz).
 */
u64 pkvm_helper_module_first_pfn(int type)
{
	unsigned int size;
	void *base = pkvm_helper_module_region(THIS_MODULE, type, &size);

	if (!base || !size)
		return 0;
	return vmalloc_to_pfn(base);
}

/*
 * Writes @v to kernel address @dst, surviving a fault (debug interface:
 * "can the host write this page?").  Returns 0 or -EFAULT.
 */
int pkvm_helper_write_nofault(void *dst, u64 v)
{
	pagefault_disable();
	__put_kernel_nofault(dst, &v, u64, fault);
	pagefault_enable();
	return 0;
fault:
	pagefault_enable();
	return -EFAULT;
}

/* Debug interface: NMI delivery test (see debug_iface.rs, "nmi_test"). */
static atomic_t pkvm_nmi_seen;
static int pkvm_nmi_target = -1;

static int pkvm_nmi_handler(unsigned int type, struct pt_regs *regs)
{
	if (smp_processor_id() != READ_ONCE(pkvm_nmi_target))
		return NMI_DONE;
	atomic_inc(&pkvm_nmi_seen);
	return NMI_HANDLED;
}

/*
 * Sends @n NMIs to @cpu one at a time, each time waiting up to 100 ms for
 * the host's NMI handler on @cpu to see it.  Returns how many were seen,
 * or a negative errno.  Must not run on @cpu.
 */
int pkvm_helper_nmi_test(int cpu, int n)
{
	int i, seen = 0, ret;

	if (cpu == raw_smp_processor_id() || !cpu_online(cpu))
		return -EINVAL;
	atomic_set(&pkvm_nmi_seen, 0);
	WRITE_ONCE(pkvm_nmi_target, cpu);
	ret = register_nmi_handler(NMI_LOCAL, pkvm_nmi_handler, 0, "pkvm_nmi_test");
	if (ret)
		return ret;
	for (i = 0; i < n; i++) {
		int before = atomic_read(&pkvm_nmi_seen), t;

		__apic_send_IPI_mask(cpumask_of(cpu), NMI_VECTOR);
		for (t = 0; t < 100000 && atomic_read(&pkvm_nmi_seen) == before; t++)
			udelay(1);
		if (atomic_read(&pkvm_nmi_seen) > before)
			seen++;
	}
	unregister_nmi_handler(NMI_LOCAL, "pkvm_nmi_test");
	WRITE_ONCE(pkvm_nmi_target, -1);
	return seen;
}

/* RDMSR of @msr with the kernel's #GP fixup: 0, or -EIO and *val = 0. */
int pkvm_helper_rdmsr_safe(u32 msr, u64 *val)
{
	int rc = rdmsrq_safe(msr, val);

	if (rc)
		*val = 0;
	return rc ? -EIO : 0;
}

/*
 * The reserve's refill and the pool's growth (host/reserve.rs): a delayed
 * work that calls the Rust function, in process context, until
 * pkvm_helper_refill_stop(); the function returns how many milliseconds
 * until the next run (shorter while the pool wants memory).  The Rust side
 * asks the hypervisor (RESERVE_STATUS, POOL_STATUS) and donates what it
 * wants; root mode never calls the host.
 */
static unsigned int (*pkvm_refill_fn)(void);
static void pkvm_refill_work_fn(struct work_struct *w);
static DECLARE_DELAYED_WORK(pkvm_refill_work, pkvm_refill_work_fn);

static void pkvm_refill_work_fn(struct work_struct *w)
{
	unsigned int ms = pkvm_refill_fn();

	schedule_delayed_work(&pkvm_refill_work, msecs_to_jiffies(ms));
}

void pkvm_helper_refill_start(unsigned int (*fn)(void), unsigned int period_ms)
{
	pkvm_refill_fn = fn;
	schedule_delayed_work(&pkvm_refill_work, msecs_to_jiffies(period_ms));
}

void pkvm_helper_refill_stop(void)
{
	/* Also waits for a running instance and stops its re-arming. */
	cancel_delayed_work_sync(&pkvm_refill_work);
}
