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

BPF_PERCPU_ARRAY(mmr_pf_bursts, struct mmr_pf_state, 1);
#define MMR_HAVE_PAGE_FREE 1

static __always_inline void mmr_pf_emit(struct mmr_pf_state *s, u8 flags)
{
	struct mmr_batch *b = mmr_batch_get();
	if (!b)
		return;
	struct mmr_page_free *e = mmr_slot(b);
	mmr_head(e, MMR_EV_PAGE_FREE, flags, s->first_ts, s->seq, s->pid, s->tid, bpf_get_smp_processor_id());
	e->batched = s->batched;
	e->dur = s->last_ts - s->first_ts;
	e->pages = s->pages;
	s->active = 0;
	mmr_commit(b, MMR_EV_PAGE_FREE);
}

/* Close this CPU's burst if open (older than min_age ns since its last free). */
static __always_inline void mmr_pf_close(u64 now, u64 min_age)
{
	int zero = 0;
	struct mmr_pf_state *s = mmr_pf_bursts.lookup(&zero);
	if (s && s->active && now - s->last_ts >= min_age)
		mmr_pf_emit(s, 0);
}

static __always_inline int mmr_pf_add(u32 order)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_current(id))
		return MMR_PASS;
	int zero = 0;
	struct mmr_pf_state *s = mmr_pf_bursts.lookup(&zero);
	if (!s)
		return MMR_PASS;
	u64 now = bpf_ktime_get_ns();
	u32 tid = (u32)id;
	mmr_count(MMR_EV_PAGE_FREE, 1, 0);
	if (s->active && (s->tid != tid || now - s->last_ts > MMR_PF_GAP_NS))
		mmr_pf_emit(s, 0);
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
	return MMR_PASS;
}

TRACEPOINT_PROBE(kmem, mm_page_free)
{
	return mmr_pf_add(args->order);
}

/* The same page's mm_page_free came just before: mark the open burst. */
TRACEPOINT_PROBE(kmem, mm_page_free_batched)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_current(id))
		return MMR_PASS;
	int zero = 0;
	struct mmr_pf_state *s = mmr_pf_bursts.lookup(&zero);
	if (s && s->active && s->tid == (u32)id)
		s->batched = 1;
	else
		mmr_count(MMR_EV_PAGE_FREE, 0, 1);
	return MMR_PASS;
}
