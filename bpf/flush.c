/* SPDX-License-Identifier: GPL-2.0 */
/* Periodic per-CPU flush (a cpu-clock perf event): submits partly filled
 * batches so events reach user space within a bounded delay even on a quiet
 * CPU, and closes page-free bursts that have gone quiet. */

int mmr_flush(struct bpf_perf_event_data *ctx)
{
#ifdef MMR_HAVE_PAGE_FREE
	mmr_pf_close(bpf_ktime_get_ns(), MMR_PF_GAP_NS);
#endif
	mmr_flush_batches();
	return 0;
}
