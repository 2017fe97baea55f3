/* SPDX-License-Identifier: GPL-2.0 */
/* sched:sched_switch -> sched_switch (also notes task names for the tasks table).
 *
 * A switch is recorded when either side is a recorded task, whatever the other
 * side is, the recorder included: a recorded task's switch-in after the
 * recorder ran closes the time it was preempted, which would otherwise stay
 * inside the hold or system call it interrupted. The flags say which sides
 * are recorded tasks: user space follows each recorded task's switches and
 * counts a switch-in the kernel never reported (tracer/switch_gaps.py). */

static __always_inline int mmr_switch(u32 next, const char *next_comm, s32 prev_prio, s64 prev_state,
				      s32 next_prio)
{
	u64 id = bpf_get_current_pid_tgid();
	int prev_in = mmr_want(id, 0), next_in = mmr_want_task(next, next_comm);
	if (!prev_in && !next_in)
		return MMR_PASS;
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
	mmr_note_current(id);
	mmr_note_task(next, -1, next_comm);
	struct mmr_sched_switch *e = mmr_slot(b);
	mmr_head(e, MMR_EV_SCHED_SWITCH,
		 (prev_in ? MMR_F_PREV_RECORDED : 0) | (next_in ? MMR_F_NEXT_RECORDED : 0), bpf_ktime_get_ns(), mmr_next_seq(), id >> 32, (u32)id,
		 bpf_get_smp_processor_id());
	e->prev_prio = prev_prio;
	e->prev_state = prev_state;
	e->next_tid = next;
	e->next_prio = next_prio;
	mmr_count(MMR_EV_SCHED_SWITCH, 1, 0);
	mmr_commit(b, MMR_EV_SCHED_SWITCH);
	return MMR_PASS;
}

#if MMR_RAW_SCHED_SWITCH
/* The classic event's prev_state (__trace_sched_switch_state): TASK_REPORT_MAX
 * if preempted, else the highest bit of the reported state. */
static __always_inline s64 mmr_report_state(u64 preempt, u32 state, u32 exit_state)
{
	if (preempt)
		return 0x100; /* TASK_REPORT_MAX */
	u32 s = (state | exit_state) & 0x7f; /* TASK_REPORT */
	if ((state & 0x402) == 0x402) /* TASK_IDLE */
		s = 0x80; /* TASK_REPORT_IDLE */
	if (state == 0x1000) /* TASK_RTLOCK_WAIT */
		s = 0x2; /* TASK_UNINTERRUPTIBLE */
	s64 top = 0;
#pragma unroll
	for (int i = 0; i < 8; i++)
		if (s & (1u << i))
			top = 1 << i;
	return top;
}

/* TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state) */
RAW_TRACEPOINT_PROBE(sched_switch)
{
	void *prev = (void *)ctx->args[1], *next = (void *)ctx->args[2];
	u32 next_tid = mmr_task_pid(next);
	u64 id = bpf_get_current_pid_tgid();
	/* the filter before anything is read that only a recorded switch needs */
	if (!mmr_want(id, 0) && !mmr_want_task(next_tid, mmr_task_comm(next)))
		return MMR_PASS;
	return mmr_switch(next_tid, mmr_task_comm(next), mmr_task_prio(prev),
			  mmr_report_state(ctx->args[0], (u32)ctx->args[3], mmr_task_u32(prev, MMR_OFF_TASK_EXIT_STATE)),
			  mmr_task_prio(next));
}
#else
TRACEPOINT_PROBE(sched, sched_switch)
{
	return mmr_switch(args->next_pid, args->next_comm, args->prev_prio, args->prev_state, args->next_prio);
}
#endif
