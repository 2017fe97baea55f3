/* SPDX-License-Identifier: GPL-2.0 */
/* exceptions:page_fault_user -> page_faults
 *
 * The task filter comes first: the raw program reads the faulting ip from
 * pt_regs (bpf_probe_read_kernel, a helper call: 25-38 ns a hit measured on
 * the page-fault case, docs/RECORDING.md) only for the recorded tasks' faults,
 * not for every fault of every task. */

static __always_inline int mmr_page_fault(u64 address, u64 ip, const void *regs, u64 error_code)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, MMR_EV_PAGE_FAULT))
		return MMR_PASS;
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
#if MMR_RAW_PAGE_FAULT
	bpf_probe_read_kernel(&ip, sizeof(ip), (const char *)regs + MMR_OFF_REGS_IP);
#endif
	struct mmr_page_fault *e = mmr_slot(b);
	mmr_head(e, MMR_EV_PAGE_FAULT, 0, bpf_ktime_get_ns(), mmr_next_seq(), id >> 32, (u32)id,
		 bpf_get_smp_processor_id());
	e->address = address;
	e->ip = ip;
	e->error_code = error_code;
	mmr_count(MMR_EV_PAGE_FAULT, 1, 0);
	mmr_commit(b, MMR_EV_PAGE_FAULT);
	return MMR_PASS;
}

#if MMR_RAW_PAGE_FAULT
/* TP_PROTO(unsigned long address, struct pt_regs *regs, unsigned long error_code) */
RAW_TRACEPOINT_PROBE(page_fault_user)
{
	return mmr_page_fault(ctx->args[0], 0, (const void *)ctx->args[1], ctx->args[2]);
}
#else
TRACEPOINT_PROBE(exceptions, page_fault_user)
{
	return mmr_page_fault(args->address, args->ip, 0, args->error_code);
}
#endif
