/* SPDX-License-Identifier: GPL-2.0 */
/* tlb:tlb_flush -> tlb_flushes */

static __always_inline int mmr_tlb_flush(s32 reason, s64 pages)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, MMR_EV_TLB_FLUSH))
		return MMR_PASS;
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
	u64 now = bpf_ktime_get_ns();
#ifdef MMR_HAVE_PAGE_FREE
	mmr_pf_close(b, now, 0);
#endif
	struct mmr_tlb_flush *e = mmr_slot(b);
	mmr_head(e, MMR_EV_TLB_FLUSH, 0, now, mmr_next_seq(), id >> 32, (u32)id, bpf_get_smp_processor_id());
	e->reason = reason;
	e->pages = pages;
	mmr_count(MMR_EV_TLB_FLUSH, 1, 0);
	mmr_commit(b, MMR_EV_TLB_FLUSH);
	return MMR_PASS;
}

#if MMR_RAW_TLB_FLUSH
/* TP_PROTO(int reason, unsigned long pages) */
RAW_TRACEPOINT_PROBE(tlb_flush)
{
	return mmr_tlb_flush((s32)ctx->args[0], (s64)ctx->args[1]);
}
#else
TRACEPOINT_PROBE(tlb, tlb_flush)
{
	return mmr_tlb_flush(args->reason, (s64)args->pages);
}
#endif
