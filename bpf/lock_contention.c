/* SPDX-License-Identifier: GPL-2.0 */
/* lock:contention_{begin,end} paired per (tid, lock) -> lock_waits.
 * Repeated begins for the same lock (a mutex that spins, sleeps, retries)
 * fold into one wait from the first begin to the end. */

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

TRACEPOINT_PROBE(lock, contention_begin)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_current(id))
		return MMR_PASS;
	struct mmr_lc_key k = {.tid = (u32)id, .addr = (u64)args->lock_addr};
	struct mmr_lc_val *old = mmr_contention.lookup(&k);
	if (old) {
		old->begins++;
		old->flags |= args->flags;
		return MMR_PASS;
	}
	struct mmr_lc_val v = {
		.ts = bpf_ktime_get_ns(),
		.seq = mmr_next_seq(),
		.flags = args->flags,
		.begins = 1,
		.pid = id >> 32,
		.cpu = bpf_get_smp_processor_id(),
	};
	v.stack_id = mmr_stackid(args);
	mmr_contention.update(&k, &v);
	return MMR_PASS;
}

TRACEPOINT_PROBE(lock, contention_end)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_current(id))
		return MMR_PASS;
	u64 now = bpf_ktime_get_ns();
	u32 tid = (u32)id;
	struct mmr_lc_key k = {.tid = tid, .addr = (u64)args->lock_addr};
	struct mmr_lc_val *v = mmr_contention.lookup(&k);
	struct mmr_batch *b = mmr_batch_get();
	if (!b)
		return MMR_PASS;
	struct mmr_lock_wait *e = mmr_slot(b);
	if (v) {
		mmr_head(e, MMR_EV_LOCK_WAIT, 0, v->ts, v->seq, v->pid, tid, v->cpu);
		e->stack_id = v->stack_id;
		e->dur = now - v->ts;
		e->lcb_flags = v->flags;
		e->begins = v->begins;
		mmr_contention.delete(&k);
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
	e->ret = args->ret;
	mmr_commit(b, MMR_EV_LOCK_WAIT);
	return MMR_PASS;
}
