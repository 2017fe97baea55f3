/* SPDX-License-Identifier: GPL-2.0 */
/* ipi:ipi_send_cpu, ipi:ipi_send_cpumask -> ipis */

static __always_inline int mmr_ipi(void *ctx, s32 target, s32 ncpus, u64 callsite, u64 callback)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_current(id))
		return MMR_PASS;
	struct mmr_batch *b = mmr_batch_get();
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

TRACEPOINT_PROBE(ipi, ipi_send_cpu)
{
	return mmr_ipi(args, args->cpu, 1, (u64)args->callsite, (u64)args->callback);
}

TRACEPOINT_PROBE(ipi, ipi_send_cpumask)
{
	/* __data_loc cpumask: low 16 bits offset into the record, high 16 bits length */
	u32 loc = args->data_loc_cpumask;
	u64 words[4] = {};
	u32 len = loc >> 16;
	if (len > sizeof(words))
		len = sizeof(words);
	bpf_probe_read_kernel(&words, len, (char *)args + (loc & 0xffff));
	s32 n = __builtin_popcountll(words[0]) + __builtin_popcountll(words[1]) + __builtin_popcountll(words[2]) +
		__builtin_popcountll(words[3]);
	return mmr_ipi(args, -1, n, (u64)args->callsite, (u64)args->callback);
}
