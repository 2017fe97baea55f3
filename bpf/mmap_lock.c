/* SPDX-License-Identifier: GPL-2.0 */
/* mmap_lock wait + hold per (tid, mm), paired in the kernel -> lock_holds.
 *
 * The state lives in one entry per task, created at the task's first
 * mmap_lock event and deleted when it exits: every later event is one map
 * lookup and stores into that entry, never a map update (an update allocates,
 * locks a bucket and frees the old element: it was most of this probe's cost).
 * A task holds or waits for at most MMR_ML_SLOTS mmap_locks at once (several
 * mm's: process_vm_readv, a debugger); more count as unmatched. */

#define MMR_ML_SLOTS 4

struct mmr_ml_slot {
	u64 mm;         /* 0: free */
	u64 start_ts;   /* start_locking */
	u64 acq_ts;     /* acquire_returned */
	u64 seq;
	u64 wait;
	u16 cpu;
	u8 write;
	u8 held;        /* 0: waiting (start_locking seen), 1: held */
	s32 depth;      /* mmap_locks the task held when it acquired this one */
};

struct mmr_ml_task {
	s32 pid;
	u32 _pad;
	struct mmr_ml_slot s[MMR_ML_SLOTS];
};

BPF_HASH(mmr_mmap_lock, u32, struct mmr_ml_task, 65536);
#define MMR_HAVE_MMAP_LOCK 1

/* The tracer's own time inside a hold that the recorded hold leaves out (issue #16): mmap_lock_released
 * fires before up_write/up_read, and mmap_write_downgrade's acquire_returned before downgrade_write, so
 * what the program runs after its timestamp still holds the lock (write-held, for the downgrade). Sampled:
 * one matched release or downgrade in MMR_ML_TAIL_EVERY also reads the clock at the program's end.
 * [0]/[1]: release tail ns, samples; [2]/[3]: downgrade tail ns, samples. Read at stop into the manifest
 * (extra.mmap_lock_tail, docs/TRACE_FORMAT.md). */
#define MMR_ML_TAIL_EVERY 8
BPF_PERCPU_ARRAY(mmr_ml_tail, u64, 4);

static __always_inline void mmr_ml_tail_add(int k, u64 since)
{
	u64 end = bpf_ktime_get_ns();
	u32 i = k, j = k + 1;
	u64 *sum = mmr_ml_tail.lookup(&i), *cnt = mmr_ml_tail.lookup(&j);
	if (sum && cnt) {
		*sum += end - since;
		*cnt += 1;
	}
}

static __always_inline struct mmr_ml_task *mmr_ml_task_of(u32 tid, s32 pid)
{
	struct mmr_ml_task *t = mmr_mmap_lock.lookup(&tid);
	if (t)
		return t;
	struct mmr_ml_task n = {.pid = pid};
	{
		u32 lk = mmr_locking_begin();
		mmr_mmap_lock.insert(&tid, &n);
		mmr_locking_end(lk);
	}
	return mmr_mmap_lock.lookup(&tid);
}

/* The slot of mm, else a free one (its mm still 0); -1: none left. */
static __always_inline int mmr_ml_find(struct mmr_ml_task *t, u64 mm, int *held)
{
	int found = -1, free = -1;
	*held = 0;
#pragma unroll
	for (int i = 0; i < MMR_ML_SLOTS; i++) {
		if (t->s[i].mm == mm)
			found = i;
		else if (!t->s[i].mm && free < 0)
			free = i;
		else if (t->s[i].held)
			(*held)++;
	}
	return found >= 0 ? found : free;
}

static __always_inline void mmr_ml_emit(struct mmr_batch *b, struct mmr_ml_slot *v, s32 pid, u32 tid, u64 now,
				       u8 success)
{
	struct mmr_lock_hold *e = mmr_slot(b);
	mmr_head(e, MMR_EV_LOCK_HOLD, 0, v->acq_ts, v->seq, pid, tid, v->cpu);
	e->stack_id = -1;
	e->dur = success ? now - v->acq_ts : 0;
	e->wait = v->wait;
	e->lock_addr = v->mm;
	e->depth = v->depth;
	e->mode = v->write;
	e->success = success;
	e->lock_class = 1;
	mmr_emit(b, MMR_EV_LOCK_HOLD);
}

/* Slot i (0 <= i < MMR_ML_SLOTS) of t. The mask bounds the index for the verifier; the barrier keeps clang
 * from dropping it: clang knows mmr_ml_find() returns -1..3 and computes that branch-free with a negation,
 * whose result the 6.1 verifier cannot bound ("R3 unbounded memory access", the program refused). */
static __always_inline struct mmr_ml_slot *mmr_ml_at(struct mmr_ml_task *t, int i)
{
	u32 k = i;
	asm volatile("" : "+r"(k));
	return &t->s[k & (MMR_ML_SLOTS - 1)];
}

static __always_inline int mmr_ml_start(u64 mm, u8 write)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, MMR_EV_LOCK_HOLD))
		return MMR_PASS;
	/* no batch level: a start writes only the task's entry */
	struct mmr_ml_task *t = mmr_ml_task_of((u32)id, id >> 32);
	int held;
	int i = t ? mmr_ml_find(t, mm, &held) : -1;
	if (i >= 0) {
		struct mmr_ml_slot *v = mmr_ml_at(t, i);
		if (!v->held) { /* a held slot of the same mm: a nested start, seen at its acquire */
			v->mm = mm;
			v->start_ts = bpf_ktime_get_ns();
			v->write = write;
		}
	}
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
	s32 pid = id >> 32;
	struct mmr_ml_task *t = mmr_ml_task_of(tid, pid);
	int held;
	int i = t ? mmr_ml_find(t, mm, &held) : -1;
	mmr_count(MMR_EV_LOCK_HOLD, 1, i < 0);
	if (i < 0) {
		mmr_exit();
		return MMR_PASS;
	}
	struct mmr_ml_slot *v = mmr_ml_at(t, i);
	u64 wait = 0;
	int downgrade = 0;
	if (v->mm == mm && v->held) {
		/* mmap_write_downgrade: the write hold ends, a read hold starts */
		mmr_ml_emit(b, v, pid, tid, now, 1);
		downgrade = 1;
	} else if (v->mm == mm) {
		wait = now - v->start_ts;
	} /* else: a trylock, no wait */
	v->mm = mm;
	v->acq_ts = now;
	v->seq = mmr_next_seq();
	v->wait = wait;
	v->cpu = bpf_get_smp_processor_id();
	v->write = write;
	v->depth = held;
	if (!success) {
		mmr_ml_emit(b, v, pid, tid, now, 0);
		v->mm = 0;
		v->held = 0;
	} else {
		v->held = 1;
	}
	mmr_exit();
	if (downgrade && !(v->seq % MMR_ML_TAIL_EVERY))
		mmr_ml_tail_add(2, now);
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
	s32 pid = id >> 32;
	struct mmr_ml_task *t = mmr_mmap_lock.lookup(&tid);
	int held = 0;
	int i = t ? mmr_ml_find(t, mm, &held) : -1;
	if (i >= 0) {
		struct mmr_ml_slot *v = mmr_ml_at(t, i);
		if (v->mm == mm && v->held) {
			u64 sample = !(v->seq % MMR_ML_TAIL_EVERY);
			mmr_ml_emit(b, v, pid, tid, now, 1);
			v->mm = 0;
			v->held = 0;
			mmr_exit();
			if (sample)
				mmr_ml_tail_add(0, now);
			return MMR_PASS;
		}
	}
	/* taken before the recording started: acquisition time unknown */
	mmr_count(MMR_EV_LOCK_HOLD, 0, 1);
	struct mmr_lock_hold *e = mmr_slot(b);
	mmr_head(e, MMR_EV_LOCK_HOLD, MMR_F_INCOMPLETE | MMR_F_NO_START, 0, mmr_next_seq(), pid, tid,
		 bpf_get_smp_processor_id());
	e->stack_id = -1;
	e->dur = now; /* MMR_F_NO_START: dur holds the end time */
	e->wait = 0;
	e->lock_addr = mm;
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
