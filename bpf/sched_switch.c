/* SPDX-License-Identifier: GPL-2.0 */
/* sched:sched_switch -> sched_switch (also notes task names for the tasks table) */

TRACEPOINT_PROBE(sched, sched_switch)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 next = args->next_pid;
	int want = mmr_want_current(id) || ((id >> 32) != MMR_SELF_TGID && mmr_want_task(next, args->next_comm));
	if (!want)
		return MMR_PASS;
	mmr_note_current(id);
	mmr_note_task(next, -1, args->next_comm);
	struct mmr_batch *b = mmr_batch_get();
	if (!b)
		return MMR_PASS;
	struct mmr_sched_switch *e = mmr_slot(b);
	mmr_head(e, MMR_EV_SCHED_SWITCH, 0, bpf_ktime_get_ns(), mmr_next_seq(), id >> 32, args->prev_pid,
		 bpf_get_smp_processor_id());
	e->prev_prio = args->prev_prio;
	e->prev_state = args->prev_state;
	e->next_tid = next;
	e->next_prio = args->next_prio;
	mmr_count(MMR_EV_SCHED_SWITCH, 1, 0);
	mmr_commit(b, MMR_EV_SCHED_SWITCH);
	return MMR_PASS;
}
