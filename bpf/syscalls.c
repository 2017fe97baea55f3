/* SPDX-License-Identifier: GPL-2.0 */
/* syscalls:sys_{enter,exit}_{mmap,munmap,mprotect,brk,madvise,mremap,exit_group}
 * paired per tid -> syscalls. exit_group never returns: it closes at the
 * task's sched_process_exit (tasks.c), after its exit_mm().
 *
 * Raw: raw_syscalls:sys_{enter,exit} fire for every system call; the
 * architecture's numbers of the calls above (MMR_NR_*), where pt_regs keeps
 * the first two arguments and the call number (MMR_OFF_REGS_*) and how a
 * compat task is told apart (MMR_COMPAT_*) come from tracer/programs.py. The
 * per-call classic tracepoints are the fallback on other architectures: their
 * dispatch (a perf trace record built per call) costs several times the
 * program.
 *
 * One entry per task, created at its first call and deleted when it exits:
 * entering and leaving a call store into it (a map update per call cost more
 * than the rest of the probe). */

struct mmr_sys_val {
	u64 ts;
	u64 seq;
	u64 arg0;
	u64 arg1;
	s32 nr;
	s32 pid;
	u16 cpu;
	u8 open;        /* 1: entered, not yet left */
};

BPF_HASH(mmr_sys_open, u32, struct mmr_sys_val, 65536);
#define MMR_HAVE_SYSCALLS 1

/* A wanted task enters a call: store it into the task's entry. No batch level: nothing is written to a
 * batch here (the level's two per-CPU lookups were a tenth of this program). */
static __always_inline void mmr_sys_open_call(u64 id, int nr, u64 arg0, u64 arg1)
{
	u32 tid = (u32)id;
	struct mmr_sys_val *v = mmr_sys_open.lookup(&tid);
	if (!v) {
		struct mmr_sys_val n = {};
		{
			u32 lk = mmr_locking_begin();
			mmr_sys_open.insert(&tid, &n);
			mmr_locking_end(lk);
		}
		v = mmr_sys_open.lookup(&tid);
	}
	if (v) {
		v->ts = bpf_ktime_get_ns();
		v->seq = mmr_next_seq();
		v->arg0 = arg0;
		v->arg1 = arg1;
		v->nr = nr;
		v->pid = id >> 32;
		v->cpu = bpf_get_smp_processor_id();
		v->open = 1;
	}
}

static __always_inline int mmr_sys_enter(int nr, u64 arg0, u64 arg1)
{
	u64 id = bpf_get_current_pid_tgid();
	if (mmr_want(id, MMR_EV_SYSCALL))
		mmr_sys_open_call(id, nr, arg0, arg1);
	return MMR_PASS;
}

/* v: the task's entry (looked up once by the caller), NULL if it has none. */
static __always_inline void mmr_sys_emit(struct mmr_batch *b, u64 id, struct mmr_sys_val *v, int nr, s64 ret)
{
	u64 now = bpf_ktime_get_ns();
	u32 tid = (u32)id;
	struct mmr_syscall *e = mmr_slot(b);
	if (v && v->open && v->nr == nr) {
		mmr_head(e, MMR_EV_SYSCALL, 0, v->ts, v->seq, v->pid, tid, v->cpu);
		e->dur = now - v->ts;
		e->arg0 = v->arg0;
		e->arg1 = v->arg1;
		v->open = 0;
		mmr_count(MMR_EV_SYSCALL, 1, 0);
	} else {
		/* entered before the recording started */
		mmr_head(e, MMR_EV_SYSCALL, MMR_F_INCOMPLETE | MMR_F_NO_START, 0, mmr_next_seq(), id >> 32, tid,
			 bpf_get_smp_processor_id());
		e->dur = now; /* MMR_F_NO_START: dur holds the end time */
		e->arg0 = 0;
		e->arg1 = 0;
		mmr_count(MMR_EV_SYSCALL, 1, 1);
	}
	e->nr = nr;
	e->ret = ret;
	mmr_emit(b, MMR_EV_SYSCALL);
}

/* A wanted task leaves call nr; v as for mmr_sys_emit. */
static __always_inline int mmr_sys_close(u64 id, struct mmr_sys_val *v, int nr, s64 ret)
{
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
	mmr_sys_emit(b, id, v, nr, ret);
	mmr_exit();
	return MMR_PASS;
}

static __always_inline int mmr_sys_exit(int nr, s64 ret)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, MMR_EV_SYSCALL))
		return MMR_PASS;
	u32 tid = (u32)id;
	return mmr_sys_close(id, mmr_sys_open.lookup(&tid), nr, ret);
}

static __always_inline void mmr_sys_exit_group_close(struct mmr_batch *b, u64 id)
{
	u32 tid = (u32)id;
	struct mmr_sys_val *v = mmr_sys_open.lookup(&tid);
	if (!v)
		return;
	if (v->open && v->nr == MMR_SYS_EXIT_GROUP)
		mmr_sys_emit(b, id, v, MMR_SYS_EXIT_GROUP, 0);
	{
		u32 lk = mmr_locking_begin();
		mmr_sys_open.delete(&tid);
		mmr_locking_end(lk);
	}
}

#if MMR_RAW_SYSCALLS
static __always_inline int mmr_sys_index(long nr)
{
	switch (nr) {
	case MMR_NR_MMAP: return MMR_SYS_MMAP;
	case MMR_NR_MUNMAP: return MMR_SYS_MUNMAP;
	case MMR_NR_MPROTECT: return MMR_SYS_MPROTECT;
	case MMR_NR_BRK: return MMR_SYS_BRK;
	case MMR_NR_MADVISE: return MMR_SYS_MADVISE;
	case MMR_NR_MREMAP: return MMR_SYS_MREMAP;
	case MMR_NR_EXIT_GROUP: return MMR_SYS_EXIT_GROUP;
	default: return -1;
	}
}

/* A compat (32-bit) task numbers its calls differently: not ours. */
static __always_inline int mmr_sys_compat(void)
{
	u32 word = 0;
	bpf_probe_read_kernel(&word, sizeof(word), (char *)bpf_get_current_task() + MMR_COMPAT_OFF);
	return (word & MMR_COMPAT_MASK) != 0;
}

static __always_inline u64 mmr_reg(u64 regs, int off)
{
	u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (char *)regs + off);
	return v;
}

/* TP_PROTO(struct pt_regs *regs, long id) */
RAW_TRACEPOINT_PROBE(sys_enter)
{
	int nr = mmr_sys_index((long)ctx->args[1]);
	u64 id = bpf_get_current_pid_tgid();
	if (nr < 0 || !mmr_want(id, 0) || mmr_sys_compat())
		return 0;
	/* both argument registers in one read where pt_regs keeps them side by side */
	u64 a[2] = {};
#if MMR_OFF_REGS_ARG1 == MMR_OFF_REGS_ARG0 + 8
	bpf_probe_read_kernel(&a, sizeof(a), (char *)ctx->args[0] + MMR_OFF_REGS_ARG0);
#elif MMR_OFF_REGS_ARG0 == MMR_OFF_REGS_ARG1 + 8
	u64 r[2] = {};
	bpf_probe_read_kernel(&r, sizeof(r), (char *)ctx->args[0] + MMR_OFF_REGS_ARG1);
	a[0] = r[1];
	a[1] = r[0];
#else
	a[0] = mmr_reg(ctx->args[0], MMR_OFF_REGS_ARG0);
	a[1] = mmr_reg(ctx->args[0], MMR_OFF_REGS_ARG1);
#endif
	mmr_sys_open_call(id, nr, a[0], a[1]);
	return 0;
}

/* TP_PROTO(struct pt_regs *regs, long ret). The task's open entry says which call returns; only a call
 * without one (entered before the recording, or not ours) needs its number read from the registers. The
 * filter and the entry's lookup are done once (they were done twice: ~60 ns of a ~200 ns program). */
RAW_TRACEPOINT_PROBE(sys_exit)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, 0))
		return 0;
	u32 tid = (u32)id;
	struct mmr_sys_val *v = mmr_sys_open.lookup(&tid);
	int nr;
	if (v && v->open) {
		nr = v->nr;
	} else {
		nr = mmr_sys_index((long)mmr_reg(ctx->args[0], MMR_OFF_REGS_NR));
		if (nr < 0 || nr == MMR_SYS_EXIT_GROUP || mmr_sys_compat())
			return 0;
	}
	return mmr_sys_close(id, v, nr, (s64)ctx->args[1]);
}
#else
TRACEPOINT_PROBE(syscalls, sys_enter_mmap) { return mmr_sys_enter(MMR_SYS_MMAP, args->addr, args->len); }
TRACEPOINT_PROBE(syscalls, sys_exit_mmap) { return mmr_sys_exit(MMR_SYS_MMAP, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_munmap) { return mmr_sys_enter(MMR_SYS_MUNMAP, args->addr, args->len); }
TRACEPOINT_PROBE(syscalls, sys_exit_munmap) { return mmr_sys_exit(MMR_SYS_MUNMAP, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_mprotect) { return mmr_sys_enter(MMR_SYS_MPROTECT, args->start, args->len); }
TRACEPOINT_PROBE(syscalls, sys_exit_mprotect) { return mmr_sys_exit(MMR_SYS_MPROTECT, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_brk) { return mmr_sys_enter(MMR_SYS_BRK, args->brk, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_brk) { return mmr_sys_exit(MMR_SYS_BRK, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_madvise) { return mmr_sys_enter(MMR_SYS_MADVISE, args->start, args->len_in); }
TRACEPOINT_PROBE(syscalls, sys_exit_madvise) { return mmr_sys_exit(MMR_SYS_MADVISE, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_mremap) { return mmr_sys_enter(MMR_SYS_MREMAP, args->addr, args->old_len); }
TRACEPOINT_PROBE(syscalls, sys_exit_mremap) { return mmr_sys_exit(MMR_SYS_MREMAP, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_exit_group) { return mmr_sys_enter(MMR_SYS_EXIT_GROUP, args->error_code, 0); }
#endif
