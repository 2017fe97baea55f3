/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared BPF-side machinery of the tier-1 programs: the per-CPU batch, the
 * ring buffer, counters, the task filter and the task-name map.
 *
 * Compile-time knobs (set by tracer/programs.py through -D):
 *   MMR_SELF_TGID      the recorder's own tgid, never recorded
 *   MMR_FILTER_TIDS    1: only tasks in mmr_filter_tids (forks followed)
 *   MMR_PID_MAX        entries of mmr_filter_tids (the kernel's pid_max)
 *   MMR_FILTER_COMM    1: only tasks whose comm equals MMR_COMM
 *   MMR_RB_PAGES       ring-buffer size in pages
 *   MMR_PF_GAP_NS      page-free burst ends after this gap
 *   MMR_RAW_<FAMILY>   1: the family attaches raw tracepoints (TP_PROTO arguments
 *                      in ctx->args[]), 0: classic tracepoints (the event record)
 *   MMR_OFF_TASK_*     offsets in the running kernel's task_struct (from its BTF,
 *                      tracer/kernel_env.py), read by the raw programs
 *   MMR_STACKS         0: no kernel stack walk at contention_begin
 */
#ifndef MMR_COMMON_H
#define MMR_COMMON_H

#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include "mmreplay.h"
#include "mmr_batch.h"

#ifndef MMR_SELF_TGID
#define MMR_SELF_TGID 0
#endif
#ifndef MMR_FILTER_TIDS
#define MMR_FILTER_TIDS 0
#endif
#ifndef MMR_FILTER_COMM
#define MMR_FILTER_COMM 0
#endif
#ifndef MMR_PID_MAX
#define MMR_PID_MAX 4194304
#endif
#ifndef MMR_RB_PAGES
#define MMR_RB_PAGES 2048
#endif
/* What every tracepoint program returns: non-zero lets the kernel also hand the
 * event to perf (perf stat/record of the same tracepoint keep counting while
 * mmreplay records); 0 would hide it from them. */
#ifndef MMR_PASS
#define MMR_PASS 1
#endif
#ifndef MMR_PF_GAP_NS
#define MMR_PF_GAP_NS 10000
#endif
#ifndef MMR_STACKS
#define MMR_STACKS 1
#endif

struct mmr_task {
	s32 pid;        /* tgid, -1 if never seen as current */
	char comm[16];
};

BPF_RINGBUF_OUTPUT(mmr_rb, MMR_RB_PAGES);
/* ---- nesting-safe per-CPU batches (tier-1 raw tracepoints) ----
 * Raw tracepoint programs guard recursion per program only: another of our
 * programs can run in the middle of one (an interrupt's tlb_flush or
 * sched_waking, a contention_begin on a map's lock), and so can the flush
 * timer; fentry programs (tier 2) likewise. Each nesting level therefore
 * writes its own batch: mmr_enter() takes the next level of this CPU,
 * mmr_commit() (or mmr_exit()) gives it back. The bookkeeping is bpf/mmr_batch.h,
 * which tests/test_batch_nesting.py drives with nested programs in user space.
 * MMR_NEST levels: task, softirq, hardirq, NMI. */
BPF_PERCPU_ARRAY(mmr_batches, struct mmr_batch, MMR_NEST);
BPF_PERCPU_ARRAY(mmr_nest, struct mmr_nest, 1);
BPF_PERCPU_ARRAY(mmr_stats, struct mmr_stat, MMR_MAX_KINDS);
BPF_ARRAY(mmr_seq, u64, 1);
BPF_STACK_TRACE(mmr_stacks, 16384);
/* The task filter, indexed by tid: an array lookup is a bounds check and an
 * add once JITed, where a hash lookup hashes and walks a bucket; it is what
 * every hit of every other task pays. */
BPF_ARRAY(mmr_filter_tids, u8, MMR_PID_MAX);

static __always_inline int mmr_filtered_in(u32 tid)
{
	u8 *in = mmr_filter_tids.lookup(&tid);
	return in && *in;
}
BPF_HASH(mmr_tasks, u32, struct mmr_task, 65536);
/* [0]: MMR_RECORDING while recording. Before (0: the programs are attached
 * while user space still sets up) and after (2: detaching takes an RCU grace
 * period per program) nothing is recorded, so every event lies between the
 * recording's start and stop. */
#define MMR_RECORDING 1
BPF_ARRAY(mmr_ctl, u32, 1);

static __always_inline int mmr_stopped(void)
{
	int zero = 0;
	u32 *v = mmr_ctl.lookup(&zero);
	return !v || *v != MMR_RECORDING;
}

static __always_inline u64 mmr_next_seq(void)
{
	int zero = 0;
	u64 *s = mmr_seq.lookup(&zero);
	return s ? __sync_fetch_and_add(s, 1) : 0;
}

/* Set while one of our programs is inside a map or ring-buffer call that takes
 * a lock (a hash bucket's, the ring buffer's producer lock): a contention that
 * begins then, on that CPU, is on a lock the recorder took. Narrower than "one
 * of our programs runs": an interrupt's own contention that arrives during a
 * program, outside these calls, is the interrupted task's, and is recorded. */
BPF_PERCPU_ARRAY(mmr_locking, u32, 1);

static __always_inline u32 mmr_locking_begin(void)
{
	int zero = 0;
	u32 *l = mmr_locking.lookup(&zero);
	u32 was = l ? *l : 0;
	if (l)
		*l = 1;
	return was;
}

static __always_inline void mmr_locking_end(u32 was)
{
	int zero = 0;
	u32 *l = mmr_locking.lookup(&zero);
	if (l)
		*l = was;
}

static __always_inline int mmr_in_lock_op(void)
{
	int zero = 0;
	u32 *l = mmr_locking.lookup(&zero);
	return l && *l;
}

/* A hit of a recorded task that the recorder itself caused (its programs' map and
 * ring-buffer locks): dropped on purpose, counted apart from loss. */
static __always_inline void mmr_count_recorder(int kind)
{
	struct mmr_stat *st = mmr_stats.lookup(&kind);
	if (st)
		st->recorder++;
}

static __always_inline void mmr_count(int kind, int events, int unmatched)
{
	struct mmr_stat *st = mmr_stats.lookup(&kind);
	if (!st)
		return;
	st->events += events;
	st->unmatched += unmatched;
}

#if MMR_FILTER_COMM
static __always_inline int mmr_comm_eq(const char *c)
{
	const char want[16] = MMR_COMM;
#pragma unroll
	for (int i = 0; i < 16; i++) {
		if (c[i] != want[i])
			return 0;
		if (want[i] == 0)
			return 1;
	}
	return 1;
}
#endif

/* Is an event of the current task wanted? The task filter comes first: most
 * hits of a busy kernel are other tasks', and they cost one map lookup. Hits of
 * the recorder's own process (recorded system-wide) are counted as the
 * recorder's in mmr_stats[kind].recorder. */
static __always_inline int mmr_want(u64 id, int kind)
{
	u32 tid = (u32)id;
	int want = 0;
#if MMR_FILTER_TIDS
	want = mmr_filtered_in(tid);
#endif
#if MMR_FILTER_COMM
	if (!want) {
		char comm[16] = {};
		bpf_get_current_comm(&comm, sizeof(comm));
		want = mmr_comm_eq(comm);
	}
#endif
#if !(MMR_FILTER_TIDS || MMR_FILTER_COMM)
	want = 1;
#endif
	if (!want || mmr_stopped())
		return 0;
	if ((id >> 32) == MMR_SELF_TGID) {
		if (kind > 0)
			mmr_count_recorder(kind);
		return 0;
	}
	return 1;
}

static __always_inline int mmr_want_current(u64 id)
{
	return mmr_want(id, 0);
}

/* Is an event about another task (tid, comm from the tracepoint) wanted? */
static __always_inline int mmr_want_task(u32 tid, const char *comm)
{
	if (mmr_stopped())
		return 0;
#if MMR_FILTER_TIDS
	if (mmr_filtered_in(tid))
		return 1;
#endif
#if MMR_FILTER_COMM
	char c[16] = {};
	bpf_probe_read_kernel(&c, sizeof(c), comm); /* ctx memory: no direct access at an offset */
	if (mmr_comm_eq(c))
		return 1;
#endif
#if MMR_FILTER_TIDS || MMR_FILTER_COMM
	return 0;
#else
	return 1;
#endif
}

/* Remember a task's name the first time it is seen (pid -1: not known yet). */
static __always_inline void mmr_note_task(u32 tid, s32 pid, const char *comm)
{
	struct mmr_task *t = mmr_tasks.lookup(&tid);
	if (t) {
		if (t->pid < 0 && pid >= 0)
			t->pid = pid;
		return;
	}
	struct mmr_task n = {.pid = pid};
	bpf_probe_read_kernel(&n.comm, sizeof(n.comm), comm);
	u32 lk = mmr_locking_begin();
	mmr_tasks.update(&tid, &n);
	mmr_locking_end(lk);
}

static __always_inline void mmr_note_current(u64 id)
{
	u32 tid = (u32)id;
	struct mmr_task *t = mmr_tasks.lookup(&tid);
	if (t) {
		if (t->pid < 0)
			t->pid = id >> 32;
		return;
	}
	struct mmr_task n = {.pid = id >> 32};
	bpf_get_current_comm(&n.comm, sizeof(n.comm));
	u32 lk = mmr_locking_begin();
	mmr_tasks.update(&tid, &n);
	mmr_locking_end(lk);
}

/* Kernel stack of the current event, as an id in mmr_stacks (negative: none).
 * A stack-map bucket holds one stack: when another stack already owns the
 * bucket this one hashes to, get_stackid fails with -EEXIST, and does so for
 * every later hit of this stack (measured: all 14 waits of one caller in a
 * run). Hashing the stack without its innermost frame picks another bucket;
 * that frame is the lock primitive's slow path (the tracepoint's own
 * function), never the caller the queries name. */
static __always_inline int mmr_stackid(void *ctx)
{
	u32 lk = mmr_locking_begin();
	int id = mmr_stacks.get_stackid(ctx, 0);
	if (id == -17 /* -EEXIST */)
		id = mmr_stacks.get_stackid(ctx, 1);
	mmr_locking_end(lk);
	return id;
}

/* Take this CPU's next nesting level and return its batch (NULL: none, and
 * nothing to give back). Every non-NULL result is given back by mmr_exit()
 * (or mmr_commit(), which emits the slot and exits). More than MMR_NEST
 * levels cannot happen on one CPU; should it, the event counts as lost in
 * mmr_stats[0]. */
static __always_inline struct mmr_batch *mmr_enter(void)
{
	int zero = 0;
	struct mmr_nest *n = mmr_nest.lookup(&zero);
	if (!n)
		return 0;
	int level = mmr_nest_enter(n);
	if (level < 0) {
		struct mmr_stat *st = mmr_stats.lookup(&zero);
		if (st)
			st->lost++;
		return 0;
	}
	struct mmr_batch *b = mmr_batches.lookup(&level);
	if (!b)
		mmr_nest_exit(n);
	return b;
}

static __always_inline void mmr_exit(void)
{
	int zero = 0;
	struct mmr_nest *n = mmr_nest.lookup(&zero);
	if (n)
		mmr_nest_exit(n);
}

/* The level the running program took with mmr_enter() (0 if none). */
static __always_inline int mmr_level(void)
{
	int zero = 0;
	struct mmr_nest *n = mmr_nest.lookup(&zero);
	return n && n->level ? (int)n->level - 1 : 0;
}

#define mmr_batch_get mmr_enter

static __always_inline void *mmr_slot(struct mmr_batch *b)
{
	return mmr_batch_slot(b);
}

static __always_inline void mmr_head(void *slot, u8 kind, u8 flags, u64 ts, u64 seq, u32 pid, u32 tid, u32 cpu)
{
	struct mmr_event_head *h = slot;
	h->ts = ts;
	h->seq = seq;
	h->pid = pid;
	h->tid = tid;
	h->cpu = cpu;
	h->kind = kind;
	h->flags = flags;
}

/* Submit the whole batch as one ring-buffer record; count its events as lost if refused.
 * No wakeup: user space polls every few ms, and a wakeup here would run
 * (and trace) the scheduler from inside the probes, which the kernel then
 * skips as BPF recursion. The caller holds the batch's level. */
static __always_inline void mmr_submit(struct mmr_batch *b)
{
	b->cpu = bpf_get_smp_processor_id();
	b->flush_ts = bpf_ktime_get_ns();
	u32 lk = mmr_locking_begin();
	int refused = mmr_rb.ringbuf_output(b, sizeof(*b), BPF_RB_NO_WAKEUP) != 0;
	mmr_locking_end(lk);
	if (refused) {
#pragma unroll
		for (int k = 1; k < MMR_MAX_KINDS; k++) {
			if (!b->kind_count[k])
				continue;
			int key = k;
			struct mmr_stat *st = mmr_stats.lookup(&key);
			if (st)
				st->lost += b->kind_count[k];
		}
	}
	mmr_batch_reset(b);
}

/* The slot written: count it, submit the batch when full. The level stays taken. */
static __always_inline void mmr_emit(struct mmr_batch *b, int kind)
{
	if (mmr_batch_advance(b, kind))
		mmr_submit(b);
}

static __always_inline void mmr_commit(struct mmr_batch *b, int kind)
{
	mmr_emit(b, kind);
	mmr_exit();
}

/* ---- task_struct fields for raw tracepoints (offsets of the running kernel) ---- */
#ifdef MMR_OFF_TASK_PID
static __always_inline u32 mmr_task_u32(void *task, int off)
{
	u32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (char *)task + off);
	return v;
}
#define mmr_task_pid(t) mmr_task_u32((t), MMR_OFF_TASK_PID)
#define mmr_task_tgid(t) mmr_task_u32((t), MMR_OFF_TASK_TGID)
#define mmr_task_prio(t) ((s32)mmr_task_u32((t), MMR_OFF_TASK_PRIO))
#define mmr_task_cpu(t) ((s32)mmr_task_u32((t), MMR_OFF_TASK_CPU))
#define mmr_task_comm(t) ((const char *)(t) + MMR_OFF_TASK_COMM)
#endif

#endif /* MMR_COMMON_H */
