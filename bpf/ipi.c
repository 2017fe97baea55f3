/* SPDX-License-Identifier: GPL-2.0 */
/* ipi:ipi_send_cpu, ipi:ipi_send_cpumask -> ipis */

static __always_inline int mmr_ipi(s32 target, s32 ncpus, u64 callsite, u64 callback)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, MMR_EV_IPI))
		return MMR_PASS;
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
	struct mmr_ipi *e = mmr_slot(b);
	mmr_head(e, MMR_EV_IPI, 0, bpf_ktime_get_ns(), mmr_next_seq(), id >> 32, (u32)id, bpf_get_smp_processor_id());
	e->target_cpu = target;
	e->ncpus = ncpus;
	e->callsite = callsite;
	e->callback = callback;
	mmr_count(MMR_EV_IPI, 1, 0);
	mmr_commit(b, MMR_EV_IPI);
	return MMR_PASS;
}

static __always_inline s32 mmr_popcount_mask(const void *mask, u32 len)
{
	u64 words[4] = {};
	if (len > sizeof(words))
		len = sizeof(words);
	bpf_probe_read_kernel(&words, len, mask);
	return __builtin_popcountll(words[0]) + __builtin_popcountll(words[1]) + __builtin_popcountll(words[2]) +
	       __builtin_popcountll(words[3]);
}

#if MMR_RAW_IPI
/* TP_PROTO(const unsigned int cpu, unsigned long callsite, void *callback) */
RAW_TRACEPOINT_PROBE(ipi_send_cpu)
{
	return mmr_ipi((s32)ctx->args[0], 1, ctx->args[1], ctx->args[2]);
}

/* TP_PROTO(const struct cpumask *cpumask, unsigned long callsite, void *callback) */
RAW_TRACEPOINT_PROBE(ipi_send_cpumask)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, 0)) /* the filter before the mask is read; mmr_ipi counts */
		return MMR_PASS;
	return mmr_ipi(-1, mmr_popcount_mask((void *)ctx->args[0], 32), ctx->args[1], ctx->args[2]);
}
#else
TRACEPOINT_PROBE(ipi, ipi_send_cpu)
{
	return mmr_ipi(args->cpu, 1, (u64)args->callsite, (u64)args->callback);
}

TRACEPOINT_PROBE(ipi, ipi_send_cpumask)
{
	/* __data_loc cpumask: low 16 bits offset into the record, high 16 bits length */
	u32 loc = args->data_loc_cpumask;
	return mmr_ipi(-1, mmr_popcount_mask((char *)args + (loc & 0xffff), loc >> 16), (u64)args->callsite,
		       (u64)args->callback);
}
#endif
