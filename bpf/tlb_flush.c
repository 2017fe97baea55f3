/* SPDX-License-Identifier: GPL-2.0 */
/* tlb:tlb_flush -> tlb_flushes */

TRACEPOINT_PROBE(tlb, tlb_flush)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_current(id))
		return MMR_PASS;
	u64 now = bpf_ktime_get_ns();
#ifdef MMR_HAVE_PAGE_FREE
	mmr_pf_close(now, 0);
#endif
	struct mmr_batch *b = mmr_batch_get();
	if (!b)
		return MMR_PASS;
	struct mmr_tlb_flush *e = mmr_slot(b);
	mmr_head(e, MMR_EV_TLB_FLUSH, 0, now, mmr_next_seq(), id >> 32, (u32)id, bpf_get_smp_processor_id());
	e->reason = args->reason;
	e->pages = (s64)args->pages;
	mmr_count(MMR_EV_TLB_FLUSH, 1, 0);
	mmr_commit(b, MMR_EV_TLB_FLUSH);
	return MMR_PASS;
}
