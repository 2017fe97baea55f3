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
 * Three programs on kmem:mm_page_free, run in attach order (the kernel's
 * tracepoint keeps probes of equal priority in the order they were added;
 * tracer/recorder.py attaches them so, and mmr_pf_bk[MISSING] measures it):
 *   mmr_pf_pre   pushes the hit's page onto this CPU's stack of hits in flight;
 *   this program marks the top slot if it holds the page (its hit), or pushes a
 *                marked slot of its own when it does not (mmr_pf_pre was skipped,
 *                or the stack was reset);
 *   mmr_pf_backup pops the top slot if it holds the page, and records the hit only
 *                if it is not marked: then the kernel skipped this program for it.
 * A hit that lands in any part of this program's window (dispatch included)
 * runs the other two, so it is recorded by exactly one of the two recording
 * programs. What can go wrong ends as a counted miss, never a duplicate:
 *   - a hit in mmr_pf_pre's window is not pushed; this program runs for it and
 *     pushes a marked slot, which the backup pops (no record);
 *   - a hit in mmr_pf_backup's window leaves its slot behind (stale); if this
 *     program was skipped too, nothing records it: a miss of both, counted by
 *     the kernel (this program's recursion_misses) and not recovered;
 *   - stale slots sit under the live ones; at MMR_PF_STACK slots the stack is
 *     reset (mmr_pf_bk[RESETS]): a live hit whose slot it drops and that this
 *     program skipped is a counted miss.
 * Why never a duplicate: after this program ran for a hit, the top slot holding
 * that page is marked (its own slot, or the one it pushed); nested hits push
 * slots of other pages (a page being freed is freed once), pop only slots of
 * their own page, and a reset leaves only slots pushed after it, so the backup
 * can find that page unmarked on top only if this program never ran for it.
 * A slot is one u64, page | mark (struct page is 64-byte aligned): read and
 * written in one access, whatever interrupts in between. */
/* MMR_PF_RECOVER 0 (MMREPLAY_PAGE_FREE_RECOVERY=off, tracer/recorder.py): this program alone on the tracepoint
 * (the other two are not attached), and it keeps no stack: the kernel calls a tracepoint's only probe
 * directly, two or more through a loop of indirect calls, ~60-100 ns more per page free measured
 * (benchmarks/record_overhead.py --dispatch); the skipped hits are then counted as lost, none recovered. */
#ifndef MMR_PF_RECOVER
#define MMR_PF_RECOVER 1
#endif
#include "mmr_pf_stack.h"
BPF_PERCPU_ARRAY(mmr_pf_stack, struct mmr_pf_stack, 1);
/* The backup's recoveries (any task: the kernel's misses are counted for any task too). */
BPF_PERCPU_ARRAY(mmr_pf_recovered, u64, 1);
/* [0] recoveries of recorded tasks (recorded rows), [1] hits the main program found not pushed (the first
 * program skipped for them, or not running first), [2] stack resets */
#define MMR_PF_BK_MINE 0
#define MMR_PF_BK_MISSING 1
#define MMR_PF_BK_RESETS 2
BPF_PERCPU_ARRAY(mmr_pf_bk, u64, 3);

static __always_inline void mmr_pf_bk_count(int what)
{
	u64 *n = mmr_pf_bk.lookup(&what);
	if (n)
		(*n)++;
}

/* TP_PROTO(struct page *page, unsigned int order): attached before the main program. Every task's hits:
 * the kernel's misses are counted for every task, and so are the backup's recoveries. */
int mmr_pf_pre(struct bpf_raw_tracepoint_args *ctx)
{
	int zero = 0;
	struct mmr_pf_stack *st = mmr_pf_stack.lookup(&zero);
	if (st && mmr_pf_stack_push(st, ctx->args[0], 0) == 1)
		mmr_pf_bk_count(MMR_PF_BK_RESETS);
	return 0;
}

RAW_TRACEPOINT_PROBE(mm_page_free)
{
#if MMR_PF_RECOVER
	int zero = 0;
	struct mmr_pf_stack *st = mmr_pf_stack.lookup(&zero);
	if (st) {
		int how = mmr_pf_stack_mark(st, ctx->args[0]);
		if (how)
			mmr_pf_bk_count(MMR_PF_BK_MISSING);
		if (how == 2)
			mmr_pf_bk_count(MMR_PF_BK_RESETS);
	}
#endif
	return mmr_pf_add((u32)ctx->args[1]);
}

/* Attached after the main program. */
int mmr_pf_backup(struct bpf_raw_tracepoint_args *ctx)
{
	int zero = 0;
	struct mmr_pf_stack *st = mmr_pf_stack.lookup(&zero);
	if (!st || !mmr_pf_stack_pop(st, ctx->args[0]))
		return 0; /* the main program ran for this hit, or nothing is known of it */
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
