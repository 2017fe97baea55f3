/* SPDX-License-Identifier: GPL-2.0 */
/* Tier 2: rw_semaphore and mutex acquisitions and releases (klockstat-style
 * probes on the down_, up_ and mutex_ functions) -> lock_holds, paired in
 * user space per (tid, lock address) by tracer/tier2.py.
 *
 * The lock call's entry (start of the wait, the lock address, the kernel
 * stack) is kept per task until the call returns; the return emits one
 * MMR_EV_T2_LOCK_ACQUIRE slot with the wait, a release one MMR_EV_T2_LOCK_RELEASE.
 * A task is in at most one lock call at a time (these functions sleep and
 * are never called from interrupts), so the task id is the key.
 *
 * Built with -DMMR_T2_FENTRY=1 the probes are fentry/fexit (KFUNC_PROBE,
 * bcc attaches them at load); otherwise they are plain functions that
 * tracer/tier2.py attaches as kprobes/kretprobes. */

#include <linux/mm_types.h>
#include <linux/version.h>

struct mmr_t2_call {
	u64 ts;
	u64 lock;       /* the mm for the current task's mmap_lock (flags MMR_T2_F_MMAP_LOCK) */
	s32 stack_id;
	u32 flags;
};

BPF_HASH(mmr_t2_calls, u32, struct mmr_t2_call, 65536);

/* The key of a lock in the trace: the mm for the current task's mm->mmap_lock
 * (as tier 1 keys it, so one acquisition is not two locks), else its address.
 * Sets *flags to MMR_T2_F_MMAP_LOCK for the former. */
static __always_inline u64 mmr_t2_lock_key(u64 lock, u8 *flags)
{
	*flags = 0;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 8, 0) /* mmap_sem became mmap_lock */
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	u64 mm = 0;
	bpf_probe_read_kernel(&mm, sizeof(mm), &t->mm);
	if (mm && lock == mm + offsetof(struct mm_struct, mmap_lock)) {
		*flags = MMR_T2_F_MMAP_LOCK;
		return mm;
	}
#endif
	return lock;
}

static __always_inline int mmr_t2_lock_enter(void *ctx, u64 lock)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_current(id))
		return 0;
	u32 tid = (u32)id;
	u8 flags;
	struct mmr_t2_call c = {.ts = bpf_ktime_get_ns()};
	c.lock = mmr_t2_lock_key(lock, &flags);
	c.flags = flags;
	c.stack_id = mmr_stackid(ctx);
	mmr_t2_calls.update(&tid, &c);
	return 0;
}

/* ok: the call's return value already turned into acquired (1) or not (0). */
static __always_inline int mmr_t2_lock_exit(u8 mode, u8 type, u8 trylock, u8 ok)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	struct mmr_t2_call *c = mmr_t2_calls.lookup(&tid);
	if (!c)
		return 0;
	u64 now = bpf_ktime_get_ns();
	struct mmr_batch *b = mmr_batch_get();
	if (!b) {
		mmr_t2_calls.delete(&tid);
		return 0;
	}
	struct mmr_t2_acquire *e = mmr_slot(b);
	mmr_head(e, MMR_EV_T2_LOCK_ACQUIRE, (u8)c->flags, now, mmr_next_seq(), id >> 32, tid,
		 bpf_get_smp_processor_id());
	e->stack_id = c->stack_id;
	e->wait = now - c->ts;
	e->lock_addr = c->lock;
	e->mode = mode;
	e->success = ok;
	e->lock_type = type;
	e->trylock = trylock;
	mmr_t2_calls.delete(&tid);
	mmr_count(MMR_EV_T2_LOCK_ACQUIRE, 1, 0);
	mmr_commit(b, MMR_EV_T2_LOCK_ACQUIRE);
	return 0;
}

static __always_inline int mmr_t2_unlock(u64 lock, u8 mode, u8 type)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_current(id))
		return 0;
	u8 flags;
	u64 key = mmr_t2_lock_key(lock, &flags);
	struct mmr_batch *b = mmr_batch_get();
	if (!b)
		return 0;
	struct mmr_t2_release *e = mmr_slot(b);
	mmr_head(e, MMR_EV_T2_LOCK_RELEASE, flags, bpf_ktime_get_ns(), mmr_next_seq(), id >> 32, (u32)id,
		 bpf_get_smp_processor_id());
	e->lock_addr = key;
	e->mode = mode;
	e->lock_type = type;
	mmr_count(MMR_EV_T2_LOCK_RELEASE, 1, 0);
	mmr_commit(b, MMR_EV_T2_LOCK_RELEASE);
	return 0;
}

/* How a lock function's return value says "acquired". */
#define MMR_T2_RET_VOID(ret) 1                 /* down_read, down_write, mutex_lock */
#define MMR_T2_RET_ZERO(ret) ((int)(ret) == 0)  /* *_killable, *_interruptible: 0 or -EINTR */
#define MMR_T2_RET_ONE(ret) ((int)(ret) == 1)   /* *_trylock: 1 acquired */

#if MMR_T2_FENTRY

/* fexit of a void function has no return value to read: MMR_T2_RET_VOID
 * functions get their own form. */
#define MMR_T2_LOCK_ENTRY(fn)                                                        \
	KFUNC_PROBE(fn, void *lock)                                                  \
	{                                                                            \
		return mmr_t2_lock_enter(ctx, (u64)lock);                            \
	}
#define MMR_T2_LOCK(fn, mode, type, trylock, okfn)                                   \
	MMR_T2_LOCK_ENTRY(fn)                                                        \
	KRETFUNC_PROBE(fn, void *lock, int ret)                                      \
	{                                                                            \
		return mmr_t2_lock_exit(mode, type, trylock, okfn(ret));             \
	}
#define MMR_T2_LOCK_VOID(fn, mode, type)                                             \
	MMR_T2_LOCK_ENTRY(fn)                                                        \
	KRETFUNC_PROBE(fn, void *lock)                                               \
	{                                                                            \
		return mmr_t2_lock_exit(mode, type, 0, 1);                           \
	}
#define MMR_T2_UNLOCK(fn, mode, type)                                                \
	KFUNC_PROBE(fn, void *lock)                                                  \
	{                                                                            \
		return mmr_t2_unlock((u64)lock, mode, type);                         \
	}

#else /* kprobes: mmr_t2_enter_<fn> on entry, mmr_t2_exit_<fn> on return, mmr_t2_unlock_<fn> */

#define MMR_T2_LOCK(fn, mode, type, trylock, okfn)                                   \
	int mmr_t2_enter_##fn(struct pt_regs *ctx)                                   \
	{                                                                            \
		return mmr_t2_lock_enter(ctx, (u64)PT_REGS_PARM1(ctx));              \
	}                                                                            \
	int mmr_t2_exit_##fn(struct pt_regs *ctx)                                    \
	{                                                                            \
		return mmr_t2_lock_exit(mode, type, trylock, okfn(PT_REGS_RC(ctx))); \
	}
#define MMR_T2_LOCK_VOID(fn, mode, type) MMR_T2_LOCK(fn, mode, type, 0, MMR_T2_RET_VOID)
#define MMR_T2_UNLOCK(fn, mode, type)                                                \
	int mmr_t2_unlock_##fn(struct pt_regs *ctx)                                  \
	{                                                                            \
		return mmr_t2_unlock((u64)PT_REGS_PARM1(ctx), mode, type);           \
	}

#endif

/* The probe list; tracer/tier2.py LOCK_FUNCTIONS mirrors it. */
MMR_T2_LOCK_VOID(down_read, 0, MMR_LOCK_RWSEM)
MMR_T2_LOCK(down_read_killable, 0, MMR_LOCK_RWSEM, 0, MMR_T2_RET_ZERO)
MMR_T2_LOCK(down_read_interruptible, 0, MMR_LOCK_RWSEM, 0, MMR_T2_RET_ZERO)
MMR_T2_LOCK(down_read_trylock, 0, MMR_LOCK_RWSEM, 1, MMR_T2_RET_ONE)
MMR_T2_LOCK_VOID(down_write, 1, MMR_LOCK_RWSEM)
MMR_T2_LOCK(down_write_killable, 1, MMR_LOCK_RWSEM, 0, MMR_T2_RET_ZERO)
MMR_T2_LOCK(down_write_trylock, 1, MMR_LOCK_RWSEM, 1, MMR_T2_RET_ONE)
MMR_T2_LOCK_VOID(mutex_lock, 1, MMR_LOCK_MUTEX)
MMR_T2_LOCK(mutex_lock_killable, 1, MMR_LOCK_MUTEX, 0, MMR_T2_RET_ZERO)
MMR_T2_LOCK(mutex_lock_interruptible, 1, MMR_LOCK_MUTEX, 0, MMR_T2_RET_ZERO)
MMR_T2_LOCK(mutex_trylock, 1, MMR_LOCK_MUTEX, 1, MMR_T2_RET_ONE)
MMR_T2_UNLOCK(up_read, 0, MMR_LOCK_RWSEM)
MMR_T2_UNLOCK(up_write, 1, MMR_LOCK_RWSEM)
MMR_T2_UNLOCK(mutex_unlock, 1, MMR_LOCK_MUTEX)

/* downgrade_write: the write hold ends and a read hold of the same rwsem
 * starts without waiting. Emitted as a release and a zero-wait acquire that
 * carries the stack (downgrade_write's caller names the lock). */
static __always_inline int mmr_t2_downgrade(void *ctx, u64 lock)
{
	mmr_t2_unlock(lock, 1, MMR_LOCK_RWSEM);
	mmr_t2_lock_enter(ctx, lock);
	return mmr_t2_lock_exit(0, MMR_LOCK_RWSEM, 0, 1);
}

#if MMR_T2_FENTRY
KFUNC_PROBE(downgrade_write, void *lock)
{
	return mmr_t2_downgrade(ctx, (u64)lock);
}
#else
int mmr_t2_unlock_downgrade_write(struct pt_regs *ctx)
{
	return mmr_t2_downgrade(ctx, (u64)PT_REGS_PARM1(ctx));
}
#endif
