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
/* A TLB-shootdown IPI that arrives while this program runs (its dispatch
 * included) flushes, and hits the tracepoint, in the middle of it: the kernel
 * skips this program for that hit. A first program pushes each hit onto a
 * per-CPU stack (bpf/mmr_pf_stack.h), this one marks it, and the backup
 * records an unmarked one. A hit's key is its raw-tracepoint
 * context's address (the argument array on the dispatch's stack: the same for
 * the three programs of one hit, different for a hit nested in it), since its
 * arguments (reason, pages) may repeat among nested hits. */
#include "mmr_pf_stack.h"
BPF_PERCPU_ARRAY(mmr_tlb_stack, struct mmr_pf_stack, 1);
BPF_PERCPU_ARRAY(mmr_tlb_recovered, u64, 1);
BPF_PERCPU_ARRAY(mmr_tlb_bk, u64, 3); /* as mmr_pf_bk */

/* The context's address as a number (the verifier allows no bitwise operation on a pointer). */
static __always_inline u64 mmr_tlb_key(struct bpf_raw_tracepoint_args *ctx)
{
	u64 a = 0;
	bpf_probe_read_kernel(&a, sizeof(a), &ctx);
	return a;
}

static __always_inline void mmr_tlb_bk_count(int what)
{
	u64 *n = mmr_tlb_bk.lookup(&what);
	if (n)
		(*n)++;
}

int mmr_tlb_pre(struct bpf_raw_tracepoint_args *ctx)
{
	int zero = 0;
	struct mmr_pf_stack *st = mmr_tlb_stack.lookup(&zero);
	if (st && mmr_pf_stack_push(st, mmr_tlb_key(ctx), 0) == 1)
		mmr_tlb_bk_count(2);
	return 0;
}

/* TP_PROTO(int reason, unsigned long pages) */
RAW_TRACEPOINT_PROBE(tlb_flush)
{
	int zero = 0;
	struct mmr_pf_stack *st = mmr_tlb_stack.lookup(&zero);
	if (st) {
		int how = mmr_pf_stack_mark(st, mmr_tlb_key(ctx));
		if (how)
			mmr_tlb_bk_count(1);
		if (how == 2)
			mmr_tlb_bk_count(2);
	}
	return mmr_tlb_flush((s32)ctx->args[0], (s64)ctx->args[1]);
}

int mmr_tlb_backup(struct bpf_raw_tracepoint_args *ctx)
{
	int zero = 0;
	struct mmr_pf_stack *st = mmr_tlb_stack.lookup(&zero);
	if (!st || !mmr_pf_stack_pop(st, mmr_tlb_key(ctx)))
		return 0;
	/* counted whatever mmr_ctl says, as the kernel counts the miss (see page_free.c) */
	u64 *n = mmr_tlb_recovered.lookup(&zero);
	if (n)
		(*n)++;
	if (mmr_want_current(bpf_get_current_pid_tgid()))
		mmr_tlb_bk_count(0);
	return mmr_tlb_flush((s32)ctx->args[0], (s64)ctx->args[1]);
}
#else
TRACEPOINT_PROBE(tlb, tlb_flush)
{
	return mmr_tlb_flush(args->reason, (s64)args->pages);
}
#endif
