/* SPDX-License-Identifier: GPL-2.0 */
/* exceptions:page_fault_user -> page_faults */

static __always_inline int mmr_page_fault(u64 address, u64 ip, u64 error_code)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want(id, MMR_EV_PAGE_FAULT))
		return MMR_PASS;
	struct mmr_batch *b = mmr_enter();
	if (!b)
		return MMR_PASS;
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
	u64 ip = 0;
	bpf_probe_read_kernel(&ip, sizeof(ip), (char *)ctx->args[1] + MMR_OFF_REGS_IP);
	return mmr_page_fault(ctx->args[0], ip, ctx->args[2]);
}
#else
TRACEPOINT_PROBE(exceptions, page_fault_user)
{
	return mmr_page_fault(args->address, args->ip, args->error_code);
}
#endif
