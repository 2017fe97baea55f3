/* SPDX-License-Identifier: GPL-2.0 */
/* sched:sched_{waking,wakeup,wakeup_new} -> sched_wakeup */

static __always_inline int mmr_wakeup(u32 tid, const char *comm, s32 prio, s32 target_cpu, int kind)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_task(tid, comm) && !mmr_want(id, 0))
		return MMR_PASS;
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
	mmr_note_task(tid, -1, comm);
	struct mmr_sched_wakeup *e = mmr_slot(b);
	mmr_head(e, MMR_EV_SCHED_WAKEUP, 0, bpf_ktime_get_ns(), mmr_next_seq(), id >> 32, (u32)id,
		 bpf_get_smp_processor_id());
	e->woken_tid = tid;
	e->prio = prio;
	e->target_cpu = target_cpu;
	e->wake_kind = kind;
	mmr_count(MMR_EV_SCHED_WAKEUP, 1, 0);
	mmr_commit(b, MMR_EV_SCHED_WAKEUP);
	return MMR_PASS;
}

#if MMR_RAW_SCHED_WAKEUP
/* TP_PROTO(struct task_struct *p) for all three */
static __always_inline int mmr_wakeup_raw(void *p, int kind)
{
	u32 tid = mmr_task_pid(p);
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_task(tid, mmr_task_comm(p)) && !mmr_want(id, 0))
		return MMR_PASS;
	return mmr_wakeup(tid, mmr_task_comm(p), mmr_task_prio(p), mmr_task_cpu(p), kind);
}

RAW_TRACEPOINT_PROBE(sched_waking)
{
	return mmr_wakeup_raw((void *)ctx->args[0], MMR_WAKE_WAKING);
}

RAW_TRACEPOINT_PROBE(sched_wakeup)
{
	return mmr_wakeup_raw((void *)ctx->args[0], MMR_WAKE_WAKEUP);
}

RAW_TRACEPOINT_PROBE(sched_wakeup_new)
{
	return mmr_wakeup_raw((void *)ctx->args[0], MMR_WAKE_WAKEUP_NEW);
}
#else
TRACEPOINT_PROBE(sched, sched_waking)
{
	return mmr_wakeup(args->pid, args->comm, args->prio, args->target_cpu, MMR_WAKE_WAKING);
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
	return mmr_wakeup(args->pid, args->comm, args->prio, args->target_cpu, MMR_WAKE_WAKEUP);
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
	return mmr_wakeup(args->pid, args->comm, args->prio, args->target_cpu, MMR_WAKE_WAKEUP_NEW);
}
#endif
