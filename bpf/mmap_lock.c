/* SPDX-License-Identifier: GPL-2.0 */
/* mmap_lock wait + hold per (tid, mm), paired in the kernel -> lock_holds. */

struct mmr_ml_key {
	u32 tid;
	u32 _pad;
	u64 mm;
};

struct mmr_ml_val {
	u64 start_ts;   /* start_locking */
	u64 acq_ts;     /* acquire_returned */
	u64 seq;
	u64 wait;
	s32 pid;
	s32 depth;
	u16 cpu;
	u8 write;
	u8 held;
};

BPF_HASH(mmr_mmap_lock, struct mmr_ml_key, struct mmr_ml_val, 65536);
BPF_HASH(mmr_mmap_depth, u32, s32, 65536);

static __always_inline void mmr_ml_emit(struct mmr_batch *b, struct mmr_ml_val *v, u32 tid, u64 mm, u64 now,
				       u8 success, u8 flags)
{
	struct mmr_lock_hold *e = mmr_slot(b);
	mmr_head(e, MMR_EV_LOCK_HOLD, flags, v->acq_ts, v->seq, v->pid, tid, v->cpu);
	e->stack_id = -1;
	e->dur = success ? now - v->acq_ts : 0;
	e->wait = v->wait;
	e->lock_addr = mm;
	e->depth = v->depth;
	e->mode = v->write;
	e->success = success;
	e->lock_class = 1;
	mmr_emit(b, MMR_EV_LOCK_HOLD);
}

static __always_inline void mmr_ml_depth(u32 tid, int delta, s32 *before)
{
	s32 *d = mmr_mmap_depth.lookup(&tid);
	s32 cur = d ? *d : 0;
	*before = cur;
	cur += delta;
	if (cur <= 0)
		mmr_mmap_depth.delete(&tid);
	else
		mmr_mmap_depth.update(&tid, &cur);
}

static __always_inline int mmr_ml_start(u64 mm, u8 write)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, MMR_EV_LOCK_HOLD))
		return MMR_PASS;
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
	struct mmr_ml_key k = {.tid = (u32)id, .mm = mm};
	struct mmr_ml_val v = {.start_ts = bpf_ktime_get_ns(), .pid = id >> 32, .write = write};
	mmr_mmap_lock.update(&k, &v);
	mmr_exit();
	return MMR_PASS;
}

static __always_inline int mmr_ml_acquired(u64 mm, u8 write, u8 success)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, MMR_EV_LOCK_HOLD))
		return MMR_PASS;
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
	u64 now = bpf_ktime_get_ns();
	u32 tid = (u32)id;
	struct mmr_ml_key k = {.tid = tid, .mm = mm};
	struct mmr_ml_val v = {};
	struct mmr_ml_val *old = mmr_mmap_lock.lookup(&k);
	s32 depth = 0;
	if (old && old->held) {
		/* mmap_write_downgrade: the write hold ends, a read hold starts */
		mmr_ml_emit(b, old, tid, k.mm, now, 1, 0);
		mmr_ml_depth(tid, -1, &depth);
	} else if (old) {
		v.wait = now - old->start_ts;
	} /* else: a trylock, no wait */
	v.acq_ts = now;
	v.seq = mmr_next_seq();
	v.pid = id >> 32;
	v.cpu = bpf_get_smp_processor_id();
	v.write = write;
	mmr_count(MMR_EV_LOCK_HOLD, 1, 0);
	if (!success) {
		mmr_ml_depth(tid, 0, &depth);
		v.depth = depth;
		mmr_ml_emit(b, &v, tid, k.mm, now, 0, 0);
		mmr_mmap_lock.delete(&k);
		mmr_exit();
		return MMR_PASS;
	}
	mmr_ml_depth(tid, 1, &depth);
	v.depth = depth;
	v.held = 1;
	mmr_mmap_lock.update(&k, &v);
	mmr_exit();
	return MMR_PASS;
}

static __always_inline int mmr_ml_released(u64 mm, u8 write)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, MMR_EV_LOCK_HOLD))
		return MMR_PASS;
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
	u64 now = bpf_ktime_get_ns();
	u32 tid = (u32)id;
	struct mmr_ml_key k = {.tid = tid, .mm = mm};
	struct mmr_ml_val *v = mmr_mmap_lock.lookup(&k);
	s32 depth;
	if (v && v->held) {
		mmr_ml_emit(b, v, tid, k.mm, now, 1, 0);
		mmr_mmap_lock.delete(&k);
		mmr_ml_depth(tid, -1, &depth);
		mmr_exit();
		return MMR_PASS;
	}
	/* taken before the recording started: acquisition time unknown */
	mmr_count(MMR_EV_LOCK_HOLD, 0, 1);
	struct mmr_lock_hold *e = mmr_slot(b);
	mmr_head(e, MMR_EV_LOCK_HOLD, MMR_F_INCOMPLETE | MMR_F_NO_START, 0, mmr_next_seq(), id >> 32, tid,
		 bpf_get_smp_processor_id());
	e->stack_id = -1;
	e->dur = now; /* MMR_F_NO_START: dur holds the end time */
	e->wait = 0;
	e->lock_addr = k.mm;
	e->depth = -1;
	e->mode = write;
	e->success = 1;
	e->lock_class = 1;
	mmr_commit(b, MMR_EV_LOCK_HOLD);
	return MMR_PASS;
}

#if MMR_RAW_MMAP_LOCK
/* TP_PROTO(struct mm_struct *mm, bool write) */
RAW_TRACEPOINT_PROBE(mmap_lock_start_locking)
{
	return mmr_ml_start(ctx->args[0], (u8)ctx->args[1]);
}

/* TP_PROTO(struct mm_struct *mm, bool write, bool success) */
RAW_TRACEPOINT_PROBE(mmap_lock_acquire_returned)
{
	return mmr_ml_acquired(ctx->args[0], (u8)ctx->args[1], (u8)ctx->args[2]);
}

/* TP_PROTO(struct mm_struct *mm, bool write) */
RAW_TRACEPOINT_PROBE(mmap_lock_released)
{
	return mmr_ml_released(ctx->args[0], (u8)ctx->args[1]);
}
#else
TRACEPOINT_PROBE(mmap_lock, mmap_lock_start_locking)
{
	return mmr_ml_start((u64)args->mm, args->write);
}

TRACEPOINT_PROBE(mmap_lock, mmap_lock_acquire_returned)
{
	return mmr_ml_acquired((u64)args->mm, args->write, args->success);
}

TRACEPOINT_PROBE(mmap_lock, mmap_lock_released)
{
	return mmr_ml_released((u64)args->mm, args->write);
}
#endif
