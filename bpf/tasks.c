/* SPDX-License-Identifier: GPL-2.0 */
/* Task bookkeeping, loaded with every recording: follow forks of filtered
 * tasks, remember names of exiting tasks, close exit_group syscalls. */

TRACEPOINT_PROBE(sched, sched_process_fork)
{
#if MMR_FILTER_TIDS
	u32 parent = args->parent_pid, child = args->child_pid;
	u8 one = 1;
	if (mmr_filter_tids.lookup(&parent))
		mmr_filter_tids.update(&child, &one);
#endif
	return MMR_PASS;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_current(id))
		return MMR_PASS;
	mmr_note_current(id);
#ifdef MMR_HAVE_SYSCALLS
	mmr_sys_exit_group_close(id);
#endif
	return MMR_PASS;
}
