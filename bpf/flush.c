/* SPDX-License-Identifier: GPL-2.0 */
/* Periodic per-CPU flush (a cpu-clock perf event): submits partly filled
 * batches so events reach user space within a bounded delay even on a quiet
 * CPU, and closes page-free bursts that have gone quiet. It may interrupt one
 * of our raw tracepoint programs: it then touches only the nesting levels
 * above the interrupted ones (those are idle). */

int mmr_flush(struct bpf_perf_event_data *ctx)
{
	struct mmr_batch *own = mmr_enter();
	if (!own)
		return 0;
	int from = mmr_level();
	u64 now = bpf_ktime_get_ns();
#pragma unroll
	for (int lvl = 0; lvl < MMR_NEST; lvl++) {
		if (lvl < from)
			continue;
		int key = lvl;
		struct mmr_batch *b = mmr_batches.lookup(&key);
		if (!b)
			continue;
#ifdef MMR_HAVE_PAGE_FREE
		mmr_pf_close_level(b, lvl, now, MMR_PF_GAP_NS);
#endif
		if (b->count)
			mmr_submit(b);
	}
	mmr_exit();
	return 0;
}
