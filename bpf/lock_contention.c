/* SPDX-License-Identifier: GPL-2.0 */
/* lock:contention_{begin,end} paired per (tid, lock) -> lock_waits.
 * Repeated begins for the same lock (a mutex that spins, sleeps, retries)
 * fold into one wait from the first begin to the end.
 *
 * A contention that begins or ends while one of our programs is inside a map or
 * ring-buffer call on the CPU (mmr_locking) is on a lock that program took (a
 * map's bucket lock, the ring buffer's producer lock): the recorder's own,
 * counted as such and not recorded. */

struct mmr_lc_key {
	u32 tid;
	u32 _pad;
	u64 addr;
};

struct mmr_lc_val {
	u64 ts;
	u64 seq;
	u32 flags;
	s32 begins;
	s32 stack_id;
	s32 pid;
	u16 cpu;
};

BPF_HASH(mmr_contention, struct mmr_lc_key, struct mmr_lc_val, 65536);

static __always_inline int mmr_lc_begin(void *ctx, u64 lock, u32 flags)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, MMR_EV_LOCK_WAIT))
		return MMR_PASS;
	if (mmr_in_lock_op()) {
		mmr_count_recorder(MMR_EV_LOCK_WAIT);
		return MMR_PASS;
	}
	struct mmr_batch *b = mmr_enter(); /* marks the CPU as in a probe (the map update below) */
	if (!b)
		return MMR_PASS;
	struct mmr_lc_key k = {.tid = (u32)id, .addr = lock};
	struct mmr_lc_val *old = mmr_contention.lookup(&k);
	if (old) {
		old->begins++;
		old->flags |= flags;
		mmr_exit();
		return MMR_PASS;
	}
	struct mmr_lc_val v = {
		.ts = bpf_ktime_get_ns(),
		.seq = mmr_next_seq(),
		.flags = flags,
		.begins = 1,
		.pid = id >> 32,
		.cpu = bpf_get_smp_processor_id(),
		.stack_id = -1,
	};
#if MMR_STACKS
	v.stack_id = mmr_stackid(ctx);
#endif
	{
		u32 lk = mmr_locking_begin();
		mmr_contention.update(&k, &v);
		mmr_locking_end(lk);
	}
	mmr_exit();
	return MMR_PASS;
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
	struct mmr_lc_key k = {.tid = tid, .addr = lock};
	struct mmr_lc_val *v = mmr_contention.lookup(&k);
	struct mmr_lock_wait *e = mmr_slot(b);
	if (v) {
		mmr_head(e, MMR_EV_LOCK_WAIT, 0, v->ts, v->seq, v->pid, tid, v->cpu);
		e->stack_id = v->stack_id;
		e->dur = now - v->ts;
		e->lcb_flags = v->flags;
		e->begins = v->begins;
		{
			u32 lk = mmr_locking_begin();
			mmr_contention.delete(&k);
			mmr_locking_end(lk);
		}
		mmr_count(MMR_EV_LOCK_WAIT, 1, 0);
	} else {
		/* the wait began before the recording started */
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
