/* SPDX-License-Identifier: GPL-2.0 */
/* kmem:mm_page_free_batched / kmem:mm_page_free aggregated IN THE KERNEL into
 * bursts per CPU -> page_free_batches. A burst ends when the task or the
 * path (batched or not) changes, after MMR_PF_GAP_NS without a free, or at a
 * tlb:tlb_flush on the CPU (each mmu_gather flush frees one batch after
 * flushing the TLB). Never one row per page. */

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

static __always_inline int mmr_pf_add(u32 batched, u32 order)
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
	if (s->active && (s->tid != tid || s->batched != batched || now - s->last_ts > MMR_PF_GAP_NS))
		mmr_pf_emit(s, 0);
	if (!s->active) {
		s->first_ts = now;
		s->pages = 0;
		s->seq = mmr_next_seq();
		s->pid = id >> 32;
		s->tid = tid;
		s->batched = batched;
		s->active = 1;
	}
	s->last_ts = now;
	s->pages += 1ULL << (order & 31);
	return MMR_PASS;
}

TRACEPOINT_PROBE(kmem, mm_page_free_batched)
{
	return mmr_pf_add(1, 0);
}

TRACEPOINT_PROBE(kmem, mm_page_free)
{
	return mmr_pf_add(0, args->order);
}
