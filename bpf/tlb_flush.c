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
/* A TLB-shootdown IPI that arrives while this program runs flushes (and hits
 * the tracepoint) in the middle of it: the kernel skips that hit. The backup
 * program (attached after this one, as page_free.c's) records exactly those. */
BPF_PERCPU_ARRAY(mmr_tlb_running, u32, 1);
BPF_PERCPU_ARRAY(mmr_tlb_recovered, u64, 1);

/* TP_PROTO(int reason, unsigned long pages) */
RAW_TRACEPOINT_PROBE(tlb_flush)
{
	int zero = 0;
	u32 *running = mmr_tlb_running.lookup(&zero);
	u32 was = running ? *running : 0;
	if (running)
		*running = 1;
	int ret = mmr_tlb_flush((s32)ctx->args[0], (s64)ctx->args[1]);
	if (running)
		*running = was;
	return ret;
}

int mmr_tlb_backup(struct bpf_raw_tracepoint_args *ctx)
{
	int zero = 0;
	u32 *running = mmr_tlb_running.lookup(&zero);
	if (!running || !*running)
		return 0;
	/* counted whatever mmr_ctl says, as the kernel counts the miss: user space takes both at the
	 * recording's start and stop; what is recorded is filtered (and stopped) as the main program's */
	u64 *n = mmr_tlb_recovered.lookup(&zero);
	if (n)
		(*n)++;
	return mmr_tlb_flush((s32)ctx->args[0], (s64)ctx->args[1]);
}
#else
TRACEPOINT_PROBE(tlb, tlb_flush)
{
	return mmr_tlb_flush(args->reason, (s64)args->pages);
}
#endif
