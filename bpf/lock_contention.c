/* SPDX-License-Identifier: GPL-2.0 */
/* lock:contention_{begin,end} paired per (tid, lock) -> lock_waits.
 * A repeated begin on a lock the task already waits for is what the kernel
 * emits for that lock type (bpf/mmr_lc_pair.h: a mutex alternating between
 * spinning and sleeping folds into one wait from the first begin to the end;
 * an rt_mutex's or semaphore's own wait_lock contended inside the wait is not
 * the wait's end), or else it means the open wait's end was lost: that wait is
 * dropped, counted as unmatched (a start never ended), and a new wait begins,
 * so a lost end never stretches a wait over later ones.
 *
 * A contention that begins or ends while one of our programs is inside a map or
 * ring-buffer call on the CPU (mmr_locking) is on a lock that program took (a
 * map's bucket lock, the ring buffer's producer lock): the recorder's own,
 * counted as such and not recorded.
 *
 * A contention_end without its begin is written as a wait cut by the start
 * only where the task's state says its begin cannot have been lost since the
 * start (bpf/mmr_lc_pair.h, mmr_lc_cut_by_start): otherwise it is counted
 * unmatched and not written. */

#include "mmr_lc_pair.h"

struct mmr_lc_key {
	u32 tid;
	u32 cpu;  /* tid 0 (each CPU's idle task): the CPU + 1, else 0 */
	u64 addr;
};

struct mmr_lc_val {
	u64 ts;
	u64 seq;
	struct mmr_lc_pairing p;
	s32 stack_id;
	s32 pid;
	u16 cpu;
	u64 csw;  /* spinning waits: the task's context switches at the begin, + 1 (0: not read) */
};

BPF_HASH(mmr_contention, struct mmr_lc_key, struct mmr_lc_val, 65536);
/* Each task alive at the start (key: addr 0), made by the recorder before it starts: bpf/mmr_lc_pair.h.
 * Values change in place; the programs never add or delete an entry. A task not in it (born since) gets
 * no state: the recorder drops its ends without a begin. */
#ifndef MMR_LC_TASKS
#define MMR_LC_TASKS 16384
#endif
BPF_HASH(mmr_lc_tasks, struct mmr_lc_key, struct mmr_lc_task, MMR_LC_TASKS);
/* 1 while this CPU runs our contention_begin program: a contention that ends meanwhile is an interrupt's
 * whose begin came inside that program, and the kernel skipped it as recursion. */
BPF_PERCPU_ARRAY(mmr_lc_in_begin, u32, 1);

static __always_inline void mmr_lc_key_of(struct mmr_lc_key *k, u64 id, u64 lock)
{
	k->tid = (u32)id;
	k->cpu = k->tid ? 0 : bpf_get_smp_processor_id() + 1;
	k->addr = lock;
}

/* A spinning waiter (qspinlock, qrwlock: SPIN without MUTEX) spins with preemption off: it is not switched
 * out before its end. The recorder compares this count with the task's at stop: a wait still open then
 * whose task has switched since lost its end (bpf/mmr_lc_pair.h), and did not last until the stop. */
static __always_inline u64 mmr_lc_csw(u32 flags)
{
#if defined(MMR_OFF_TASK_NVCSW) && defined(MMR_OFF_TASK_NIVCSW)
	if ((flags & (MMR_LCB_SPIN | MMR_LCB_MUTEX)) == MMR_LCB_SPIN) {
		char *t = (char *)bpf_get_current_task();
		unsigned long nv = 0, niv = 0;
		bpf_probe_read_kernel(&nv, sizeof(nv), t + MMR_OFF_TASK_NVCSW);
		bpf_probe_read_kernel(&niv, sizeof(niv), t + MMR_OFF_TASK_NIVCSW);
		return (u64)nv + niv + 1;
	}
#endif
	return 0;
}

/* Stamp a wait that begins now (its pairing state already opened). */
static __always_inline void mmr_lc_stamp(void *ctx, struct mmr_lc_val *v, u64 id)
{
	v->csw = mmr_lc_csw(v->p.first);
	v->ts = bpf_ktime_get_ns();
	v->seq = mmr_next_seq();
	v->pid = id >> 32;
	v->cpu = bpf_get_smp_processor_id();
	v->stack_id = -1;
#if MMR_STACKS
	v->stack_id = mmr_stackid(ctx);
#endif
}

static __always_inline struct mmr_lc_task *mmr_lc_task_of(struct mmr_lc_key *k)
{
	struct mmr_lc_key tk = {.tid = k->tid, .cpu = k->cpu};
	return mmr_lc_tasks.lookup(&tk);
}

static __always_inline int mmr_lc_begin_(void *ctx, u64 lock, u32 flags)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, MMR_EV_LOCK_WAIT))
		return MMR_PASS;
	if (mmr_in_lock_op()) {
		mmr_count_recorder(MMR_EV_LOCK_WAIT);
		return MMR_PASS;
	}
	struct mmr_lc_key k = {};
	mmr_lc_key_of(&k, id, lock);
	struct mmr_batch *b = mmr_enter(); /* marks the CPU as in a probe (the map update below) */
	if (!b) {
		struct mmr_lc_task *t = mmr_lc_task_of(&k);
		if (t)
			mmr_lc_task_began(t, flags, 0); /* its end comes without it (the loss is counted in mmr_enter) */
		return MMR_PASS;
	}
	struct mmr_lc_val *old = mmr_contention.lookup(&k);
	if (old) {
		if (mmr_lc_begin_again(&old->p, flags) == MMR_LC_STALE) {
			/* the open wait's end was lost: a start never ended; this begin starts the next wait */
			mmr_count(MMR_EV_LOCK_WAIT, 0, 1);
			mmr_lc_stamp(ctx, old, id);
			struct mmr_lc_task *t = mmr_lc_task_of(&k);
			if (t && !mmr_lc_may_nest(flags))
				t->settled = 1;
		}
		mmr_exit();
		return MMR_PASS;
	}
	struct mmr_lc_val v = {};
	mmr_lc_open(&v.p, flags);
	mmr_lc_stamp(ctx, &v, id);
	int err;
	{
		u32 lk = mmr_locking_begin();
		err = mmr_contention.update(&k, &v); /* no room: its end comes unmatched, and is counted then */
		mmr_locking_end(lk);
	}
	struct mmr_lc_task *t = mmr_lc_task_of(&k);
	if (t)
		mmr_lc_task_began(t, flags, !err);
	mmr_exit();
	return MMR_PASS;
}

static __always_inline int mmr_lc_begin(void *ctx, u64 lock, u32 flags)
{
	int zero = 0;
	u32 *in = mmr_lc_in_begin.lookup(&zero);
	u32 was = 0;
	if (in) {
		was = *in;
		*in = 1;
	}
	int ret = mmr_lc_begin_(ctx, lock, flags);
	if (in)
		*in = was;
	return ret;
}

static __always_inline int mmr_lc_in_begin_now(void)
{
	int zero = 0;
	u32 *in = mmr_lc_in_begin.lookup(&zero);
	return in && *in;
}

static __always_inline int mmr_lc_end(u64 lock, s32 ret)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, 0))
		return MMR_PASS;
	if (mmr_in_lock_op())
		return MMR_PASS; /* its begin was counted as the recorder's */
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
	u64 now = bpf_ktime_get_ns();
	u32 tid = (u32)id;
	struct mmr_lc_key k = {};
	mmr_lc_key_of(&k, id, lock);
	struct mmr_lc_val *v = mmr_contention.lookup(&k);
	if (v && !mmr_lc_end_closes(&v->p)) {
		mmr_exit(); /* the end of the lock's wait_lock contention inside the wait: the wait goes on */
		return MMR_PASS;
	}
	if (!v) {
		struct mmr_lc_task *t = mmr_lc_task_of(&k);
		if (mmr_lc_in_begin_now() || (t && !mmr_lc_cut_by_start(t))) {
			/* its begin came after the start and was lost: a start never seen, not a wait cut by it */
			mmr_count(MMR_EV_LOCK_WAIT, 1, 1);
			mmr_exit();
			return MMR_PASS;
		}
	}
	struct mmr_lock_wait *e = mmr_slot(b);
	if (v) {
		mmr_head(e, MMR_EV_LOCK_WAIT, 0, v->ts, v->seq, v->pid, tid, v->cpu);
		e->stack_id = v->stack_id;
		e->dur = now - v->ts;
		e->lcb_flags = v->p.flags;
		e->begins = v->p.begins;
		{
			u32 lk = mmr_locking_begin();
			mmr_contention.delete(&k);
			mmr_locking_end(lk);
		}
		struct mmr_lc_task *t = mmr_lc_task_of(&k);
		if (t)
			mmr_lc_task_closed(t);
		mmr_count(MMR_EV_LOCK_WAIT, 1, 0);
	} else {
		/* the wait began before the recording started (mmr_lc_cut_by_start), or its task has no state */
		mmr_head(e, MMR_EV_LOCK_WAIT, MMR_F_INCOMPLETE | MMR_F_NO_START, 0, mmr_next_seq(), id >> 32, tid,
			 bpf_get_smp_processor_id());
		e->stack_id = -1;
		e->dur = now; /* MMR_F_NO_START: dur holds the end time */
		e->lcb_flags = 0;
		e->begins = 0;
		mmr_count(MMR_EV_LOCK_WAIT, 1, 1);
	}
	e->lock_addr = k.addr;
	e->ret = ret;
	mmr_commit(b, MMR_EV_LOCK_WAIT);
	return MMR_PASS;
}

#if MMR_RAW_LOCK_CONTENTION
/* TP_PROTO(void *lock, unsigned int flags) */
RAW_TRACEPOINT_PROBE(contention_begin)
{
	return mmr_lc_begin(ctx, ctx->args[0], (u32)ctx->args[1]);
}

/* TP_PROTO(void *lock, int ret) */
RAW_TRACEPOINT_PROBE(contention_end)
{
	return mmr_lc_end(ctx->args[0], (s32)ctx->args[1]);
}
#else
TRACEPOINT_PROBE(lock, contention_begin)
{
	return mmr_lc_begin(args, (u64)args->lock_addr, args->flags);
}

TRACEPOINT_PROBE(lock, contention_end)
{
	return mmr_lc_end((u64)args->lock_addr, args->ret);
}
#endif
