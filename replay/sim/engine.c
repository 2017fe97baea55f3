// SPDX-License-Identifier: MIT
/*
 * The discrete-event engine in C: a transcription of replay/sim/engine.py and
 * replay/sim/locks.py, function for function, that gives bit-identical results
 * (same events in the same order, same random draws: Python's MT19937 state is
 * handed over and random() / expovariate() are reproduced exactly).
 *
 * engine.py is the reference and documents the model; change both together.
 * tests/test_sim_engines.py runs both on the same workloads and compares every
 * event table and counter.
 *
 * Built on first use by replay/sim/cengine.py (cc -O2 -shared) and driven
 * through ctypes: no Python headers, no build step at install time.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;

/* opcodes: replay/sim/program.py */
enum { USER, KERN, BLOCK, UNTIL, ACQ, REL, SPAN_B, SPAN_E, GB, GZAP, GFLUSH, GPOINT, GE, END, DOWNGRADE };
#define WIDTH 5
/* thread states and events: engine.py */
enum { RUN, SPIN, SLEEP, BLOCKED, READY, PREEMPTED, DONE };
enum { E_SEG, E_WAKE, E_GRANT, E_RSPIN, E_PSLEEP, E_RESUME, E_PWAKE, E_PEND };
/* lock kinds (a qspinlock is a spinlock with per_waiter 0) */
enum { L_SPIN, L_MUTEX, L_RWSEM, L_RECORDED, L_RWSEM_CLASSIC, L_MUTEX_CLASSIC };
#define MAX_READERS_WAKEUP 256
#define IDLE_TID (-1)
#define PROBE_TID (-2)

/* event logs: engine.LOG_COLUMNS, kept a column at a time (mmr_engine_log_column) */
enum { LOG_WAITS, LOG_HOLDS, LOG_OPS, LOG_POFF, LOG_PROBE, LOG_SCHED, NLOGS };
static const int log_width[NLOGS] = {8, 9, 5, 7, 5, 6};
#define LOG_MAXW 9
/* How a log column is kept (mmr_engine_log_types; int64 unless told): not at all, int64, int32 or int16
 * (truncated, as numpy's astype), one byte of value != 0, one byte of the low bit (value & 1). */
enum { C_SKIP, C_I64, C_I32, C_I16, C_BOOL, C_BIT0, NCTYPES };
static const size_t ctype_size[NCTYPES] = {0, 8, 4, 2, 1, 1};

#define ERR_NOMEM (-12)
#define ERR_ASSERT (-1)

/* Mirrored by cengine.Params (ctypes): keep the order and types identical. */
struct mmr_params {
	i64 cpus, full, percpu, probe, probe_period, nthreads, nlocks, ninstr, nclasses;
	/* costs (ns, pages) */
	i64 context_switch, wakeup, wake_jitter, timeslice, probe_irq, probe_run, line, line_remote,
	    cpus_per_socket, max_gather_pages, batch_pages, percpu_batch_pages, local_batch_pages,
	    invlpg, full_flush, flush_ceiling, ipi_handler, shootdown, mutex_waker, lazy_leave;
	double batch_alloc_fail_p;
	/* codes in the results schema's vocabularies */
	i64 r_dispatch, r_preempt, r_block, r_sleep_lock, r_exit, r_probe_end;
	i64 p_spinlock, p_spin_wait, p_gather, p_ptl, p_recorded_spin;
	i64 q_idle, q_preemptible, q_kernel, q_switch;
	i64 probe_cause_of[8];
	/* the program and the workload */
	const i64 *code;
	const uint8_t *points;
	const i64 *start;
	const double *floats;
	const i64 *lock_kind, *lock_handoff, *lock_sleeping, *lock_cls, *lock_cost, *lock_lines;
	const double *lock_per_waiter;
	const i64 *tid, *mm, *start_ns;
	const i64 *probe_at; /* first probe timer per CPU */
	const uint32_t *mt;  /* Python's random state: 624 words and the index */
	/* issue #16: per lock, the tracer's time replayed at an acquisition (engine.py lock_tracer), 0: none */
	const i64 *lock_tracer;
	/* issue #16: per lock, the tracer's time after a release's (downgrade's) stamp (engine.py lock_tail) */
	const i64 *lock_tail, *lock_dtail;
	/* issue #16: recorded hand-offs to spinners, one drawn per same-socket grant (engine.py handoffs) */
	const i64 *handoffs;
	i64 nhandoffs;
	/* issue #16: recorded waker -> activation delays of woken lock sleepers (engine.py lock_wakes) */
	const i64 *lock_wakes;
	i64 nlock_wakes;
	/* issue #16: a lock waiter that must sleep leaves its CPU this much later (engine.py sleep_window) */
	i64 sleep_window;
	/* issue #16: a Block's length holds its wake-up (engine.py block_exact, Costs.blocks_hold_wakeup) */
	i64 block_exact;
	/* issue #16: recorded release -> switch-in delays of lock sleepers woken after a long sleep, and how long
	 * is long (engine.py long_wakes, long_after) */
	const i64 *long_wakes;
	i64 nlong_wakes, long_after;
};

/* Mirrored by cengine.Stats. */
struct mmr_stats {
	i64 events, instr, work_ns, overhead_ns, spin_ns, probe_cpu_ns, switches, tlb_flushes, ipis,
	    atomic_sleeps, probe_overruns, done, end, t0, rq_area;
};

/* ------------------------------------------------------------------ small containers */

typedef struct {
	int *v;
	int head, n, cap;
} Deque; /* of ints, ring buffer */

static int dq_grow(Deque *d)
{
	int cap = d->cap ? d->cap * 2 : 8;
	int *v = malloc(sizeof(int) * cap);
	if (!v)
		return -1;
	for (int i = 0; i < d->n; i++)
		v[i] = d->v[(d->head + i) % d->cap];
	free(d->v);
	d->v = v;
	d->head = 0;
	d->cap = cap;
	return 0;
}

static int dq_push(Deque *d, int x)
{
	if (d->n == d->cap && dq_grow(d))
		return -1;
	d->v[(d->head + d->n) % d->cap] = x;
	d->n++;
	return 0;
}

static int dq_push_front(Deque *d, int x)
{
	if (d->n == d->cap && dq_grow(d))
		return -1;
	d->head = (d->head + d->cap - 1) % d->cap;
	d->v[d->head] = x;
	d->n++;
	return 0;
}

static int dq_pop(Deque *d)
{
	int x = d->v[d->head];
	d->head = (d->head + 1) % d->cap;
	d->n--;
	return x;
}

static int dq_front(const Deque *d)
{
	return d->v[d->head];
}

static int dq_remove(Deque *d, int x) /* the first occurrence; 0 if found */
{
	for (int i = 0; i < d->n; i++) {
		if (d->v[(d->head + i) % d->cap] == x) {
			for (int j = i; j + 1 < d->n; j++)
				d->v[(d->head + j) % d->cap] = d->v[(d->head + j + 1) % d->cap];
			d->n--;
			return 0;
		}
	}
	return -1;
}

typedef struct {
	void *col[LOG_MAXW]; /* column j: n values of type[j] (NULL: skipped, empty or handed over) */
	int type[LOG_MAXW];
	i64 row[LOG_MAXW];   /* the row log_row handed out: stored at the next log_row or log_flush */
	int pending;
	i64 n, cap; /* in rows */
	int w;
} Log;

typedef struct {
	i64 t, seq;
	i64 g;
	int ev, x;
} Event;

typedef struct {
	int lid, depth, derived;
	i64 t, wait;
} Held;

typedef struct {
	i64 start;
	int cpu;
} SpanRec;

typedef struct {
	int idx, tid;
	i64 mm;
	const i64 *code;
	const uint8_t *points;
	i64 pc;
	int state, cpu, oncpu;
	i64 gen;
	i64 rem;
	int fresh;
	i64 seg_start, seg_end, seg_work, seg_debt;
	int segpre, seg_over;
	i64 debt;
	int pcount;
	i64 poff_start;
	int poff_cause, poff_class;
	Held *held;
	i64 nheld, capheld;
	i64 wait_start, spin_start, spins, spun;
	int slept, granted, retrying;
	i64 recorded_wait;
	int waiting_lock; /* -1: none */
	i64 traced_at;    /* issue #16: start of the tracer's time at the acquisition under way, -1: none */
	SpanRec *spans;
	i64 nspans, capspans;
	i64 g_pending, g_cap, g_pt;
	int g_full, g_broken;
	double g_free;
	i64 slice_start, runnable_at;
	int left_mm; /* exit_mmap's first flush left the lazy mm (switch to init_mm) */
	i64 tail_at; /* issue #16: the recorded release's (downgrade's) time while the tracer's runs, -1: none */
	i64 credit;  /* tracer time replayed at releases, taken back from the next work (which contains it) */
	int presleep; /* on its way to sleep on a lock: still on its CPU, queued (engine.py presleep) */
	i64 off_at;   /* when it last left its CPU (engine.py off_at) */
} Thread;

typedef struct {
	int kind, preempt_off, sleeping;
	double per_waiter;
	i64 handoff_after;
	int owner; /* spinlock / mutex owner, rwsem writer; -1 none */
	int readers;
	int nonspinnable; /* RWSEM_NONSPINNABLE */
	int woken;       /* -1 none */
	i64 wait_lock_free; /* mutex-classic: when the waking unlocker lets wait_lock go */
	i64 last_cpu;       /* CPU of the last owner, -1 none yet (Engine.lock_cpu) */
	Deque q;         /* spinlock queue; mutex / rwsem optimistic spinners */
	Deque sleepers;  /* thread indices; rwsem: idx * 2 + write */
} Lock;

typedef struct Engine {
	struct mmr_params p;
	struct mmr_stats s;
	uint32_t mt[624];
	int mti;
	double jitter_lambda;
	Event *heap;
	i64 nheap, capheap, seq;
	Thread *th;
	Lock *locks;
	int *cur;      /* thread index per CPU, -1 none */
	int *idle;     /* stack: the last is taken first */
	int nidle;
	Deque rq;
	i64 rq_last;
	int *preempted;
	int *loaded;   /* thread whose mm each CPU last loaded (kept while idle: lazy TLB), -1 none */
	int *probe_running;
	i64 *probe_pending, *probe_wake;
	int *probe_cause, *probe_tid;
	i64 instr_at_probe;
	i64 *nwait, *wait_area, *wait_last;
	int *contended;
	Log logs[NLOGS];
	i64 next_report;
	int err;
	const char *errmsg;
	char errbuf[200];
} Engine;

/* Engine.inconsistent: a state the model cannot reach (a bug), named by thread and simulated time */
static void inconsistent(Engine *e, const Thread *th, i64 now, const char *what)
{
	e->err = ERR_ASSERT;
	snprintf(e->errbuf, sizeof e->errbuf, "tid %d at %.6f s into the replay: %s", th->tid,
		 (double)(now - e->s.t0) / 1e9, what);
	e->errmsg = e->errbuf;
}

/* ------------------------------------------------------------------ Python's random */

static uint32_t mt_next(Engine *e)
{
	static const uint32_t mag01[2] = {0x0u, 0x9908b0dfu};
	uint32_t y;
	uint32_t *mt = e->mt;

	if (e->mti >= 624) {
		int kk;
		for (kk = 0; kk < 624 - 397; kk++) {
			y = (mt[kk] & 0x80000000u) | (mt[kk + 1] & 0x7fffffffu);
			mt[kk] = mt[kk + 397] ^ (y >> 1) ^ mag01[y & 0x1u];
		}
		for (; kk < 623; kk++) {
			y = (mt[kk] & 0x80000000u) | (mt[kk + 1] & 0x7fffffffu);
			mt[kk] = mt[kk + (397 - 624)] ^ (y >> 1) ^ mag01[y & 0x1u];
		}
		y = (mt[623] & 0x80000000u) | (mt[0] & 0x7fffffffu);
		mt[623] = mt[396] ^ (y >> 1) ^ mag01[y & 0x1u];
		e->mti = 0;
	}
	y = mt[e->mti++];
	y ^= (y >> 11);
	y ^= (y << 7) & 0x9d2c5680u;
	y ^= (y << 15) & 0xefc60000u;
	y ^= (y >> 18);
	return y;
}

static double rnd(Engine *e) /* random.random(): genrand_res53 */
{
	uint32_t a = mt_next(e) >> 5, b = mt_next(e) >> 6;
	return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

static i64 exp_jitter(Engine *e) /* round(rng.expovariate(1.0 / wake_jitter_ns)) */
{
	return (i64)rint(-log(1.0 - rnd(e)) / e->jitter_lambda);
}

/* ------------------------------------------------------------------ heap and logs */

/* Room for element n of the array *v of *cap elements of ``size`` bytes (doubling, from ``first``);
 * -1 with e->err set when memory runs out. */
static int reserve(Engine *e, void **v, i64 n, i64 *cap, size_t size, i64 first)
{
	if (n < *cap)
		return 0;
	i64 c = *cap ? *cap * 2 : first;
	void *p = realloc(*v, size * c);
	if (!p) {
		e->err = ERR_NOMEM;
		return -1;
	}
	*v = p;
	*cap = c;
	return 0;
}

static int push(Engine *e, i64 t, int ev, int x, i64 g)
{
	if (reserve(e, (void **)&e->heap, e->nheap, &e->capheap, sizeof(Event), 1024))
		return -1;
	Event ne = {t, ++e->seq, g, ev, x};
	i64 i = e->nheap++;
	Event *h = e->heap;
	while (i > 0) {
		i64 parent = (i - 1) >> 1;
		if (h[parent].t < t || (h[parent].t == t && h[parent].seq < ne.seq))
			break;
		h[i] = h[parent];
		i = parent;
	}
	h[i] = ne;
	return 0;
}

static inline int ev_less(const Event *a, const Event *b)
{
	return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static Event pop(Engine *e)
{
	Event *h = e->heap;
	Event top = h[0];
	Event last = h[--e->nheap];
	i64 n = e->nheap, i = 0;
	if (n) {
		for (;;) {
			i64 c = 2 * i + 1;
			if (c >= n)
				break;
			if (c + 1 < n && ev_less(&h[c + 1], &h[c]))
				c++;
			if (!ev_less(&h[c], &last))
				break;
			h[i] = h[c];
			i = c;
		}
		h[i] = last;
	}
	return top;
}

/* The pending row of log l into its columns (growing each by doubling, from 1024 rows). */
static int log_store(Engine *e, Log *l)
{
	if (l->n == l->cap) {
		i64 c = l->cap ? l->cap * 2 : 1024;
		for (int j = 0; j < l->w; j++) {
			size_t size = ctype_size[l->type[j]];
			if (!size)
				continue;
			void *p = realloc(l->col[j], size * c);
			if (!p) {
				e->err = ERR_NOMEM;
				return -1;
			}
			l->col[j] = p;
		}
		l->cap = c;
	}
	i64 n = l->n++;
	for (int j = 0; j < l->w; j++) {
		i64 v = l->row[j];
		switch (l->type[j]) {
		case C_I64: ((i64 *)l->col[j])[n] = v; break;
		case C_I32: ((int32_t *)l->col[j])[n] = (int32_t)v; break;
		case C_I16: ((int16_t *)l->col[j])[n] = (int16_t)v; break;
		case C_BOOL: ((uint8_t *)l->col[j])[n] = v != 0; break;
		case C_BIT0: ((uint8_t *)l->col[j])[n] = (uint8_t)(v & 1); break;
		default: break;
		}
	}
	l->pending = 0;
	return 0;
}

/* Room for a row of log k (filled by the caller, stored when the next one is asked for or at
 * log_flush); NULL with e->err set when memory runs out. */
static i64 *log_row(Engine *e, int k)
{
	Log *l = &e->logs[k];
	if (l->pending && log_store(e, l))
		return NULL;
	l->pending = 1;
	return l->row;
}

static int log_flush(Engine *e, int k)
{
	Log *l = &e->logs[k];
	return l->pending ? log_store(e, l) : 0;
}

static void log6(Engine *e, int k, i64 a, i64 b, i64 c, i64 d, i64 f, i64 g)
{
	i64 *r = log_row(e, k);
	if (!r)
		return;
	r[0] = a; r[1] = b; r[2] = c; r[3] = d; r[4] = f;
	if (e->logs[k].w > 5)
		r[5] = g;
}

static void log_sched(Engine *e, i64 now, int c, i64 prev, i64 next, i64 reason, i64 wait)
{
	log6(e, LOG_SCHED, now, c, prev, next, reason, wait);
}

static void log_poff(Engine *e, i64 start, i64 dur, int c, i64 tid, i64 cause, i64 cls, i64 cut)
{
	i64 *r = log_row(e, LOG_POFF);
	if (!r)
		return;
	r[0] = start; r[1] = dur; r[2] = c; r[3] = tid; r[4] = cause; r[5] = cls; r[6] = cut;
}

/* ------------------------------------------------------------------ helpers */

static i64 wake_cost(Engine *e)
{
	return e->p.wakeup + (e->p.wake_jitter ? exp_jitter(e) : 0);
}

static int need_resched(Engine *e, Thread *th, i64 now)
{
	return e->probe_pending[th->cpu] >= 0 || (e->rq.n && now - th->slice_start >= e->p.timeslice);
}

static void poff_inc(Thread *th, i64 now, int cause, int cls)
{
	if (th->pcount == 0) {
		th->poff_start = now;
		th->poff_cause = cause;
		th->poff_class = cls;
	}
	th->pcount++;
}

static void poff_dec(Engine *e, Thread *th, i64 now)
{
	th->pcount--;
	if (th->pcount == 0)
		log_poff(e, th->poff_start, now - th->poff_start, th->cpu, th->tid, th->poff_cause, th->poff_class, 0);
}

static int ins_lid(Thread *th)
{
	return (int)th->code[th->pc * WIDTH + 1];
}

static void rq_append(Engine *e, Thread *th, i64 now)
{
	e->s.rq_area += (i64)e->rq.n * (now - e->rq_last);
	e->rq_last = now;
	if (dq_push(&e->rq, th->idx))
		e->err = ERR_NOMEM;
}

/* ------------------------------------------------------------------ CPU hand-over */

static void lock_owner_off_cpu(Engine *e, int lid, Thread *th, i64 now);
static void start_probe(Engine *e, int c, i64 now);

static void start_overhead(Engine *e, Thread *th, i64 now, i64 ns)
{
	e->s.overhead_ns += ns;
	th->seg_over = 1;
	th->segpre = 0;
	th->seg_start = now;
	th->seg_end = now + ns;
	th->seg_work = 0;
	th->seg_debt = ns;
	th->gen++;
	push(e, now + ns, E_SEG, th->idx, th->gen);
}

static void bind(Engine *e, int c, Thread *th, i64 now, i64 prev, i64 reason)
{
	log_sched(e, now, c, prev, th->tid, reason, now - th->runnable_at);
	e->cur[c] = th->idx;
	e->loaded[c] = th->idx;
	th->cpu = c;
	th->oncpu = 1;
	th->state = RUN;
	th->slice_start = now;
	if (th->pcount > 0)
		th->poff_start = now;
	e->s.switches++;
}

static void dispatch(Engine *e, int c, Thread *th, i64 now, i64 prev, i64 reason)
{
	bind(e, c, th, now, prev, reason);
	start_overhead(e, th, now, e->p.context_switch);
}

static void cpu_next(Engine *e, int c, i64 now, i64 prev, i64 reason)
{
	if (e->probe_pending[c] >= 0) {
		log_sched(e, now, c, prev, PROBE_TID, reason, 0);
		start_probe(e, c, now);
	} else if (e->rq.n) {
		e->s.rq_area += (i64)e->rq.n * (now - e->rq_last);
		e->rq_last = now;
		dispatch(e, c, &e->th[dq_pop(&e->rq)], now, prev, reason);
	} else {
		e->idle[e->nidle++] = c;
		log_sched(e, now, c, prev, IDLE_TID, reason, 0);
	}
}

static void leave_cpu(Engine *e, Thread *th, i64 now, i64 reason)
{
	int c = th->cpu;
	e->cur[c] = -1;
	th->oncpu = 0;
	th->cpu = -1;
	th->off_at = now;
	for (int i = 0; i < th->nheld; i++)
		lock_owner_off_cpu(e, th->held[i].lid, th, now);
	if (th->pcount > 0) {
		log_poff(e, th->poff_start, now - th->poff_start, c, th->tid, th->poff_cause, th->poff_class, 1);
		if (reason != e->p.r_exit)
			e->s.atomic_sleeps++;
	}
	cpu_next(e, c, now, th->tid, reason);
}

/* ------------------------------------------------------------------ lock callbacks */

static void spin(Engine *e, Thread *th, i64 now, int preempt_off)
{
	th->state = SPIN;
	th->spin_start = now;
	th->spins++;
	if (preempt_off) {
		if (th->pcount == 0) {
			th->poff_start = now;
			th->poff_cause = (int)e->p.p_spin_wait;
			th->poff_class = (int)e->p.lock_cls[ins_lid(th)];
		}
		th->pcount++;
	}
}

/* engine.py begin_window: queued, on its way to sleep; a grant or a wake to retry first is taken on the CPU */
static void begin_window(Engine *e, Thread *th, i64 now)
{
	th->presleep = 1;
	th->spins++;
	push(e, now + e->p.sleep_window, E_PSLEEP, th->idx, th->spins);
}

/* engine.py sleep_on_lock: through the way to sleep unless again (an rwsem writer woken to retry that lost) */
static void sleep_on_lock(Engine *e, Thread *th, i64 now, int again)
{
	th->state = SLEEP;
	if (e->p.sleep_window && !again) {
		if (!th->retrying)
			th->slept = 0;
		begin_window(e, th, now);
		return;
	}
	th->slept = 1;
	leave_cpu(e, th, now, e->p.r_sleep_lock);
}

static void spin_to_sleep(Engine *e, Thread *th, i64 now, int again)
{
	i64 d = now - th->spin_start;
	th->spun += d;
	e->s.spin_ns += d;
	th->state = SLEEP;
	if (e->p.sleep_window && !again) {
		begin_window(e, th, now);
		return;
	}
	th->slept = 1;
	leave_cpu(e, th, now, e->p.r_sleep_lock);
}

/* Engine.migrate: lock lid's data follows it to CPU c, its new owner's */
static i64 migrate(Engine *e, int lid, int c)
{
	Lock *lk = &e->locks[lid];
	i64 prev = lk->last_cpu;
	lk->last_cpu = c;
	if (prev < 0 || prev == c)
		return 0;
	i64 per = e->p.cpus_per_socket;
	i64 line = (per && prev / per != c / per) ? e->p.line_remote : e->p.line;
	return e->p.lock_lines[lid] * line;
}

static void grant_spin(Engine *e, Thread *frm, Thread *th, i64 now, int scaled, double scale)
{
	th->waiting_lock = -1;
	i64 per = e->p.cpus_per_socket;
	i64 line;
	if (per && frm->cpu / per != th->cpu / per)
		line = e->p.line_remote;
	else if (e->p.nhandoffs) /* a recorded hand-off: int(rng.random() * n), as engine.py draws it */
		line = e->p.handoffs[(i64)(rnd(e) * (double)e->p.nhandoffs)];
	else
		line = e->p.line;
	i64 at = now + (scaled ? (i64)rint((double)line * scale) : line);
	push(e, at, E_GRANT, th->idx, th->gen);
}

/* engine.py lock_wake_cost: the wake-up latency, then a recorded waker -> activation delay (drawn second); a
 * sleeper off its CPU for long_after or more: one recorded release -> switch-in delay, whole, less the switch */
static i64 lock_wake_cost(Engine *e, const Thread *th, i64 now)
{
	if (e->p.nlong_wakes && now - th->off_at >= e->p.long_after) {
		i64 w = e->p.long_wakes[(i64)(rnd(e) * (double)e->p.nlong_wakes)] - e->p.context_switch;
		return w > 0 ? w : 0;
	}
	i64 w = wake_cost(e);
	if (e->p.nlock_wakes)
		w += e->p.lock_wakes[(i64)(rnd(e) * (double)e->p.nlock_wakes)];
	return w;
}

static void wake_retry(Engine *e, Thread *th, i64 now, i64 delay)
{
	th->waiting_lock = -1;
	th->retrying = 1;
	if (th->presleep) { /* not asleep yet: it retries on its CPU */
		th->presleep = 0;
		th->state = SPIN;
		th->spin_start = now;
		push(e, now + delay, E_RESUME, th->idx, th->gen);
		return;
	}
	th->state = READY;
	push(e, now + delay + lock_wake_cost(e, th, now), E_WAKE, th->idx, th->gen);
}

static void grant_sleeper(Engine *e, Thread *th, i64 now)
{
	th->waiting_lock = -1;
	th->granted = 1;
	if (th->presleep) { /* not asleep yet: it goes on on its CPU */
		th->presleep = 0;
		th->state = SPIN;
		th->spin_start = now;
		push(e, now, E_GRANT, th->idx, th->gen);
		return;
	}
	th->state = READY;
	push(e, now + lock_wake_cost(e, th, now), E_WAKE, th->idx, th->gen);
}

static void timed_wait(Engine *e, Thread *th, i64 now, i64 wait, int sleeping, int preempt_off)
{
	if (sleeping) {
		th->state = SLEEP;
		th->slept = 1;
		th->granted = 1;
		leave_cpu(e, th, now, e->p.r_sleep_lock);
		i64 d = wait - e->p.context_switch;
		push(e, now + (d > 0 ? d : 0), E_WAKE, th->idx, th->gen);
	} else {
		th->state = SPIN;
		th->spin_start = now;
		if (preempt_off)
			poff_inc(th, now, (int)e->p.p_recorded_spin, (int)e->p.lock_cls[ins_lid(th)]);
		push(e, now + wait, E_GRANT, th->idx, th->gen);
	}
}

/* ------------------------------------------------------------------ locks (locks.py) */

static void sleepers_queue(Engine *e, Deque *q, Thread *th, int x)
{
	int rc = th->retrying ? dq_push_front(q, x) : dq_push(q, x);
	if (rc)
		e->err = ERR_NOMEM;
}

static void mutex_spinners_sleep(Engine *e, Lock *lk, i64 now)
{
	while (lk->q.n) {
		Thread *s = &e->th[dq_pop(&lk->q)];
		sleepers_queue(e, &lk->sleepers, s, s->idx);
		spin_to_sleep(e, s, now, 0);
	}
}

static void rwsem_spinners_sleep(Engine *e, Lock *lk, i64 now)
{
	while (lk->q.n) {
		Thread *s = &e->th[dq_pop(&lk->q)];
		sleepers_queue(e, &lk->sleepers, s, s->idx * 2 + 1);
		spin_to_sleep(e, s, now, s->retrying);
	}
}

/* RWSem._wake_readers: classic, the readers at the head up to the first writer; today, every
 * queued reader up to MAX_READERS_WAKEUP, the writers keeping their places */
static void rwsem_wake_readers(Engine *e, Lock *lk, i64 now)
{
	Deque *sl = &lk->sleepers;
	if (lk->kind == L_RWSEM_CLASSIC) {
		while (sl->n && !(dq_front(sl) & 1)) {
			lk->readers++;
			grant_sleeper(e, &e->th[dq_pop(sl) >> 1], now);
		}
		return;
	}
	int n = sl->n, woken = 0, kept = 0;
	for (int i = 0; i < n; i++) {
		int x = dq_pop(sl);
		if (woken >= MAX_READERS_WAKEUP || (x & 1)) {
			if (dq_push(sl, x)) /* rotates the writers (and what is left) back in order */
				e->err = ERR_NOMEM;
			kept++;
		} else {
			lk->readers++;
			woken++;
			grant_sleeper(e, &e->th[x >> 1], now);
		}
	}
	(void)kept;
}

/* Mutex._wake_first: wake the first sleeper to retry, unless one is already on its way */
static void mutex_wake_first(Engine *e, Lock *lk, i64 now, i64 delay)
{
	if (lk->sleepers.n && lk->woken < 0) {
		Thread *nxt = &e->th[dq_pop(&lk->sleepers)];
		lk->woken = nxt->idx;
		wake_retry(e, nxt, now, delay);
	}
}

/* Mutex.release_wait: until when an unlock at now must spin on wait_lock first */
static i64 lock_release_wait(const Lock *lk)
{
	if (lk->kind == L_MUTEX_CLASSIC && (lk->q.n || lk->sleepers.n || lk->woken >= 0))
		return lk->wait_lock_free;
	return 0;
}

static int lock_acquire(Engine *e, Lock *lk, Thread *th, i64 now, int write)
{
	switch (lk->kind) {
	case L_SPIN:
		if (lk->owner < 0) {
			lk->owner = th->idx;
			return 1;
		}
		if (dq_push(&lk->q, th->idx))
			e->err = ERR_NOMEM;
		spin(e, th, now, 1);
		return 0;
	case L_MUTEX:
	case L_MUTEX_CLASSIC:
		if (lk->woken == th->idx)
			lk->woken = -1;
		if (lk->owner < 0) {
			lk->owner = th->idx;
			return 1;
		}
		if (e->th[lk->owner].oncpu && !(lk->kind == L_MUTEX_CLASSIC && th->retrying) &&
		    !need_resched(e, th, now)) {
			if (dq_push(&lk->q, th->idx))
				e->err = ERR_NOMEM;
			spin(e, th, now, 0);
		} else {
			sleepers_queue(e, &lk->sleepers, th, th->idx);
			sleep_on_lock(e, th, now, 0);
		}
		return 0;
	case L_RWSEM:
	case L_RWSEM_CLASSIC: {
		int classic = lk->kind == L_RWSEM_CLASSIC;
		if (lk->woken == th->idx)
			lk->woken = -1;
		if (write) {
			if (lk->owner < 0 && lk->readers == 0 && !(classic && lk->sleepers.n)) {
				lk->owner = th->idx;
				lk->nonspinnable = 0;
				return 1;
			}
			/* a woken writer that finds the lock taken sleeps again without spinning, unless it has
			 * waited handoff_after (handoff_set: it spins on a running writer owner, never on readers) */
			int retry = th->retrying;
			if (!classic && !need_resched(e, th, now) && !(retry && now - th->wait_start < lk->handoff_after)) {
				if (lk->owner >= 0 && e->th[lk->owner].oncpu) { /* spin while the owning writer runs */
					if (dq_push(&lk->q, th->idx))
						e->err = ERR_NOMEM;
					spin(e, th, now, 0);
					return 0;
				}
				if (lk->owner < 0 && !lk->nonspinnable && !retry) { /* spin on the readers, for a while */
					if (dq_push(&lk->q, th->idx))
						e->err = ERR_NOMEM;
					spin(e, th, now, 0);
					i64 readers = lk->readers < 30 ? lk->readers : 30;
					push(e, now + (20 + readers) * 500, E_RSPIN, th->idx, th->spins);
					return 0;
				}
			}
		} else if (lk->owner < 0) {
			if (classic) {
				if (!lk->sleepers.n) {
					lk->readers++;
					return 1;
				}
			} else if (lk->woken < 0 && !lk->sleepers.n) { /* spinning writers are invisible */
				lk->readers++;
				return 1;
			} else if (lk->readers == 0) { /* a free lock with waiters: steal it */
				lk->readers++;
				if (lk->sleepers.n && !(dq_front(&lk->sleepers) & 1))
					rwsem_wake_readers(e, lk, now);
				return 1;
			}
		}
		sleepers_queue(e, &lk->sleepers, th, th->idx * 2 + (write ? 1 : 0));
		sleep_on_lock(e, th, now, th->retrying); /* a woken writer that lost: back to sleep at once */
		return 0;
	}
	default: /* L_RECORDED */ {
		if (th->recorded_wait <= 0)
			return 1;
		/* a sleeping class's waiter that stayed on its CPU (ACQ_SPUN 4) spun optimistically: it waits there */
		int sleeping = lk->sleeping && !(th->code[th->pc * WIDTH + 4] & 4);
		timed_wait(e, th, now, th->recorded_wait, sleeping, lk->preempt_off);
		return 0;
	}
	}
}

/* RWSem._handoff: RWSEM_FLAG_HANDOFF for the head writer at a release no spinner takes -- it has waited
 * handoff_after and has been woken and found the lock taken since (it sets the flag itself, rwsem_try_write_lock) */
static int rwsem_handoff(const Lock *lk, const Thread *head, i64 now)
{
	return now - head->wait_start >= lk->handoff_after && head->retrying;
}

static void lock_release(Engine *e, Lock *lk, Thread *th, i64 now, int write)
{
	switch (lk->kind) {
	case L_SPIN: {
		if (!lk->q.n) {
			lk->owner = -1;
			return;
		}
		int k = lk->q.n;
		Thread *nxt = &e->th[dq_pop(&lk->q)];
		lk->owner = nxt->idx;
		grant_spin(e, th, nxt, now, 1, 1 + lk->per_waiter * (k - 1));
		return;
	}
	case L_MUTEX_CLASSIC: {
		if (lk->q.n) { /* they all race for the lock word; one wins */
			int k = lk->q.n;
			Thread *nxt = &e->th[dq_pop(&lk->q)];
			lk->owner = nxt->idx;
			grant_spin(e, th, nxt, now, 1, 1 + lk->per_waiter * (k - 1));
		} else {
			lk->owner = -1;
		}
		if (lk->sleepers.n && lk->woken < 0) {
			i64 w = e->p.mutex_waker;
			lk->wait_lock_free = now + w;
			th->debt += w;
			mutex_wake_first(e, lk, now, w);
		}
		return;
	}
	case L_MUTEX: {
		Deque *sl = &lk->sleepers, *sp = &lk->q;
		if (sl->n && lk->woken < 0 && now - e->th[dq_front(sl)].wait_start >= lk->handoff_after) {
			Thread *nxt = &e->th[dq_pop(sl)];
			lk->owner = nxt->idx;
			grant_sleeper(e, nxt, now);
			mutex_spinners_sleep(e, lk, now);
		} else if (sp->n) {
			Thread *nxt = &e->th[dq_pop(sp)];
			lk->owner = nxt->idx;
			grant_spin(e, th, nxt, now, 0, 0);
		} else {
			lk->owner = -1;
			mutex_wake_first(e, lk, now, 0);
		}
		return;
	}
	case L_RWSEM:
	case L_RWSEM_CLASSIC: {
		Deque *sl = &lk->sleepers, *sp = &lk->q;
		if (write) {
			lk->owner = -1;
		} else {
			lk->readers--;
			if (lk->readers)
				return;
		}
		if (lk->woken >= 0) {
			if (sp->n) {
				Thread *nxt = &e->th[dq_pop(sp)];
				lk->owner = nxt->idx;
				lk->nonspinnable = 0;
				grant_spin(e, th, nxt, now, 0, 0);
			}
			return;
		}
		if (sp->n && !(sl->n && now - e->th[dq_front(sl) >> 1].wait_start >= lk->handoff_after)) {
			Thread *nxt = &e->th[dq_pop(sp)];
			lk->owner = nxt->idx;
			lk->nonspinnable = 0;
			grant_spin(e, th, nxt, now, 0, 0);
		} else if (sl->n) {
			if (dq_front(sl) & 1) {
				Thread *nxt = &e->th[dq_pop(sl) >> 1];
				if (lk->kind == L_RWSEM_CLASSIC || rwsem_handoff(lk, nxt, now)) {
					lk->owner = nxt->idx;
					lk->nonspinnable = 0;
					grant_sleeper(e, nxt, now);
				} else {
					lk->woken = nxt->idx;
					wake_retry(e, nxt, now, 0);
					return;
				}
			} else {
				rwsem_wake_readers(e, lk, now);
			}
			rwsem_spinners_sleep(e, lk, now);
		}
		return;
	}
	default:
		return;
	}
}

static void lock_owner_off_cpu(Engine *e, int lid, Thread *th, i64 now)
{
	Lock *lk = &e->locks[lid];
	if (lk->owner != th->idx || !lk->q.n)
		return;
	if (lk->kind == L_MUTEX || lk->kind == L_MUTEX_CLASSIC)
		mutex_spinners_sleep(e, lk, now);
	else if (lk->kind == L_RWSEM || lk->kind == L_RWSEM_CLASSIC)
		rwsem_spinners_sleep(e, lk, now);
}

static void lock_abort_spin(Engine *e, Lock *lk, Thread *th, i64 now)
{
	if ((lk->kind != L_MUTEX && lk->kind != L_MUTEX_CLASSIC && lk->kind != L_RWSEM) ||
	    dq_remove(&lk->q, th->idx)) {
		inconsistent(e, th, now, "a waiter that cannot abort its spin was asked to");
		return;
	}
	sleepers_queue(e, &lk->sleepers, th, lk->kind == L_RWSEM ? th->idx * 2 + 1 : th->idx);
	spin_to_sleep(e, th, now, lk->kind == L_RWSEM && th->retrying);
}

/* Lock.downgrade: downgrade_write on an rwsem (others cannot share: the hold stays exclusive) */
static void lock_downgrade(Engine *e, Lock *lk, i64 now)
{
	if (lk->kind != L_RWSEM && lk->kind != L_RWSEM_CLASSIC)
		return;
	lk->owner = -1;
	lk->readers++;
	if (lk->sleepers.n && !(dq_front(&lk->sleepers) & 1))
		rwsem_wake_readers(e, lk, now);
	i64 readers = lk->readers < 30 ? lk->readers : 30;
	for (int i = 0; i < lk->q.n; i++) {
		Thread *s = &e->th[lk->q.v[(lk->q.head + i) % lk->q.cap]];
		push(e, now + (20 + readers) * 500, E_RSPIN, s->idx, s->spins);
	}
}

/* RWSem.spin_limit_reached: a writer spun on readers for rwsem_rspin_threshold */
static void lock_spin_limit_reached(Engine *e, Lock *lk, Thread *th, i64 now)
{
	if (lk->kind != L_RWSEM) {
		inconsistent(e, th, now, "only rwsem spinners have a time limit");
		return;
	}
	if (lk->owner < 0 && lk->readers) {
		lk->nonspinnable = 1;
		rwsem_spinners_sleep(e, lk, now);
	}
}

/* Engine.stretch: an interrupt handler runs inside th's running segment, which ends ns later */
static void stretch(Engine *e, Thread *th, i64 ns)
{
	th->seg_end += ns;
	th->seg_debt += ns;
	e->s.overhead_ns += ns;
	th->gen++;
	push(e, th->seg_end, E_SEG, th->idx, th->gen);
}

/* ------------------------------------------------------------------ TLB flushes */

static i64 flush(Engine *e, Thread *th, i64 now, i64 pages, int fullmm, int freed_tables)
{
	/* Engine.flush: IPIs to the CPUs running a thread of the mm and not lazy (should_flush_tlb), to the
	   lazy ones too when page tables were freed; a full-mm flush is exit_mmap's lazy leave */
	(void)now;
	i64 cost;
	if (fullmm) {
		if (th->left_mm) {
			cost = 0;
		} else {
			th->left_mm = 1;
			e->s.tlb_flushes++;
			cost = e->p.lazy_leave;
		}
	} else {
		e->s.tlb_flushes++;
		cost = pages > e->p.flush_ceiling ? e->p.full_flush : pages * e->p.invlpg;
	}
	i64 steal = e->p.ipi_handler + cost;
	int any = 0;
	for (int c = 0; c < e->p.cpus; c++) {
		if (c == th->cpu || e->probe_running[c])
			continue; /* a probe's CPU has the probe task's mm loaded */
		if (e->cur[c] < 0) { /* idle: lazy on the mm it last ran */
			if (freed_tables && e->loaded[c] >= 0 && e->th[e->loaded[c]].mm == th->mm) {
				any = 1;
				e->s.ipis++;
			}
			continue;
		}
		Thread *r = &e->th[e->cur[c]];
		if (r->mm != th->mm)
			continue;
		if (!freed_tables && !r->seg_over && r->state == RUN) {
			const i64 *ins = r->code + r->pc * WIDTH;
			if (ins[0] == UNTIL && ins[2])
				continue; /* waiting for its recorded start: not known to be running the mm */
		}
		any = 1;
		e->s.ipis++;
		if (r->state == RUN)
			stretch(e, r, steal);
	}
	if (any)
		cost += e->p.shootdown;
	return cost;
}

/* ------------------------------------------------------------------ the probe */

static void start_probe(Engine *e, int c, i64 now)
{
	i64 ready = e->probe_pending[c];
	i64 start = now > ready ? now : ready;
	i64 sw = e->p.context_switch;
	i64 wake = e->probe_wake[c];
	i64 *r = log_row(e, LOG_PROBE);
	if (r) {
		r[0] = wake; r[1] = start + sw - wake; r[2] = c; r[3] = e->probe_tid[c]; r[4] = e->probe_cause[c];
	}
	e->probe_pending[c] = -1;
	e->probe_running[c] = 1;
	i64 end = start + sw + e->p.probe_run;
	e->s.probe_cpu_ns += end - now;
	e->s.switches++;
	push(e, end, E_PEND, c, 0);
}

static void switch_to_probe(Engine *e, Thread *th, int c, i64 now)
{
	th->state = PREEMPTED;
	e->preempted[c] = th->idx;
	for (int i = 0; i < th->nheld; i++)
		lock_owner_off_cpu(e, th->held[i].lid, th, now);
	th->oncpu = 0;
	log_sched(e, now, c, th->tid, PROBE_TID, e->p.r_preempt, 0);
	start_probe(e, c, now);
}

static void probe_wake_ev(Engine *e, int c, i64 t)
{
	if (e->s.done == e->p.nthreads)
		return;
	if (e->s.instr == e->instr_at_probe) {
		int any_running = 0, only_probes = 1;
		for (int i = 0; i < e->p.cpus; i++)
			any_running |= e->probe_running[i];
		for (i64 i = 0; i < e->nheap && only_probes; i++)
			only_probes = e->heap[i].ev >= E_PWAKE;
		if (!any_running && only_probes)
			return; /* only probe timers are left: the threads are deadlocked */
	}
	e->instr_at_probe = e->s.instr;
	push(e, t + e->p.probe_period, E_PWAKE, c, 0);
	if (e->probe_running[c] || e->probe_pending[c] >= 0) {
		e->s.probe_overruns++;
		return;
	}
	i64 irq = e->p.probe_irq + (e->p.wake_jitter ? exp_jitter(e) : 0);
	e->probe_wake[c] = t;
	if (e->cur[c] < 0) {
		if (e->preempted[c] >= 0) {
			inconsistent(e, &e->th[e->preempted[c]], t, "preempted thread without a running probe");
			return;
		}
		for (int i = 0; i < e->nidle; i++) { /* list.remove(c) */
			if (e->idle[i] == c) {
				memmove(e->idle + i, e->idle + i + 1, sizeof(int) * (e->nidle - i - 1));
				e->nidle--;
				break;
			}
		}
		e->probe_pending[c] = t + irq;
		e->probe_cause[c] = (int)e->p.q_idle;
		e->probe_tid[c] = IDLE_TID;
		log_sched(e, t, c, IDLE_TID, PROBE_TID, e->p.r_dispatch, 0);
		start_probe(e, c, t);
		return;
	}
	Thread *th = &e->th[e->cur[c]];
	e->probe_tid[c] = th->tid;
	if (th->state == RUN && !th->seg_over && th->segpre && th->pcount == 0) {
		i64 done = t - th->seg_start, done_work;
		if (done < th->seg_debt) {
			th->debt += th->seg_debt - done;
			e->s.overhead_ns -= th->seg_debt - done;
			done_work = 0;
		} else {
			done_work = done - th->seg_debt;
		}
		e->s.work_ns += done_work;
		th->rem += th->seg_work - done_work;
		th->gen++;
		e->probe_pending[c] = t + irq;
		e->probe_cause[c] = (int)e->p.q_preemptible;
		switch_to_probe(e, th, c, t);
		return;
	}
	e->probe_pending[c] = t + irq;
	/* Lock.abortable: a spinning mutex/rwsem waiter (not a spinlock's, not an as-recorded wait) */
	if (th->state == SPIN && th->waiting_lock >= 0 && e->locks[th->waiting_lock].kind != L_SPIN &&
	    e->locks[th->waiting_lock].kind != L_RECORDED) {
		e->probe_cause[c] = (int)e->p.q_preemptible;
		lock_abort_spin(e, &e->locks[th->waiting_lock], th, t);
		return;
	}
	if (th->pcount > 0)
		e->probe_cause[c] = (int)e->p.probe_cause_of[th->poff_cause];
	else if (th->state == RUN && th->seg_over)
		e->probe_cause[c] = (int)e->p.q_switch;
	else
		e->probe_cause[c] = (int)e->p.q_kernel;
	if (th->state == RUN)
		stretch(e, th, irq);
}

static void probe_end(Engine *e, int c, i64 t)
{
	e->probe_running[c] = 0;
	if (e->preempted[c] < 0) {
		cpu_next(e, c, t, PROBE_TID, e->p.r_probe_end);
		return;
	}
	Thread *th = &e->th[e->preempted[c]];
	e->preempted[c] = -1;
	log_sched(e, t, c, PROBE_TID, th->tid, e->p.r_probe_end, 0);
	th->state = RUN;
	th->oncpu = 1;
	e->s.switches++;
	start_overhead(e, th, t, e->p.context_switch);
}

static void preempt(Engine *e, Thread *th, i64 now)
{
	int c = th->cpu;
	if (e->probe_pending[c] >= 0) {
		switch_to_probe(e, th, c, now);
	} else {
		th->state = READY;
		th->runnable_at = now;
		rq_append(e, th, now);
		leave_cpu(e, th, now, e->p.r_preempt);
	}
}

/* ------------------------------------------------------------------ the loop (Engine._run) */

static int held_push(Engine *e, Thread *th, int lid, i64 t, i64 wait, int derived)
{
	if (reserve(e, (void **)&th->held, th->nheld, &th->capheld, sizeof(Held), 4))
		return -1;
	Held *h = &th->held[th->nheld];
	h->lid = lid;
	h->t = t;
	h->wait = wait;
	h->depth = th->nheld;
	h->derived = derived;
	th->nheld++;
	return 0;
}

static void waiters_change(Engine *e, int k, i64 now, int delta)
{
	i64 nw = e->nwait[k];
	if (nw)
		e->wait_area[k] += nw * (now - e->wait_last[k]);
	e->wait_last[k] = now;
	e->nwait[k] = nw + delta;
	e->contended[k] = 1;
}

/* Run until the heap is empty (0), or until ``report_every`` more events have been popped (1)
 * so that the caller can report progress; < 0 on an error. */
int mmr_engine_run(Engine *e, i64 report_every)
{
	const struct mmr_params *p = &e->p;
	const int full = (int)p->full, percpu = (int)p->percpu;
	const int free_switch = p->context_switch == 0;
	const i64 slice_ns = p->timeslice;

	if (report_every > 0 && e->next_report == 0)
		e->next_report = report_every;
	while (e->nheap) {
		if (e->err)
			return e->err;
		if (report_every > 0 && e->s.events >= e->next_report) {
			e->next_report += report_every;
			return 1;
		}
		Event ev = pop(e);
		i64 now = ev.t;
		Thread *th;
		int completed;
		e->s.events++;
		if (ev.ev == E_SEG) {
			th = &e->th[ev.x];
			if (th->gen != ev.g) {
				e->s.events--;
				continue;
			}
			completed = 1;
		} else if (ev.ev == E_WAKE) {
			th = &e->th[ev.x];
			th->runnable_at = now;
			if (!e->nidle) {
				th->state = READY;
				rq_append(e, th, now);
				continue;
			}
			if (!free_switch) {
				th->state = READY;
				dispatch(e, e->idle[--e->nidle], th, now, IDLE_TID, p->r_dispatch);
				continue;
			}
			/* nothing to wait for: run it now (engine.py inlines this; runnable_at is now) */
			bind(e, e->idle[--e->nidle], th, now, IDLE_TID, p->r_dispatch);
			th->seg_over = 0;
			th->seg_work = 0;
			completed = 0;
		} else if (ev.ev == E_GRANT) {
			th = &e->th[ev.x];
			i64 d = now - th->spin_start;
			th->spun += d;
			e->s.spin_ns += d;
			th->granted = 1;
			th->state = RUN;
			completed = 0;
		} else if (ev.ev == E_RESUME) { /* woken to retry before it slept: back to its acquisition */
			th = &e->th[ev.x];
			i64 d = now - th->spin_start;
			th->spun += d;
			e->s.spin_ns += d;
			th->state = RUN;
			completed = 0;
		} else if (ev.ev == E_PSLEEP) {
			th = &e->th[ev.x];
			if (th->presleep && th->spins == ev.g) { /* nothing came in time: it sleeps */
				th->presleep = 0;
				th->slept = 1;
				leave_cpu(e, th, now, p->r_sleep_lock);
			}
			continue;
		} else if (ev.ev == E_PWAKE) {
			probe_wake_ev(e, ev.x, now);
			continue;
		} else if (ev.ev == E_RSPIN) {
			th = &e->th[ev.x];
			if (th->state == SPIN && th->spins == ev.g && th->waiting_lock >= 0)
				lock_spin_limit_reached(e, &e->locks[th->waiting_lock], th, now);
			continue;
		} else {
			probe_end(e, ev.x, now);
			continue;
		}
		/* run th from now; completed: its current segment has just ended */
		const i64 *code = th->code;
		const uint8_t *points = th->points;
		i64 n = 0;
		for (;;) {
			i64 d = 0;
			int pre = 0;
			if (completed) {
				completed = 0;
				e->s.work_ns += th->seg_work;
				if (th->seg_over) {
					th->seg_over = 0;
				} else if (th->rem == 0) {
					const i64 *ins = code + th->pc * WIDTH;
					i64 op = ins[0];
					if (op == REL || op == DOWNGRADE) /* the tracer's time after the stamp is over (issue #16) */
						continue;
					if (op >= GZAP) {
						if (op == GZAP) {
							th->g_pending += ins[1];
							th->g_free = p->floats[ins[3]];
							if (!percpu) {
								poff_dec(e, th, now);
								i64 cap = th->g_cap, maxp = p->max_gather_pages;
								while (th->g_pending > cap && cap < maxp) {
									if (p->batch_alloc_fail_p != 0.0 && rnd(e) < p->batch_alloc_fail_p)
										break;
									cap = cap + p->batch_pages < maxp ? cap + p->batch_pages : maxp;
								}
								th->g_cap = cap;
							}
						} else if (op == GFLUSH) {
							th->g_pending = 0;
						} else if (op == GPOINT) {
							th->g_pending = 0;
							poff_dec(e, th, now);
							th->g_broken = 1;
							continue; /* re-run GPOINT after the preemption point */
						} else if (op == GE) {
							th->g_pending = 0;
							if (percpu)
								poff_dec(e, th, now);
						}
					} else if (op == ACQ) { /* the tracer's time before the attempt is over: attempt */
						continue;
					}
					th->pc++;
					th->fresh = 1;
				}
			}
			i64 pc = th->pc;
			int c = th->cpu;
			if (points[pc] && th->pcount == 0 &&
			    (e->probe_pending[c] >= 0 || (e->rq.n && now - th->slice_start >= slice_ns))) {
				e->s.instr += n;
				e->s.events += n;
				preempt(e, th, now);
				break;
			}
			const i64 *ins = code + pc * WIDTH;
			i64 op = ins[0];
			n++;
			if (op <= KERN) {
				if (th->fresh) {
					th->rem = ins[1];
					th->fresh = 0;
					if (th->credit) { /* issue #16: tracer time replayed at a release, recorded here */
						i64 k = th->credit < th->rem ? th->credit : th->rem;
						th->rem -= k;
						th->credit -= k;
					}
				}
				d = th->rem;
				if (op == USER) {
					pre = 1;
					if (e->rq.n) {
						i64 cut = th->slice_start + slice_ns - now;
						if (0 < cut && cut < d)
							d = cut;
					}
				} else {
					pre = full && th->pcount == 0;
				}
			} else if (op == ACQ && th->fresh && p->lock_tracer[ins[1]] && ins[3] && !th->granted) {
				/* issue #16: the tracer's time at this acquisition first (not preemptible: a BPF program) */
				th->fresh = 0;
				th->traced_at = now + th->debt;
				d = th->rem = ins[3] < p->lock_tracer[ins[1]] ? ins[3] : p->lock_tracer[ins[1]];
				pre = 0;
			} else if (op == ACQ) {
				int lid = (int)ins[1];
				if (!th->granted) {
					Lock *lk = &e->locks[lid];
					th->recorded_wait = ins[3];
					if (!lock_acquire(e, lk, th, now, (int)ins[2])) {
						th->waiting_lock = lid;
						e->s.instr += n;
						e->s.events += n;
						if (th->retrying)
							break;
						th->wait_start = now;
						th->spun = 0;
						if (th->state != SLEEP)
							th->slept = 0;
						waiters_change(e, (int)p->lock_cls[lid], now, +1);
						break;
					}
					if (!th->retrying) { /* uncontended */
						if (lk->preempt_off) {
							if (th->pcount == 0) {
								th->poff_start = now;
								th->poff_cause = (int)p->p_spinlock;
								th->poff_class = (int)p->lock_cls[lid];
							}
							th->pcount++;
						}
						if (th->traced_at >= 0) {
							held_push(e, th, lid, now, now - th->traced_at, (int)ins[4]);
							th->traced_at = -1;
							th->fresh = 1;
						} else {
							held_push(e, th, lid, now, 0, (int)ins[4]);
						}
						th->debt += p->lock_cost[lid];
						if (p->lock_lines[lid])
							th->debt += migrate(e, lid, c);
						th->pc = pc + 1;
						continue;
					}
				}
				/* the end of a contended wait: its timers (a spin limit) must not act on a later one */
				th->granted = 0;
				th->retrying = 0;
				th->waiting_lock = -1;
				th->spins++;
				i64 wait = now - th->wait_start;
				waiters_change(e, (int)p->lock_cls[lid], now, -1);
				i64 *r = log_row(e, LOG_WAITS);
				if (r) {
					r[0] = th->wait_start; r[1] = wait; r[2] = c; r[3] = th->tid; r[4] = lid;
					r[5] = ins[2]; r[6] = th->spun; r[7] = th->slept;
				}
				if (th->traced_at >= 0) { /* the hold's wait counts the tracer's time before the attempt */
					wait = now - th->traced_at;
					th->traced_at = -1;
					th->fresh = 1;
				}
				held_push(e, th, lid, now, wait, (int)ins[4]);
				th->debt += p->lock_cost[lid];
				if (p->lock_lines[lid])
					th->debt += migrate(e, lid, c);
				th->pc = pc + 1;
				continue;
			} else if ((op == REL || op == DOWNGRADE) && th->tail_at < 0 && !th->granted &&
				   (op == REL ? p->lock_tail[ins[1]] : p->lock_dtail[ins[1]])) {
				/* issue #16: the tracer's time after the recorded release (downgrade) first, lock held */
				th->tail_at = now + th->debt;
				d = th->rem = op == REL ? p->lock_tail[ins[1]] : p->lock_dtail[ins[1]];
				th->fresh = 0;
				pre = 0;
			} else if (op == REL) {
				int lid = (int)ins[1];
				Lock *lk = &e->locks[lid];
				if (th->granted) { /* back from spinning on the lock's internal wait_lock */
					th->granted = 0;
					poff_dec(e, th, now);
				} else {
					i64 until = lock_release_wait(lk);
					if (until > now) { /* mutex-classic: spin (preemption off) until wait_lock is free */
						th->state = SPIN;
						th->spin_start = now;
						poff_inc(th, now, (int)p->p_spin_wait, (int)p->lock_cls[lid]);
						push(e, until, E_GRANT, th->idx, th->gen);
						e->s.instr += n;
						e->s.events += n;
						break;
					}
				}
				Held h = th->held[--th->nheld];
				i64 at = now;
				if (th->tail_at >= 0) { /* the hold as the tracer recorded it; the tracer's time owed back */
					at = th->tail_at;
					th->credit += p->lock_tail[lid];
					th->tail_at = -1;
					th->fresh = 1;
				}
				i64 *r = log_row(e, LOG_HOLDS);
				if (r) {
					r[0] = h.t; r[1] = at - h.t; r[2] = h.wait; r[3] = c; r[4] = th->tid; r[5] = lid;
					r[6] = ins[2]; r[7] = h.depth; r[8] = h.derived;
				}
				lock_release(e, lk, th, now, (int)ins[2]);
				if (lk->preempt_off) {
					th->pcount--;
					if (th->pcount == 0)
						log_poff(e, th->poff_start, now - th->poff_start, c, th->tid, th->poff_cause,
							 th->poff_class, 0);
				}
				th->pc = pc + 1;
				continue;
			} else if (op == UNTIL || op == BLOCK || op == END) {
				if (th->debt) {
					th->seg_over = 1;
					d = 0;
					pre = 0;
					n--;
				} else if (op == END) {
					th->state = DONE;
					e->s.done++;
					if (now > e->s.end)
						e->s.end = now;
					e->s.instr += n;
					e->s.events += n;
					leave_cpu(e, th, now, p->r_exit);
					break;
				} else if (op == UNTIL && ins[2]) { /* open mode: wait for the recorded start on the CPU */
					d = ins[1] - now;
					if (d <= 0) {
						th->pc = pc + 1;
						th->fresh = 1;
						continue;
					}
					th->rem = d;
					pre = 1;
					if (e->rq.n) {
						i64 cut = th->slice_start + slice_ns - now;
						if (0 < cut && cut < d)
							d = cut;
					}
				} else { /* BLOCK, or UNTIL asleep (a workload that is not contiguous: its gaps are idle) */
					i64 until = ins[1];
					if (op == BLOCK) /* as recorded: its wake-up inside it, the dispatch's switch ends it */
						until = now + (p->block_exact ? (ins[1] > p->context_switch ? ins[1] - p->context_switch : 0)
								    : ins[1]);
					th->pc = pc + 1;
					th->fresh = 1;
					if (op == UNTIL && until <= now)
						continue;
					th->state = BLOCKED;
					if (th->nheld || th->pcount > 0 || e->probe_pending[c] >= 0 || e->rq.n) {
						leave_cpu(e, th, now, p->r_block);
					} else {
						e->cur[c] = -1;
						th->oncpu = 0;
						th->cpu = -1;
						e->idle[e->nidle++] = c;
						log_sched(e, now, c, th->tid, IDLE_TID, p->r_block, 0);
					}
					push(e, until + (op == BLOCK && !p->block_exact ? wake_cost(e) : 0), E_WAKE, th->idx, th->gen);
					e->s.instr += n;
					e->s.events += n;
					break;
				}
			} else if (op == DOWNGRADE) { /* log the write hold, go on holding for read */
				int lid = (int)ins[1];
				Held *h = &th->held[th->nheld - 1];
				i64 at = now;
				if (th->tail_at >= 0) { /* the stamp the tracer gave both holds; the tracer's time owed back */
					at = th->tail_at;
					th->credit += p->lock_dtail[lid];
					th->tail_at = -1;
					th->fresh = 1;
				}
				i64 *r = log_row(e, LOG_HOLDS);
				if (r) {
					r[0] = h->t; r[1] = at - h->t; r[2] = h->wait; r[3] = c; r[4] = th->tid; r[5] = lid;
					r[6] = 1; r[7] = h->depth; r[8] = h->derived;
				}
				h->t = at;
				h->wait = 0;
				lock_downgrade(e, &e->locks[lid], now);
				th->pc = pc + 1;
				continue;
			} else if (op == SPAN_B) {
				if (reserve(e, (void **)&th->spans, th->nspans, &th->capspans, sizeof(SpanRec), 4))
					return e->err;
				th->spans[th->nspans].start = now;
				th->spans[th->nspans].cpu = c;
				th->nspans++;
				th->pc = pc + 1;
				continue;
			} else if (op == SPAN_E) {
				SpanRec s = th->spans[--th->nspans];
				i64 *r = log_row(e, LOG_OPS);
				if (r) {
					r[0] = s.start; r[1] = now - s.start; r[2] = s.cpu; r[3] = th->tid; r[4] = ins[1];
				}
				th->pc = pc + 1;
				continue;
			} else if (op == GB) {
				th->g_pending = 0;
				th->g_cap = percpu ? p->percpu_batch_pages : p->local_batch_pages;
				th->g_full = (int)ins[1];
				th->g_pt = ins[2];
				th->g_broken = 0;
				if (percpu)
					poff_inc(th, now, (int)p->p_gather, -1);
				th->pc = pc + 1;
				continue;
			} else if (op == GZAP) {
				if (th->fresh) {
					th->rem = ins[2];
					th->fresh = 0;
					if (!percpu)
						poff_inc(th, now, (int)p->p_ptl, -1);
				}
				d = th->rem;
				pre = 0;
			} else if (op == GFLUSH || op == GE) {
				i64 pend = th->g_pending;
				if (op == GFLUSH && (percpu ? pend < th->g_cap : pend <= th->g_cap)) {
					th->pc = pc + 1;
					continue;
				}
				if (th->fresh) {
					th->fresh = 0;
					if (pend || th->g_full)
						th->debt += flush(e, th, now, pend, th->g_full, op == GE && th->g_pt > 0);
					th->rem = (i64)rint(th->g_free * (double)pend) + (op == GE ? th->g_pt : 0);
				}
				d = th->rem;
				pre = full && !percpu && th->pcount == 0;
			} else if (op == GPOINT) {
				if (!percpu) {
					th->pc = pc + 1;
					continue;
				}
				if (th->g_broken) {
					th->g_broken = 0;
					poff_inc(th, now, (int)p->p_gather, -1);
					th->pc = pc + 1;
					th->fresh = 1;
					continue;
				}
				if (!(e->probe_pending[c] >= 0 || (e->rq.n && now - th->slice_start >= slice_ns))) {
					th->pc = pc + 1;
					continue;
				}
				i64 pend = th->g_pending;
				if (th->fresh) {
					th->fresh = 0;
					if (pend)
						th->debt += flush(e, th, now, pend, 0, 0);
					th->rem = (i64)rint(th->g_free * (double)pend);
				}
				d = th->rem;
				pre = 0;
			} else {
				inconsistent(e, th, now, "bad opcode");
				return e->err;
			}
			/* start a segment of d ns work (+ pending overhead) */
			i64 debt = th->debt;
			if (debt) {
				th->debt = 0;
				e->s.overhead_ns += debt;
			}
			th->rem -= d;
			th->seg_work = d;
			th->seg_debt = debt;
			th->segpre = pre;
			th->seg_start = now;
			i64 end = now + d + debt;
			th->seg_end = end;
			if (!e->nheap || end < e->heap[0].t) {
				now = end;
				n++;
				completed = 1;
				continue;
			}
			th->gen++;
			push(e, end, E_SEG, th->idx, th->gen);
			e->s.instr += n;
			e->s.events += n;
			break;
		}
	}
	return e->err;
}

/* ------------------------------------------------------------------ life cycle */

void mmr_engine_free(Engine *e)
{
	if (!e)
		return;
	if (e->th) {
		for (i64 i = 0; i < e->p.nthreads; i++) {
			free(e->th[i].held);
			free(e->th[i].spans);
		}
	}
	if (e->locks) {
		for (i64 i = 0; i < e->p.nlocks; i++) {
			free(e->locks[i].q.v);
			free(e->locks[i].sleepers.v);
		}
	}
	for (int k = 0; k < NLOGS; k++)
		for (int j = 0; j < LOG_MAXW; j++)
			free(e->logs[k].col[j]);
	free(e->heap);
	free(e->th);
	free(e->locks);
	free(e->cur);
	free(e->idle);
	free(e->rq.v);
	free(e->preempted);
	free(e->loaded);
	free(e->probe_running);
	free(e->probe_pending);
	free(e->probe_wake);
	free(e->probe_cause);
	free(e->probe_tid);
	free(e->nwait);
	free(e->wait_area);
	free(e->wait_last);
	free(e->contended);
	free(e);
}

/* The engine of engine.Engine.__init__: threads woken at their start, then the probe timers. */
Engine *mmr_engine_new(const struct mmr_params *p)
{
	Engine *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->p = *p;
	int cpus = (int)p->cpus;
	for (int i = 0; i < 624; i++)
		e->mt[i] = p->mt[i];
	e->mti = (int)p->mt[624];
	e->jitter_lambda = p->wake_jitter ? 1.0 / (double)p->wake_jitter : 0.0;
	e->th = calloc(p->nthreads ? p->nthreads : 1, sizeof(Thread));
	e->locks = calloc(p->nlocks ? p->nlocks : 1, sizeof(Lock));
	e->cur = malloc(sizeof(int) * cpus);
	e->idle = malloc(sizeof(int) * cpus);
	e->preempted = malloc(sizeof(int) * cpus);
	e->loaded = malloc(sizeof(int) * cpus);
	e->probe_running = calloc(cpus, sizeof(int));
	e->probe_pending = malloc(sizeof(i64) * cpus);
	e->probe_wake = calloc(cpus, sizeof(i64));
	e->probe_cause = calloc(cpus, sizeof(int));
	e->probe_tid = malloc(sizeof(int) * cpus);
	e->nwait = calloc(p->nclasses, sizeof(i64));
	e->wait_area = calloc(p->nclasses, sizeof(i64));
	e->wait_last = calloc(p->nclasses, sizeof(i64));
	e->contended = calloc(p->nclasses, sizeof(int));
	if (!e->th || !e->locks || !e->cur || !e->idle || !e->preempted || !e->loaded || !e->probe_running || !e->probe_pending ||
	    !e->probe_wake || !e->probe_cause || !e->probe_tid || !e->nwait || !e->wait_area || !e->wait_last ||
	    !e->contended) {
		mmr_engine_free(e);
		return NULL;
	}
	for (int k = 0; k < NLOGS; k++) {
		e->logs[k].w = log_width[k];
		for (int j = 0; j < log_width[k]; j++)
			e->logs[k].type[j] = C_I64;
	}
	for (i64 i = 0; i < p->nlocks; i++) {
		Lock *lk = &e->locks[i];
		lk->kind = (int)p->lock_kind[i];
		lk->sleeping = (int)p->lock_sleeping[i];
		lk->preempt_off = lk->kind == L_SPIN || (lk->kind == L_RECORDED && !lk->sleeping);
		lk->per_waiter = p->lock_per_waiter[i];
		lk->handoff_after = p->lock_handoff[i];
		lk->owner = -1;
		lk->woken = -1;
		lk->last_cpu = -1;
	}
	for (int c = 0; c < cpus; c++) {
		e->cur[c] = -1;
		e->idle[c] = cpus - 1 - c; /* pop() gives CPU 0 first */
		e->preempted[c] = -1;
		e->loaded[c] = -1;
		e->probe_pending[c] = -1;
		e->probe_tid[c] = IDLE_TID;
	}
	e->nidle = cpus;
	e->instr_at_probe = -1;
	i64 t0 = 0;
	for (i64 i = 0; i < p->nthreads; i++) {
		Thread *th = &e->th[i];
		th->idx = (int)i;
		th->tid = (int)p->tid[i];
		th->mm = p->mm[i];
		th->code = p->code + p->start[i] * WIDTH;
		th->points = p->points + p->start[i];
		th->state = BLOCKED;
		th->cpu = -1;
		th->fresh = 1;
		th->poff_class = -1;
		th->waiting_lock = -1;
		th->traced_at = -1;
		th->tail_at = -1;
		if (i == 0 || p->start_ns[i] < t0)
			t0 = p->start_ns[i];
	}
	e->s.t0 = t0;
	e->rq_last = t0;
	for (i64 i = 0; i < p->nthreads; i++)
		push(e, p->start_ns[i], E_WAKE, (int)i, 0);
	if (p->probe)
		for (int c = 0; c < cpus; c++)
			push(e, p->probe_at[c], E_PWAKE, c, 0);
	if (e->err) {
		mmr_engine_free(e);
		return NULL;
	}
	return e;
}

void mmr_engine_stats(const Engine *e, struct mmr_stats *s, i64 *wait_area, i64 *contended)
{
	*s = e->s;
	for (i64 k = 0; k < e->p.nclasses; k++) {
		wait_area[k] = e->wait_area[k];
		contended[k] = e->contended[k];
	}
}

/* How each column of log k is kept (C_SKIP ... C_BIT0, log_width[k] of them): before the run; -1 if
 * a type is unknown or rows were logged already. */
int mmr_engine_log_types(Engine *e, int k, const i64 *types)
{
	if (k < 0 || k >= NLOGS || e->logs[k].n || e->logs[k].pending)
		return -1;
	Log *l = &e->logs[k];
	for (int j = 0; j < l->w; j++)
		if (types[j] < 0 || types[j] >= NCTYPES)
			return -1;
	for (int j = 0; j < l->w; j++)
		l->type[j] = (int)types[j];
	return 0;
}

/* The number of rows of log k (-12 if the last one could not be stored, -1 if there is no log k). */
i64 mmr_engine_log_rows(Engine *e, int k)
{
	if (k < 0 || k >= NLOGS)
		return -1;
	if (log_flush(e, k))
		return ERR_NOMEM;
	return e->logs[k].n;
}

/* Column j of log k, handed over: its mmr_engine_log_rows values (shrunk to them), which the caller
 * frees with mmr_free, whatever becomes of the engine; NULL if it is kept no more (skipped, empty,
 * handed over before). */
void *mmr_engine_log_column(Engine *e, int k, int j)
{
	if (k < 0 || k >= NLOGS || log_flush(e, k))
		return NULL;
	Log *l = &e->logs[k];
	if (j < 0 || j >= l->w || !l->col[j])
		return NULL;
	void *v = l->col[j];
	l->col[j] = NULL;
	if (!l->n) {
		free(v);
		return NULL;
	}
	void *p = realloc(v, ctype_size[l->type[j]] * l->n); /* in place (mremap for the large ones) */
	return p ? p : v;
}

void mmr_free(void *p)
{
	free(p);
}

void mmr_engine_thread_states(const Engine *e, i64 *out)
{
	for (i64 i = 0; i < e->p.nthreads; i++)
		out[i] = e->th[i].state;
}

const char *mmr_engine_error(const Engine *e)
{
	return e->errmsg ? e->errmsg : "out of memory";
}
