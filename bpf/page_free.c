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
 * itself. A second program on the same tracepoint, attached after this one
 * (mmr_pf_backup, tracer/recorder.py), records exactly those hits: it runs
 * for every hit and acts only while this program is marked running on the CPU,
 * i.e. when the kernel skipped this one for the hit. */
BPF_PERCPU_ARRAY(mmr_pf_running, u32, 1);
BPF_PERCPU_ARRAY(mmr_pf_recovered, u64, 1);

/* TP_PROTO(struct page *page, unsigned int order) */
RAW_TRACEPOINT_PROBE(mm_page_free)
{
	int zero = 0;
	u32 *running = mmr_pf_running.lookup(&zero);
	u32 was = running ? *running : 0; /* a nested run (another context) restores its outer run's mark */
	if (running)
		*running = 1;
	int ret = mmr_pf_add((u32)ctx->args[1]);
	if (running)
		*running = was;
	return ret;
}

int mmr_pf_backup(struct bpf_raw_tracepoint_args *ctx)
{
	int zero = 0;
	u32 *running = mmr_pf_running.lookup(&zero);
	if (!running || !*running)
		return 0;
	/* counted whatever mmr_ctl says, as the kernel counts the miss: user space takes both at the
	 * recording's start and stop; what is recorded is filtered (and stopped) as the main program's */
	u64 *n = mmr_pf_recovered.lookup(&zero);
	if (n)
		(*n)++;
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
