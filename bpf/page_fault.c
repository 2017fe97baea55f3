/* SPDX-License-Identifier: GPL-2.0 */
/* exceptions:page_fault_user -> page_faults */

TRACEPOINT_PROBE(exceptions, page_fault_user)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_current(id))
		return MMR_PASS;
	struct mmr_batch *b = mmr_batch_get();
	if (!b)
		return MMR_PASS;
	struct mmr_page_fault *e = mmr_slot(b);
	mmr_head(e, MMR_EV_PAGE_FAULT, 0, bpf_ktime_get_ns(), mmr_next_seq(), id >> 32, (u32)id,
		 bpf_get_smp_processor_id());
	e->address = args->address;
	e->ip = args->ip;
	e->error_code = args->error_code;
	mmr_count(MMR_EV_PAGE_FAULT, 1, 0);
	mmr_commit(b, MMR_EV_PAGE_FAULT);
	return MMR_PASS;
}
