// SPDX-License-Identifier: GPL-2.0
/*
 * pkvm_hostile: the hostile host, as a kernel module of its own.
 *
 * After pkvm_x86 is loaded the host kernel is untrusted.  The system tests
 * load this module to play that host: it issues hypercalls with arguments
 * of its choosing on the CPU of its choosing, and touches physical pages
 * through mappings it makes itself (not through pkvm's debug interface),
 * so a test can perform an attack and check that the hypervisor refuses
 * it.  Nothing here is part of pkvm; it is never loaded outside tests.
 *
 * Interface: /sys/kernel/debug/pkvm_hostile/ctl, one command per write,
 * the result of the last command on read ("ok ..." or "err ..."):
 *
 *   vmcall CPU NR [A0 [A1 [A2 [A3]]]]   VMCALL on CPU with RAX=NR, RBX=A0,
 *                                       RCX=A1, RDX=A2, RSI=A3; prints
 *                                       "ok rax=.. rbx=.. rcx=.."
 *   pfn VA                  the page frame of kernel address VA (direct
 *                           map, vmalloc or module memory)
 *   read PFN OFF            8 bytes at OFF of frame PFN, through a fresh
 *                           vmap() alias; "ok 0x..." or "fault"
 *   write PFN OFF VALUE     8 bytes written the same way; "ok" or "fault"
 *   alloc VALUE             a fresh page filled with VALUE (every 8 bytes),
 *                           never freed (it may end up the hypervisor's or
 *                           a guest's); "ok PFN"
 *   scan PFN N VALUE        how many aligned 8-byte words of frames
 *                           PFN..PFN+N-1 equal VALUE; "ok COUNT FAULTS"
 *   sipi APICID PAGE TARGET  starts the (offline) CPU with APIC id APICID
 *                           by INIT + SIPI on a trampoline of this module
 *                           written into low page PAGE (< 0x100, also the
 *                           SIPI vector): in real mode it marks that it
 *                           ran, installs its own IVT, goes "unreal" (flat
 *                           FS) and writes 0x0badc0de at physical address
 *                           TARGET, then marks the write done; its fault
 *                           handler marks a fault instead.  Both halt.
 *                           "ok ran=R faulted=F done=D" after 200 ms
 *   wrmsr CPU MSR VALUE     WRMSR on CPU; "ok", or "gp" if it faulted
 *   rdmsr CPU MSR           RDMSR on CPU; "ok 0x...", or "gp"
 *   cr4 CPU XOR             MOV to CR4 of (CR4 ^ XOR) on CPU, with a fault
 *                           fixup; "ok|gp old=0x.. now=0x.." (a write that
 *                           succeeded is undone at once)
 *
 *   stale PFN RCPU WCPU PATTERN
 *                           the stale-translation race: a kthread bound to
 *                           RCPU reads frame PFN through its own vmap alias
 *                           in a tight loop; once it runs, WCPU donates the
 *                           frame to the hypervisor (HOST_DONATE_HYP), marks
 *                           the donation returned, and has root mode fill
 *                           it with PATTERN (DEBUG_FILL_PAGE, debug build);
 *                           50 ms later the reader stops and the frame is
 *                           given back (HYP_DONATE_HOST).  "ok donate=RC
 *                           fill=RC back=RC reads=N new=N late=N faults=N":
 *                           new = reads that saw PATTERN, late = reads that
 *                           succeeded although they began after the
 *                           donation had returned
 *
 *   late_write PFN WCPU HCPU VALUE
 *                           the shootdown-ordering race: a kthread bound to
 *                           WCPU writes VALUE into the first word of frame
 *                           PFN through its own vmap alias in a tight loop;
 *                           once it runs, HCPU creates a VM with the frame as
 *                           its metadata page (VM_CREATE: root mode zeroes
 *                           it), the writer stops, and root mode counts the
 *                           words of the frame that are VALUE and that are
 *                           0 (DEBUG_COUNT_WORDS, debug build); then the VM
 *                           is torn down (VM_TEARDOWN).  "ok create=H
 *                           value=N zero=Z teardown=RC writes=W late=L
 *                           faults=F": value = writes of the host that
 *                           landed in hypervisor memory after root mode's
 *                           own, late = writes that succeeded although they
 *                           began after VM_CREATE had returned
 *
 *   contend PFN RCPU WCPU N  shootdowns against a CPU busy in root mode: a
 *                           kthread bound to RCPU reads a page this module
 *                           donated to the hypervisor in a tight loop (every
 *                           read an EPT violation, handled under the
 *                           hypervisor lock), while WCPU donates frame PFN
 *                           and takes it back N times (each donation a
 *                           shootdown, which RCPU must acknowledge also
 *                           while it spins on the lock the sender holds).
 *                           "ok cycles=N errors=E faults=F" once all N are
 *                           done (a deadlock would never come back)
 *   dfault CPU              the host's own event delivery hits memory it
 *                           gave away: donates a fresh page to the
 *                           hypervisor (HOST_DONATE_HYP), then on CPU, with
 *                           interrupts off, moves RSP to the top of that
 *                           page and executes UD2.  Pushing the #UD frame
 *                           faults in the host EPT (an EPT violation with
 *                           IDT-vectoring information); the hypervisor
 *                           reflects a #PF, whose delivery (on the same
 *                           stack) faults again: merged per the SDM, that
 *                           is a #DF, which Linux takes on its own
 *                           interrupt stack and reports ("PANIC: double
 *                           fault") before it panics.  Does not return
 *                           when it works; "err donate=RC" if the page
 *                           could not be donated
 *   vmptrst CPU             VMPTRST on CPU (in VMX operation: the current
 *                           VMCS of the host's KVM there); "ok 0x..."
 *   map PFN                 the next mmap of /sys/kernel/debug/pkvm_hostile/mem
 *                           maps frame PFN (remap_pfn_range, one page): a
 *                           process can hand it to KVM as guest memory
 *   invept CPU TYPE EPTP    INVEPT of TYPE (1 single-context for EPTP,
 *                           2 global) on CPU, which must be in VMX
 *                           operation (kvm_intel loaded; else the #UD is
 *                           an oops); "ok" or "vmfail"
 *   vmcs CPU PFN            frame PFN used as a VMCS region on CPU, in
 *                           the VMX operation of the host's KVM (kvm_intel
 *                           loaded): revision id written, VMCLEAR, VMPTRLD,
 *                           VMWRITE/VMREAD of GUEST_RSP, VMLAUNCH (its
 *                           controls are all zero: VMfailValid, error 7,
 *                           once the VMCS is current), VMCLEAR, then the
 *                           CPU's previous current VMCS loaded again;
 *                           "ok clear=C ptrld=P rsp=0x.. launch=L err=E
 *                           clear2=C2" (0: succeeded, 1: VMfail)
 *   eptrace PFN CPU N P Q   shares raced against donations (shadow EPT,
 *                           nested_ept=1, debug build): N times on CPU, a
 *                           global INVEPT (the shadow EPTs retired: a
 *                           guest that maps frame PFN must fault it in
 *                           again), then, at once, after a random spin
 *                           (0-1 ms) or a random sleep (0.1-2 ms), round
 *                           by round, HOST_DONATE_HYP of PFN.  EBUSY
 *                           is counted (a guest mapped it again first);
 *                           a donation that succeeds has root mode fill
 *                           the frame with Q (DEBUG_FILL_PAGE), waits
 *                           1-2 ms, counts the words still Q
 *                           (DEBUG_COUNT_WORDS: 512 unless something
 *                           wrote the hypervisor's page), fills it with P
 *                           again and gives it back (HYP_DONATE_HOST).
 *                           "ok donated=D busy=B errors=E changed=C
 *                           invept_fail=F": changed = donations during
 *                           which the page did not keep its 512 Q words
 *
 * Numbers are parsed with base 0 (0x... for hex).
 */
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <asm/apic.h>
#include <linux/io.h>
#include <linux/kthread.h>
#include <linux/completion.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/random.h>
#include <linux/smp.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <asm/asm.h>
#include <asm/msr.h>

static DEFINE_MUTEX(lock);
static char result[160];
static struct dentry *dir;

struct vmcall_args {
	u64 nr, a[4];
	u64 rax, rbx, rcx;
};

static void do_vmcall(void *p)
{
	struct vmcall_args *v = p;
	u64 rax = v->nr, rbx = v->a[0], rcx = v->a[1];

	asm volatile("vmcall"
		     : "+a"(rax), "+b"(rbx), "+c"(rcx)
		     : "d"(v->a[2]), "S"(v->a[3])
		     : "memory");
	v->rax = rax;
	v->rbx = rbx;
	v->rcx = rcx;
}

/* A fresh kernel alias of frame @pfn (read-write, cached), or NULL. */
static void *alias(unsigned long pfn)
{
	struct page *page;

	if (!pfn_valid(pfn))
		return NULL;
	page = pfn_to_page(pfn);
	return vmap(&page, 1, VM_MAP, PAGE_KERNEL);
}

/* One 8-byte access at kernel address @p that survives a fault: 0 or -EFAULT. */
static long access_nofault(bool write, void *p, u64 *v)
{
	pagefault_disable();
	if (write)
		__put_kernel_nofault(p, v, u64, fault);
	else
		__get_kernel_nofault(v, p, u64, fault);
	pagefault_enable();
	return 0;
fault:
	pagefault_enable();
	return -EFAULT;
}

static int cmd_read_write(bool write, u64 pfn, u64 off, u64 val)
{
	void *va;
	u64 got = 0;
	long rc;

	if (off > PAGE_SIZE - 8)
		return -EINVAL;
	va = alias(pfn);
	if (!va) {
		snprintf(result, sizeof(result), "err no-page\n");
		return 0;
	}
	rc = access_nofault(write, va + off, write ? &val : &got);
	vunmap(va);
	if (rc)
		snprintf(result, sizeof(result), "fault\n");
	else if (write)
		snprintf(result, sizeof(result), "ok\n");
	else
		snprintf(result, sizeof(result), "ok 0x%llx\n", got);
	return 0;
}

static int cmd_alloc(u64 val)
{
	u64 *p = (u64 *)__get_free_page(GFP_KERNEL);
	unsigned int i;

	if (!p)
		return -ENOMEM;
	for (i = 0; i < PAGE_SIZE / 8; i++)
		p[i] = val;
	snprintf(result, sizeof(result), "ok 0x%lx\n", PHYS_PFN(__pa(p)));
	return 0;
}

static int cmd_scan(u64 pfn, u64 n, u64 val)
{
	u64 hits = 0, faults = 0, i, off, got;
	void *va;

	if (n > 1 << 18)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		va = alias(pfn + i);
		if (!va) {
			faults++;
			continue;
		}
		for (off = 0; off < PAGE_SIZE; off += 8) {
			if (access_nofault(false, va + off, &got)) {
				faults++;
				break;
			}
			hits += got == val;
		}
		vunmap(va);
		cond_resched();
	}
	snprintf(result, sizeof(result), "ok %llu %llu\n", hits, faults);
	return 0;
}

/* The trampoline of "sipi": offsets inside its page. */
#define T_FLAGS 0x800	/* ran, faulted, done: one byte each */
#define T_GDTR 0x900
#define T_GDT 0x908
#define T_IDTR 0x920
#define T_IVT 0xc00
#define T_HANDLER 0x100

static const u8 tramp_code[] = {
	0xfa,				/* cli */
	0x8c, 0xc8,			/* mov ax, cs */
	0x8e, 0xd8,			/* mov ds, ax */
	0xc6, 0x06, 0x00, 0x08, 0x01,	/* mov byte [0x800], 1 */
	0x0f, 0x01, 0x1e, 0x20, 0x09,	/* lidt [0x920] */
	0x0f, 0x01, 0x16, 0x00, 0x09,	/* lgdt [0x900] */
	0x0f, 0x20, 0xc0,		/* mov eax, cr0 */
	0x0c, 0x01,			/* or al, 1 */
	0x0f, 0x22, 0xc0,		/* mov cr0, eax */
	0xbb, 0x08, 0x00,		/* mov bx, 8 */
	0x8e, 0xe3,			/* mov fs, bx (flat, 4 GiB) */
	0x24, 0xfe,			/* and al, 0xfe */
	0x0f, 0x22, 0xc0,		/* mov cr0, eax (back to real mode) */
	0x66, 0xbe, 0, 0, 0, 0,		/* mov esi, TARGET (patched) */
	0x64, 0x67, 0x66, 0xc7, 0x06,	/* mov dword fs:[esi], */
	0xde, 0xc0, 0xad, 0x0b,		/*   0x0badc0de */
	0xc6, 0x06, 0x02, 0x08, 0x01,	/* mov byte [0x802], 1 */
	0xf4,				/* 1: hlt */
	0xeb, 0xfd,			/* jmp 1b */
};
#define T_TARGET_AT 40

static const u8 tramp_handler[] = {
	0x8c, 0xc8,			/* mov ax, cs */
	0x8e, 0xd8,			/* mov ds, ax */
	0xc6, 0x06, 0x01, 0x08, 0x01,	/* mov byte [0x801], 1 */
	0xf4,				/* 1: hlt */
	0xeb, 0xfd,			/* jmp 1b */
};

static void send_icr(u32 low, u32 apicid)
{
	apic->icr_write(low, apicid);
	if (apic->wait_icr_idle)
		apic->wait_icr_idle();
}

static int cmd_sipi(u64 apicid, u64 pfn, u64 target)
{
	u8 *p;
	u32 base = pfn << 12, i;
	u64 gdt_flat = 0x00cf92000000ffffULL;

	if (pfn == 0 || pfn >= 0x100 || target >> 32)
		return -EINVAL;
	p = alias(pfn);
	if (!p)
		return -EINVAL;
	memset(p, 0, PAGE_SIZE);
	memcpy(p, tramp_code, sizeof(tramp_code));
	memcpy(p + T_TARGET_AT, &target, 4);
	memcpy(p + T_HANDLER, tramp_handler, sizeof(tramp_handler));
	/* GDTR: limit 15, base; GDT: null, flat data. */
	*(u16 *)(p + T_GDTR) = 15;
	*(u32 *)(p + T_GDTR + 2) = base + T_GDT;
	memcpy(p + T_GDT + 8, &gdt_flat, 8);
	/* IVT: every vector to the handler. */
	*(u16 *)(p + T_IDTR) = 0x3ff;
	*(u32 *)(p + T_IDTR + 2) = base + T_IVT;
	for (i = 0; i < 256; i++) {
		*(u16 *)(p + T_IVT + 4 * i) = T_HANDLER;
		*(u16 *)(p + T_IVT + 4 * i + 2) = pfn << 8;
	}
	wbinvd();
	send_icr(APIC_INT_LEVELTRIG | APIC_INT_ASSERT | APIC_DM_INIT, apicid);
	send_icr(APIC_INT_LEVELTRIG | APIC_DM_INIT, apicid);
	msleep(10);
	send_icr(APIC_DM_STARTUP | pfn, apicid);
	udelay(300);
	send_icr(APIC_DM_STARTUP | pfn, apicid);
	msleep(200);
	snprintf(result, sizeof(result), "ok ran=%u faulted=%u done=%u\n",
		 READ_ONCE(p[T_FLAGS]), READ_ONCE(p[T_FLAGS + 1]), READ_ONCE(p[T_FLAGS + 2]));
	vunmap(p);
	return 0;
}

struct msr_args {
	u32 msr;
	bool write;
	u64 val;
	int rc;
};

/* RDMSR / WRMSR on the target CPU; a #GP is reported, not an oops. */
static void do_msr(void *p)
{
	struct msr_args *m = p;

	if (m->write)
		m->rc = wrmsrq_safe(m->msr, m->val);
	else
		m->rc = rdmsrq_safe(m->msr, &m->val);
}

struct cr4_args {
	unsigned long xor, old, now;
	int rc;
};

/*
 * MOV to CR4 of (CR4 ^ xor) on the target CPU, with an exception fixup so
 * a #GP is reported (rc -EFAULT).  Bypasses the kernel's CR4 shadow and
 * pinning on purpose: this is the hostile host.  A write that succeeds is
 * undone at once (the CPU goes back to its old CR4).
 */
static void do_cr4(void *p)
{
	struct cr4_args *c = p;
	unsigned long val;
	int rc = 0;

	asm volatile("mov %%cr4, %0" : "=r"(c->old));
	val = c->old ^ c->xor;
	asm volatile("1: mov %1, %%cr4\n"
		     "2:\n"
		     _ASM_EXTABLE_TYPE_REG(1b, 2b, EX_TYPE_EFAULT_REG, %0)
		     : "+r"(rc)
		     : "r"(val)
		     : "memory");
	asm volatile("mov %%cr4, %0" : "=r"(c->now));
	if (!rc)
		asm volatile("mov %0, %%cr4" : : "r"(c->old) : "memory");
	c->rc = rc;
}

/* The reader side of "stale". */
struct stale_state {
	void *va;
	u64 pattern;
	atomic_t donated;
	u64 reads, new_seen, late, faults;
	bool running;
	struct completion started;
};

static int stale_reader(void *p)
{
	struct stale_state *s = p;
	u64 v, n = 0;

	while (!kthread_should_stop()) {
		int donated = atomic_read(&s->donated);

		/* The flag is read before the access it qualifies. */
		smp_rmb();
		if (access_nofault(false, s->va, &v)) {
			s->faults++;
		} else {
			s->reads++;
			if (v == s->pattern)
				s->new_seen++;
			if (donated)
				s->late++;
		}
		if (++n == 1000) {
			s->running = true;
			complete(&s->started);
		}
		if (!(n & 1023))
			cond_resched();
	}
	return 0;
}

static u64 vmcall_on(u64 cpu, u64 nr, u64 a0, u64 a1, u64 a2, u64 a3)
{
	struct vmcall_args v = { .nr = nr, .a = { a0, a1, a2, a3 } };

	if (smp_call_function_single(cpu, do_vmcall, &v, 1))
		return (u64)-1;
	return v.rax;
}

static int cmd_stale(u64 pfn, u64 rcpu, u64 wcpu, u64 pattern)
{
	struct stale_state *s;
	struct task_struct *t;
	u64 donate = 0, fill = 0, back = 0;

	if (rcpu >= nr_cpu_ids || !cpu_online(rcpu) || wcpu >= nr_cpu_ids || !cpu_online(wcpu))
		return -EINVAL;
	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	s->va = alias(pfn);
	if (!s->va) {
		kfree(s);
		return -EINVAL;
	}
	s->pattern = pattern;
	init_completion(&s->started);
	t = kthread_create(stale_reader, s, "pkvm_stale/%llu", rcpu);
	if (IS_ERR(t)) {
		vunmap(s->va);
		kfree(s);
		return PTR_ERR(t);
	}
	kthread_bind(t, rcpu);
	get_task_struct(t);
	wake_up_process(t);
	wait_for_completion_timeout(&s->started, 5 * HZ);
	if (s->running) {
		donate = vmcall_on(wcpu, 0x10, pfn, 1, 0, 0);	/* HOST_DONATE_HYP */
		smp_wmb();
		atomic_set(&s->donated, 1);
		msleep(20);
		fill = vmcall_on(wcpu, 0x44, pfn, pattern, 0, 0);	/* DEBUG_FILL_PAGE */
		msleep(50);
	}
	kthread_stop(t);
	put_task_struct(t);
	if (s->running)
		back = vmcall_on(wcpu, 0x11, pfn, 1, 0, 0);	/* HYP_DONATE_HOST */
	snprintf(result, sizeof(result),
		 "%s donate=0x%llx fill=0x%llx back=0x%llx reads=%llu new=%llu late=%llu faults=%llu\n",
		 s->running ? "ok" : "err not-started", donate, fill, back, s->reads,
		 s->new_seen, s->late, s->faults);
	vunmap(s->va);
	kfree(s);
	return 0;
}

/* The writer side of "late_write". */
struct late_state {
	void *va;
	u64 value;
	atomic_t created, stop;
	u64 writes, late, faults;
	bool running;
	struct completion started;
};

static int late_writer(void *p)
{
	struct late_state *s = p;
	u64 n = 0;

	while (!atomic_read(&s->stop)) {
		int created = atomic_read(&s->created);
		u64 v = s->value;

		/* The flag is read before the access it qualifies. */
		smp_rmb();
		if (access_nofault(true, s->va, &v)) {
			s->faults++;
		} else {
			s->writes++;
			if (created)
				s->late++;
		}
		if (++n == 1000) {
			s->running = true;
			complete(&s->started);
		}
		if (!(n & 4095))
			cond_resched();
	}
	while (!kthread_should_stop())
		schedule_timeout_interruptible(1);
	return 0;
}

static int cmd_late_write(u64 pfn, u64 wcpu, u64 hcpu, u64 value)
{
	struct late_state *s;
	struct task_struct *t;
	u64 create = 0, nval = 0, nzero = 0, down = 0;

	if (wcpu >= nr_cpu_ids || !cpu_online(wcpu) || hcpu >= nr_cpu_ids || !cpu_online(hcpu))
		return -EINVAL;
	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	s->va = alias(pfn);
	if (!s->va) {
		kfree(s);
		return -EINVAL;
	}
	s->value = value;
	init_completion(&s->started);
	t = kthread_create(late_writer, s, "pkvm_late/%llu", wcpu);
	if (IS_ERR(t)) {
		vunmap(s->va);
		kfree(s);
		return PTR_ERR(t);
	}
	kthread_bind(t, wcpu);
	get_task_struct(t);
	wake_up_process(t);
	wait_for_completion_timeout(&s->started, 5 * HZ);
	if (s->running) {
		/* VM_CREATE: host VM id, kind 0 (normal), metadata frame, 1 page. */
		create = vmcall_on(hcpu, 0x20, 0x1a7e0000 + pfn, 0, pfn, 1);
		smp_wmb();
		atomic_set(&s->created, 1);
		msleep(10);
	}
	atomic_set(&s->stop, 1);
	kthread_stop(t);
	put_task_struct(t);
	if (s->running && !IS_ERR_VALUE((unsigned long)create)) {
		nval = vmcall_on(hcpu, 0x46, pfn, value, 0, 0);	/* DEBUG_COUNT_WORDS */
		nzero = vmcall_on(hcpu, 0x46, pfn, 0, 0, 0);
		down = vmcall_on(hcpu, 0x21, create, 0, 0, 0);	/* VM_TEARDOWN */
	}
	snprintf(result, sizeof(result),
		 "%s create=0x%llx value=0x%llx zero=0x%llx teardown=0x%llx writes=%llu late=%llu faults=%llu\n",
		 s->running ? "ok" : "err not-started", create, nval, nzero, down, s->writes,
		 s->late, s->faults);
	vunmap(s->va);
	kfree(s);
	return 0;
}

/* The reader side of "contend". */
struct contend_state {
	void *va;
	atomic_t stop;
	u64 faults, reads;
	bool running;
	struct completion started;
};

static int contend_reader(void *p)
{
	struct contend_state *s = p;
	u64 v, n = 0;

	while (!atomic_read(&s->stop)) {
		if (access_nofault(false, s->va, &v))
			s->faults++;
		else
			s->reads++;
		if (++n == 100) {
			s->running = true;
			complete(&s->started);
		}
		if (!(n & 255))
			cond_resched();
	}
	while (!kthread_should_stop())
		schedule_timeout_interruptible(1);
	return 0;
}

static int cmd_contend(u64 pfn, u64 rcpu, u64 wcpu, u64 n)
{
	struct contend_state *s;
	struct task_struct *t;
	unsigned long page;
	u64 fpfn, i = 0, errors = 0, rc;

	if (rcpu >= nr_cpu_ids || !cpu_online(rcpu) || wcpu >= nr_cpu_ids ||
	    !cpu_online(wcpu) || n > 100000)
		return -EINVAL;
	page = __get_free_page(GFP_KERNEL | __GFP_ZERO);
	if (!page)
		return -ENOMEM;
	fpfn = PHYS_PFN(__pa(page));
	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s) {
		free_page(page);
		return -ENOMEM;
	}
	s->va = alias(fpfn);
	if (!s->va) {
		kfree(s);
		free_page(page);
		return -EINVAL;
	}
	rc = vmcall_on(wcpu, 0x10, fpfn, 1, 0, 0);	/* HOST_DONATE_HYP */
	if (rc) {
		snprintf(result, sizeof(result), "err donate=0x%llx\n", rc);
		free_page(page);
		goto out;
	}
	init_completion(&s->started);
	t = kthread_create(contend_reader, s, "pkvm_contend/%llu", rcpu);
	if (IS_ERR(t)) {
		snprintf(result, sizeof(result), "err kthread=%ld\n", PTR_ERR(t));
		goto back;
	}
	kthread_bind(t, rcpu);
	get_task_struct(t);
	wake_up_process(t);
	wait_for_completion_timeout(&s->started, 5 * HZ);
	for (i = 0; s->running && i < n; i++) {
		errors += vmcall_on(wcpu, 0x10, pfn, 1, 0, 0) != 0;	/* HOST_DONATE_HYP */
		errors += vmcall_on(wcpu, 0x11, pfn, 1, 0, 0) != 0;	/* HYP_DONATE_HOST */
	}
	atomic_set(&s->stop, 1);
	kthread_stop(t);
	put_task_struct(t);
	snprintf(result, sizeof(result), "%s cycles=%llu errors=%llu faults=%llu reads=%llu\n",
		 s->running ? "ok" : "err not-started", s->running ? i : 0, errors, s->faults,
		 s->reads);
back:
	/* HYP_DONATE_HOST; a page that does not come back is left alone. */
	if (vmcall_on(wcpu, 0x11, fpfn, 1, 0, 0) == 0)
		free_page(page);
out:
	vunmap(s->va);
	kfree(s);
	return 0;
}

/*
 * The "dfault" trigger, on the target CPU: RSP to the top of the donated
 * page, then UD2.  Never returns (the #DF handler panics).
 */
static void dfault_trigger(void *top)
{
	local_irq_disable();
	asm volatile("mov %0, %%rsp\n\t"
		     "ud2"
		     : : "r"(top) : "memory");
	unreachable();
}

static int cmd_dfault(u64 cpu)
{
	unsigned long page;
	u64 rc;

	if (cpu >= nr_cpu_ids || !cpu_online(cpu))
		return -EINVAL;
	page = __get_free_page(GFP_KERNEL | __GFP_ZERO);
	if (!page)
		return -ENOMEM;
	rc = vmcall_on(cpu, 0x10, PHYS_PFN(__pa(page)), 1, 0, 0);	/* HOST_DONATE_HYP */
	if (rc) {
		snprintf(result, sizeof(result), "err donate=0x%llx\n", rc);
		return 0;
	}
	pr_emerg("pkvm_hostile: cpu%llu: stack at %#lx (donated frame %#lx), UD2\n", cpu,
		 page + PAGE_SIZE, PHYS_PFN(__pa(page)));
	smp_call_function_single(cpu, dfault_trigger, (void *)(page + PAGE_SIZE), 1);
	snprintf(result, sizeof(result), "err still-running\n");
	return 0;
}

static void do_vmptrst(void *p)
{
	asm volatile("vmptrst %0" : "=m"(*(u64 *)p) : : "memory");
}

struct invept_args {
	u64 type, eptp;
	bool fail;
};

/* INVEPT on this CPU; `fail` when it VMfailed (CF or ZF set). */
static void do_invept(void *p)
{
	struct invept_args *a = p;
	struct { u64 eptp, rsvd; } desc = { a->eptp, 0 };
	bool fail;

	asm volatile("invept %1, %2\n\tsetna %0"
		     : "=qm"(fail)
		     : "m"(desc), "r"(a->type)
		     : "cc", "memory");
	a->fail = fail;
}

struct vmcs_args {
	u64 pa, rsp, err, old;
	bool clear, ptrld, launch, clear2;
};

/* VMfail (CF or ZF) of VMX instruction insn (its operand is %1), by setna. */
#define VMX_FAILED(insn, ...)						\
	({								\
		bool __f;						\
		asm volatile(insn "\n\tsetna %0"			\
			     : "=qm"(__f) : __VA_ARGS__ : "cc", "memory"); \
		__f;							\
	})

/*
 * Frame a->pa as a VMCS region on this CPU (IPI context: interrupts off,
 * so KVM's current VMCS, saved first, is loaded again before it runs).
 */
static void do_vmcs(void *p)
{
	struct vmcs_args *a = p;
	u64 rev = native_read_msr(0x480) & 0x7fffffff;	/* IA32_VMX_BASIC */
	u64 rsp_field = 0x681c, err_field = 0x4400, v = 0x1234567;

	asm volatile("vmptrst %0" : "=m"(a->old) : : "memory");
	*(u32 *)phys_to_virt(a->pa) = rev;
	a->clear = VMX_FAILED("vmclear %1", "m"(a->pa));
	a->ptrld = VMX_FAILED("vmptrld %1", "m"(a->pa));
	if (!a->ptrld) {
		asm volatile("vmwrite %1, %0" : : "r"(rsp_field), "r"(v) : "cc", "memory");
		asm volatile("vmread %1, %0" : "=r"(a->rsp) : "r"(rsp_field) : "cc");
		/* All-zero controls: the entry checks fail it, it never runs. */
		a->launch = VMX_FAILED("vmlaunch", "i"(0));
		asm volatile("vmread %1, %0" : "=r"(a->err) : "r"(err_field) : "cc");
	}
	a->clear2 = VMX_FAILED("vmclear %1", "m"(a->pa));
	if (a->old != ~0ull)
		asm volatile("vmptrld %0" : : "m"(a->old) : "cc", "memory");
}

static int cmd_vmcs(u64 cpu, u64 pfn)
{
	struct vmcs_args a = { .pa = pfn << PAGE_SHIFT };
	int rc;

	if (cpu >= nr_cpu_ids || !cpu_online(cpu) || !pfn_valid(pfn) ||
	    PageHighMem(pfn_to_page(pfn)))
		return -EINVAL;
	rc = smp_call_function_single(cpu, do_vmcs, &a, 1);
	if (rc)
		return rc;
	snprintf(result, sizeof(result),
		 "ok clear=%d ptrld=%d rsp=0x%llx launch=%d err=%llu clear2=%d\n",
		 a.clear, a.ptrld, a.rsp, a.launch, a.err, a.clear2);
	return 0;
}

static bool invept_on(u64 cpu, u64 type, u64 eptp)
{
	struct invept_args a = { .type = type, .eptp = eptp };

	if (smp_call_function_single(cpu, do_invept, &a, 1))
		return false;
	return !a.fail;
}

static int cmd_eptrace(u64 pfn, u64 cpu, u64 n, u64 p, u64 q)
{
	u64 i, rc, donated = 0, busy = 0, errors = 0, changed = 0, ifail = 0;

	if (cpu >= nr_cpu_ids || !cpu_online(cpu) || n > 100000 || !pfn_valid(pfn))
		return -EINVAL;
	for (i = 0; i < n && errors == 0; i++) {
		if (!invept_on(cpu, 2, 0))	/* global */
			ifail++;
		/*
		 * Every third round donates at once (the host usually wins);
		 * the others after a random 0-1 ms spin (with 2 CPUs, the
		 * guest's fault and the donation meet on the hypervisor lock)
		 * or a random 0.1-2 ms sleep (the guest usually faulted the
		 * page in again first; with 1 CPU it runs meanwhile).
		 */
		if (i % 3 == 1)
			udelay(get_random_u32_below(1000));
		else if (i % 3 == 2) {
			u32 us = 100 + get_random_u32_below(1900);

			usleep_range(us, us + 50);
		}
		rc = vmcall_on(cpu, 0x10, pfn, 1, 0, 0);	/* HOST_DONATE_HYP */
		if (rc == (u64)-EBUSY) {
			busy++;
		} else if (rc) {
			errors++;
		} else {
			donated++;
			errors += vmcall_on(cpu, 0x44, pfn, q, 0, 0) != 0;	/* DEBUG_FILL_PAGE */
			usleep_range(1000, 2000);
			/* DEBUG_COUNT_WORDS */
			changed += vmcall_on(cpu, 0x46, pfn, q, 0, 0) != PAGE_SIZE / 8;
			errors += vmcall_on(cpu, 0x44, pfn, p, 0, 0) != 0;
			/* HYP_DONATE_HOST; a page that does not come back ends the race */
			errors += vmcall_on(cpu, 0x11, pfn, 1, 0, 0) != 0;
		}
		/* Let the guest fault the page in again. */
		usleep_range(500, 1500);
	}
	snprintf(result, sizeof(result),
		 "ok rounds=%llu donated=%llu busy=%llu errors=%llu changed=%llu invept_fail=%llu\n",
		 i, donated, busy, errors, changed, ifail);
	return 0;
}

/* The frame the next mmap of the "mem" file maps (command "map"). */
static u64 map_pfn;

static int mem_mmap(struct file *f, struct vm_area_struct *vma)
{
	if (!map_pfn || vma->vm_end - vma->vm_start != PAGE_SIZE)
		return -EINVAL;
	return remap_pfn_range(vma, vma->vm_start, map_pfn, PAGE_SIZE, vma->vm_page_prot);
}

static const struct file_operations mem_fops = {
	.owner = THIS_MODULE,
	.mmap = mem_mmap,
};

static int run(char *line)
{
	char *argv[7];
	u64 n[6] = { 0 };
	int argc = 0, i;
	char *tok;

	while ((tok = strsep(&line, " \t\n")) && argc < 7) {
		if (*tok)
			argv[argc++] = tok;
	}
	if (argc == 0)
		return -EINVAL;
	for (i = 1; i < argc; i++)
		if (kstrtou64(argv[i], 0, &n[i - 1]))
			return -EINVAL;

	if (!strcmp(argv[0], "vmcall") && argc >= 3) {
		struct vmcall_args v = { .nr = n[1] };
		int rc;

		for (i = 0; i < 4; i++)
			v.a[i] = n[2 + i];
		rc = smp_call_function_single(n[0], do_vmcall, &v, 1);
		if (rc)
			return rc;
		snprintf(result, sizeof(result), "ok rax=0x%llx rbx=0x%llx rcx=0x%llx\n",
			 v.rax, v.rbx, v.rcx);
		return 0;
	}
	if (!strcmp(argv[0], "pfn") && argc == 2) {
		unsigned long va = n[0];
		unsigned long pfn;

		if (is_vmalloc_or_module_addr((void *)va))
			pfn = vmalloc_to_pfn((void *)va);
		else if (virt_addr_valid((void *)va))
			pfn = PHYS_PFN(__pa(va));
		else
			return -EINVAL;
		snprintf(result, sizeof(result), "ok 0x%lx\n", pfn);
		return 0;
	}
	if ((!strcmp(argv[0], "wrmsr") && argc == 4) || (!strcmp(argv[0], "rdmsr") && argc == 3)) {
		struct msr_args m = { .msr = n[1], .write = argc == 4, .val = n[2] };
		int rc = smp_call_function_single(n[0], do_msr, &m, 1);

		if (rc)
			return rc;
		if (m.rc)
			snprintf(result, sizeof(result), "gp\n");
		else if (m.write)
			snprintf(result, sizeof(result), "ok\n");
		else
			snprintf(result, sizeof(result), "ok 0x%llx\n", m.val);
		return 0;
	}
	if (!strcmp(argv[0], "cr4") && argc == 3) {
		struct cr4_args c = { .xor = n[1] };
		int rc = smp_call_function_single(n[0], do_cr4, &c, 1);

		if (rc)
			return rc;
		snprintf(result, sizeof(result), "%s old=0x%lx now=0x%lx\n",
			 c.rc ? "gp" : "ok", c.old, c.now);
		return 0;
	}
	if (!strcmp(argv[0], "read") && argc == 3)
		return cmd_read_write(false, n[0], n[1], 0);
	if (!strcmp(argv[0], "write") && argc == 4)
		return cmd_read_write(true, n[0], n[1], n[2]);
	if (!strcmp(argv[0], "alloc") && argc == 2)
		return cmd_alloc(n[0]);
	if (!strcmp(argv[0], "scan") && argc == 4)
		return cmd_scan(n[0], n[1], n[2]);
	if (!strcmp(argv[0], "sipi") && argc == 4)
		return cmd_sipi(n[0], n[1], n[2]);
	if (!strcmp(argv[0], "vmptrst") && argc == 2) {
		u64 pa = 0;
		int rc = smp_call_function_single(n[0], do_vmptrst, &pa, 1);

		if (rc)
			return rc;
		snprintf(result, sizeof(result), "ok 0x%llx\n", pa);
		return 0;
	}
	if (!strcmp(argv[0], "map") && argc == 2) {
		map_pfn = n[0];
		snprintf(result, sizeof(result), "ok\n");
		return 0;
	}
	if (!strcmp(argv[0], "invept") && argc == 4) {
		if (n[0] >= nr_cpu_ids || !cpu_online(n[0]) || (n[1] != 1 && n[1] != 2))
			return -EINVAL;
		snprintf(result, sizeof(result), "%s\n",
			 invept_on(n[0], n[1], n[2]) ? "ok" : "vmfail");
		return 0;
	}
	if (!strcmp(argv[0], "vmcs") && argc == 3)
		return cmd_vmcs(n[0], n[1]);
	if (!strcmp(argv[0], "eptrace") && argc == 6)
		return cmd_eptrace(n[0], n[1], n[2], n[3], n[4]);
	if (!strcmp(argv[0], "stale") && argc == 5)
		return cmd_stale(n[0], n[1], n[2], n[3]);
	if (!strcmp(argv[0], "contend") && argc == 5)
		return cmd_contend(n[0], n[1], n[2], n[3]);
	if (!strcmp(argv[0], "dfault") && argc == 2)
		return cmd_dfault(n[0]);
	if (!strcmp(argv[0], "late_write") && argc == 5)
		return cmd_late_write(n[0], n[1], n[2], n[3]);
	return -EINVAL;
}

static ssize_t ctl_write(struct file *f, const char __user *ubuf, size_t len, loff_t *off)
{
	char buf[160];
	int rc;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	mutex_lock(&lock);
	snprintf(result, sizeof(result), "err\n");
	rc = run(buf);
	if (rc)
		snprintf(result, sizeof(result), "err %d\n", rc);
	mutex_unlock(&lock);
	return rc ? rc : len;
}

static ssize_t ctl_read(struct file *f, char __user *ubuf, size_t len, loff_t *off)
{
	ssize_t r;

	mutex_lock(&lock);
	r = simple_read_from_buffer(ubuf, len, off, result, strlen(result));
	mutex_unlock(&lock);
	return r;
}

static const struct file_operations ctl_fops = {
	.owner = THIS_MODULE,
	.read = ctl_read,
	.write = ctl_write,
};

static int __init hostile_init(void)
{
	dir = debugfs_create_dir("pkvm_hostile", NULL);
	debugfs_create_file("ctl", 0600, dir, NULL, &ctl_fops);
	/* No debugfs proxy: it would not pass mmap through. */
	debugfs_create_file_unsafe("mem", 0600, dir, NULL, &mem_fops);
	return 0;
}

static void __exit hostile_exit(void)
{
	debugfs_remove(dir);
}

module_init(hostile_init);
module_exit(hostile_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("pkvm-x86 tests: the hostile host");
