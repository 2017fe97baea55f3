/* SPDX-License-Identifier: GPL-2.0 */
/* kmem:mm_page_free + kmem:mm_page_free_batched aggregated IN THE KERNEL into
 * bursts per CPU -> page_free_batches. Never one row per page.
 *
 * mm_page_free fires for EVERY freed page (free_pages_prepare), and
 * mm_page_free_batched fires in addition for those freed by
 * free_unref_folios (the mmu_gather / folio_batch path). So pages are counted
 * from mm_page_free only, and a burst is marked batched when it holds a
 * batched free. A burst ends when the task changes, after MMR_PF_GAP_NS
 * without a free, or at a tlb:tlb_flush on the CPU (each mmu_gather flush
 * flushes the TLB, then frees its batch). */

struct mmr_pf_state {
	u64 first_ts;
	u64 last_ts;
	u64 pages;
	u64 seq;
	s32 pid;
	s32 tid;
	u32 batched;
	u32 active;
};

/* One burst per nesting level (the level's batch receives it): a softirq's
 * frees never land in the burst of the task it interrupted. */
BPF_PERCPU_ARRAY(mmr_pf_bursts, struct mmr_pf_state, MMR_NEST);
#define MMR_HAVE_PAGE_FREE 1

static __always_inline void mmr_pf_emit(struct mmr_batch *b, struct mmr_pf_state *s, u8 flags)
{
	struct mmr_page_free *e = mmr_slot(b);
	mmr_head(e, MMR_EV_PAGE_FREE, flags, s->first_ts, s->seq, s->pid, s->tid, bpf_get_smp_processor_id());
	e->batched = s->batched;
	e->dur = s->last_ts - s->first_ts;
	e->pages = s->pages;
	s->active = 0;
	mmr_emit(b, MMR_EV_PAGE_FREE);
}

/* Close the burst of nesting level lvl (into batch b) if open and quiet for min_age ns. */
static __always_inline void mmr_pf_close_level(struct mmr_batch *b, int lvl, u64 now, u64 min_age)
{
	struct mmr_pf_state *s = mmr_pf_bursts.lookup(&lvl);
	if (s && s->active && now - s->last_ts >= min_age)
		mmr_pf_emit(b, s, 0);
}

/* Close the running program's level's burst (b: that level's batch). */
#define mmr_pf_close(b, now, min_age) mmr_pf_close_level((b), mmr_level(), (now), (min_age))

static __always_inline int mmr_pf_add(u32 order)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, MMR_EV_PAGE_FREE))
		return MMR_PASS;
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
	int lvl = mmr_level();
	struct mmr_pf_state *s = mmr_pf_bursts.lookup(&lvl);
	if (!s) {
		mmr_exit();
		return MMR_PASS;
	}
	u64 now = bpf_ktime_get_ns();
	u32 tid = (u32)id;
	mmr_count(MMR_EV_PAGE_FREE, 1, 0);
	if (s->active && (s->tid != tid || now - s->last_ts > MMR_PF_GAP_NS))
		mmr_pf_emit(b, s, 0);
	if (!s->active) {
		s->first_ts = now;
		s->pages = 0;
		s->seq = mmr_next_seq();
		s->pid = id >> 32;
		s->tid = tid;
		s->batched = 0;
		s->active = 1;
	}
	s->last_ts = now;
	s->pages += 1ULL << (order & 31);
	mmr_exit();
	return MMR_PASS;
}

/* The same page's mm_page_free came just before: mark the open burst. */
static __always_inline int mmr_pf_batched(void)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, 0))
		return MMR_PASS;
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
	int lvl = mmr_level();
	struct mmr_pf_state *s = mmr_pf_bursts.lookup(&lvl);
	if (s && s->active && s->tid == (u32)id)
		s->batched = 1;
	else
		mmr_count(MMR_EV_PAGE_FREE, 0, 1);
	mmr_exit();
	return MMR_PASS;
}

#if MMR_RAW_PAGE_FREE
/* A page freed by a softirq that interrupted this program (RCU freeing page
 * tables, slabs) is a hit the kernel skips: a raw program never runs nested in
 * itself, and the kernel counts it as "running" from its dispatch's recursion
 * counter to after its last instruction (__bpf_trace_run: the counter, the run
 * context, rcu_read_lock; then the same undone), not only while its body runs.
 *
 * Two programs on kmem:mm_page_free, run in attach order (the kernel's
 * tracepoint keeps probes of equal priority in the order they were added;
 * bcc attaches this one at load, tracer/recorder.py the backup after it):
 *   this program claims a per-CPU slot keyed by the hit's raw context's address
 *                (unique among the hits in flight on a CPU, the same for both
 *                programs of a hit), writes the page there, and records the hit;
 *   mmr_pf_backup finds its key's slot holding its page (this program ran for
 *                the hit: release the slot) or not (the kernel skipped this
 *                program for it: record the hit).
 * bpf/mmr_bk_slots.h says why no hit is recorded twice and why a skip of this
 * program is recovered unless the backup was skipped too (a hit two windows
 * deep: task, softirq and hardirq all freeing pages) or a slot an earlier hit
 * left behind holds the same page (counted, never hidden); tests/
 * test_pf_backup_nesting.py drives it with hits nested at every point. It
 * replaced a three-program design (a first program pushing each hit onto a
 * stack, bpf/mmr_pf_stack.h, which bpf/tlb_flush.c still runs): one dispatch
 * fewer per page freed (benchmarks/record_overhead.py --dispatch).
 *
 * A slot is keyed by the pointer itself: the verifier lets a program that may
 * leak pointers (CAP_PERFMON, which recording needs) compare it and store it
 * in a map, and the key is only ever compared. */
/* MMR_PF_RECOVER 0 (MMREPLAY_PAGE_FREE_RECOVERY=off, tracer/recorder.py): this program alone on the tracepoint
 * (the backup is not attached), and it keeps no slot: the kernel calls a tracepoint's only probe directly, two
 * or more through a loop of indirect calls (benchmarks/record_overhead.py --dispatch); the skipped hits are then
 * counted as lost, none recovered. */
#ifndef MMR_PF_RECOVER
#define MMR_PF_RECOVER 1
#endif
#include "mmr_bk_slots.h"
BPF_PERCPU_ARRAY(mmr_pf_slots, struct mmr_bk_slots, 1);
/* The backup's records (any task: the kernel's misses are counted for any task too, and so are the main
 * program's deferrals). */
BPF_PERCPU_ARRAY(mmr_pf_recovered, u64, 1);
/* [0] the backup's records of recorded tasks (recorded rows), [1] hits the main program left to the backup
 * (no free slot), [2] slots of earlier hits the backup released (their own backup was skipped) */
#define MMR_PF_BK_MINE 0
#define MMR_PF_BK_DEFERRED 1
#define MMR_PF_BK_STALE 2
BPF_PERCPU_ARRAY(mmr_pf_bk, u64, 3);

static __always_inline void mmr_pf_bk_count(int what)
{
	u64 *n = mmr_pf_bk.lookup(&what);
	if (n)
		(*n)++;
}

/* TP_PROTO(struct page *page, unsigned int order): every task's hits claim a slot (the kernel's misses are
 * counted for every task, and so are the backup's records). */
RAW_TRACEPOINT_PROBE(mm_page_free)
{
#if MMR_PF_RECOVER
	int zero = 0;
	struct mmr_bk_slots *sl = mmr_pf_slots.lookup(&zero);
	if (!sl || mmr_bk_claim(sl, (u64)ctx, ctx->args[0])) {
		mmr_pf_bk_count(MMR_PF_BK_DEFERRED);
		return MMR_PASS; /* the backup records it */
	}
#endif
	return mmr_pf_add((u32)ctx->args[1]);
}

/* Attached after the main program. */
int mmr_pf_backup(struct bpf_raw_tracepoint_args *ctx)
{
	int zero = 0;
	struct mmr_bk_slots *sl = mmr_pf_slots.lookup(&zero);
	int how = sl ? mmr_bk_release(sl, (u64)ctx, ctx->args[0]) : 1;
	if (!how)
		return 0; /* the main program ran for this hit */
	if (how == 2)
		mmr_pf_bk_count(MMR_PF_BK_STALE);
	/* counted whatever mmr_ctl says, as the kernel counts the miss: user space takes both at the
	 * recording's start and stop; what is recorded is filtered (and stopped) as the main program's */
	u64 *n = mmr_pf_recovered.lookup(&zero);
	if (n)
		(*n)++;
	if (mmr_want_current(bpf_get_current_pid_tgid()))
		mmr_pf_bk_count(MMR_PF_BK_MINE);
	return mmr_pf_add((u32)ctx->args[1]);
}

/* TP_PROTO(struct page *page) */
RAW_TRACEPOINT_PROBE(mm_page_free_batched)
{
	return mmr_pf_batched();
}
#else
TRACEPOINT_PROBE(kmem, mm_page_free)
{
	return mmr_pf_add(args->order);
}

TRACEPOINT_PROBE(kmem, mm_page_free_batched)
{
	return mmr_pf_batched();
}
#endif
