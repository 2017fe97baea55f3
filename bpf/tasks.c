/* SPDX-License-Identifier: GPL-2.0 */
/* Task bookkeeping, loaded with every recording: follow forks of filtered
 * tasks, remember names of exiting tasks, close exit_group syscalls. */

static __always_inline void mmr_fork(u32 parent, u32 child)
{
#if MMR_FILTER_TIDS
	u8 *in = mmr_filter_tids.lookup(&child);
	if (in && mmr_filtered_in(parent))
		*in = 1;
#endif
}

static __always_inline int mmr_process_exit(void)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, 0))
		return MMR_PASS;
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
	mmr_note_current(id);
#ifdef MMR_HAVE_SYSCALLS
	mmr_sys_exit_group_close(b, id);
#endif
#ifdef MMR_HAVE_MMAP_LOCK
	u32 tid = (u32)id;
	{
		u32 lk = mmr_locking_begin();
		mmr_mmap_lock.delete(&tid); /* its per-task state (nothing is held any more) */
		mmr_locking_end(lk);
	}
#endif
	mmr_exit();
	return MMR_PASS;
}

#if MMR_RAW_TASKS
/* TP_PROTO(struct task_struct *parent, struct task_struct *child) */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
#if MMR_FILTER_TIDS
	mmr_fork(mmr_task_pid((void *)ctx->args[0]), mmr_task_pid((void *)ctx->args[1]));
#endif
	return MMR_PASS;
}

/* TP_PROTO(struct task_struct *p, ...): p is current */
RAW_TRACEPOINT_PROBE(sched_process_exit)
{
	return mmr_process_exit();
}
#else
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	mmr_fork(args->parent_pid, args->child_pid);
	return MMR_PASS;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	return mmr_process_exit();
}
#endif
