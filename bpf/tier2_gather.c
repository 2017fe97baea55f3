/* SPDX-License-Identifier: GPL-2.0 */
/* Tier 2: the mmu_gather window tlb_gather_mmu[_fullmm] -> tlb_finish_mmu,
 * paired IN THE KERNEL per task -> gathers. Inside the window it counts the
 * tlb_flush_mmu calls of the same struct mmu_gather and the pages the task
 * frees (kmem:mm_page_free_batched, as a raw tracepoint so that it does not
 * collide with tier 1's tracepoint program on the same event).
 *
 * A nested gather of the same task (rare) is folded into the outer one.
 * The window is emitted when tlb_finish_mmu RETURNS, so its own final flush
 * and frees are inside. Windows still open at stop are read from
 * mmr_t2_gathers by user space (struct mmr_t2_gather_open).
 *
 * -DMMR_T2_GATHER_RANGE=1: kernels before 5.11, where tlb_gather_mmu(tlb,
 * mm, start, end) has no _fullmm variant and start=0,end=-1 means fullmm. */

struct mmr_t2_gather_state {
	struct mmr_t2_gather_open w;
	u32 depth;
	u32 _pad;
};

BPF_HASH(mmr_t2_gathers, u32, struct mmr_t2_gather_state, 65536);

static __always_inline int mmr_t2_gather_begin(u64 tlb, u64 mm, u8 fullmm)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_current(id))
		return 0;
	u32 tid = (u32)id;
	struct mmr_t2_gather_state *s = mmr_t2_gathers.lookup(&tid);
	if (s) {
		s->depth++;
		return 0;
	}
	struct mmr_t2_gather_state n = {};
	n.w.ts = bpf_ktime_get_ns();
	n.w.seq = mmr_next_seq();
	n.w.mm = mm;
	n.w.tlb = tlb;
	n.w.pid = id >> 32;
	n.w.cpu = bpf_get_smp_processor_id();
	n.w.fullmm = fullmm;
	mmr_t2_gathers.update(&tid, &n);
	return 0;
}

static __always_inline int mmr_t2_gather_flush(u64 tlb)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct mmr_t2_gather_state *s = mmr_t2_gathers.lookup(&tid);
	if (s && s->w.tlb == tlb)
		s->w.flushes++;
	return 0;
}

static __always_inline int mmr_t2_gather_end(void)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	struct mmr_t2_gather_state *s = mmr_t2_gathers.lookup(&tid);
	u64 now = bpf_ktime_get_ns();
	if (s && s->depth) {
		s->depth--;
		return 0;
	}
	if (!s && !mmr_want_current(id))
		return 0;
	struct mmr_batch *b = mmr_batch_get();
	if (!b)
		return 0;
	struct mmr_t2_gather *e = mmr_slot(b);
	if (s) {
		mmr_head(e, MMR_EV_T2_GATHER, 0, s->w.ts, s->w.seq, s->w.pid, tid, s->w.cpu);
		e->flushes = s->w.flushes;
		e->dur = now - s->w.ts;
		e->mm = s->w.mm;
		e->pages = s->w.pages;
		e->fullmm = s->w.fullmm;
		mmr_t2_gathers.delete(&tid);
		mmr_count(MMR_EV_T2_GATHER, 1, 0);
	} else {
		/* opened before the recording started: only the end is known */
		mmr_head(e, MMR_EV_T2_GATHER, MMR_F_INCOMPLETE | MMR_F_NO_START, 0, mmr_next_seq(), id >> 32, tid,
			 bpf_get_smp_processor_id());
		e->flushes = 0;
		e->dur = now;
		e->mm = 0;
		e->pages = 0;
		e->fullmm = 0;
		mmr_count(MMR_EV_T2_GATHER, 1, 1);
	}
	mmr_commit(b, MMR_EV_T2_GATHER);
	return 0;
}

/* kmem:mm_page_free_batched(struct page *page): one base page freed by the batched path */
int mmr_t2_page_free_batched(struct bpf_raw_tracepoint_args *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct mmr_t2_gather_state *s = mmr_t2_gathers.lookup(&tid);
	if (s)
		s->w.pages++;
	return 0;
}

#if MMR_T2_FENTRY
#if MMR_T2_GATHER_RANGE
KFUNC_PROBE(tlb_gather_mmu, void *tlb, void *mm, unsigned long start, unsigned long end)
{
	return mmr_t2_gather_begin((u64)tlb, (u64)mm, start == 0 && end == ~0UL);
}
#else
KFUNC_PROBE(tlb_gather_mmu, void *tlb, void *mm)
{
	return mmr_t2_gather_begin((u64)tlb, (u64)mm, 0);
}
KFUNC_PROBE(tlb_gather_mmu_fullmm, void *tlb, void *mm)
{
	return mmr_t2_gather_begin((u64)tlb, (u64)mm, 1);
}
#endif
KFUNC_PROBE(tlb_flush_mmu, void *tlb)
{
	return mmr_t2_gather_flush((u64)tlb);
}
KRETFUNC_PROBE(tlb_finish_mmu, void *tlb)
{
	return mmr_t2_gather_end();
}
#else
int mmr_t2_enter_tlb_gather_mmu(struct pt_regs *ctx)
{
#if MMR_T2_GATHER_RANGE
	u64 start = PT_REGS_PARM3(ctx), end = PT_REGS_PARM4(ctx);
	return mmr_t2_gather_begin(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), start == 0 && end == ~0ULL);
#else
	return mmr_t2_gather_begin(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), 0);
#endif
}
int mmr_t2_enter_tlb_gather_mmu_fullmm(struct pt_regs *ctx)
{
	return mmr_t2_gather_begin(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), 1);
}
int mmr_t2_enter_tlb_flush_mmu(struct pt_regs *ctx)
{
	return mmr_t2_gather_flush(PT_REGS_PARM1(ctx));
}
int mmr_t2_exit_tlb_finish_mmu(struct pt_regs *ctx)
{
	return mmr_t2_gather_end();
}
#endif
