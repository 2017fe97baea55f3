/* SPDX-License-Identifier: GPL-2.0 */
/* Tier 2: how long mm_take_all_locks() runs (it takes every i_mmap_rwsem and
 * anon_vma lock of an mm, for mmu notifier registration) -> take_all_locks.
 * Paired in the kernel per task; calls still running at stop are read from
 * mmr_t2_take_alls (struct mmr_t2_take_all_open). */

BPF_HASH(mmr_t2_take_alls, u32, struct mmr_t2_take_all_open, 4096);

static __always_inline int mmr_t2_take_all_begin(u64 mm)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!mmr_want_current(id))
		return 0;
	u32 tid = (u32)id;
	struct mmr_t2_take_all_open o = {};
	o.ts = bpf_ktime_get_ns();
	o.seq = mmr_next_seq();
	o.mm = mm;
	o.pid = id >> 32;
	o.cpu = bpf_get_smp_processor_id();
	mmr_t2_take_alls.update(&tid, &o);
	return 0;
}

static __always_inline int mmr_t2_take_all_end(long ret)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	struct mmr_t2_take_all_open *o = mmr_t2_take_alls.lookup(&tid);
	if (!o)
		return 0;
	struct mmr_batch *b = mmr_batch_get();
	if (b) {
		struct mmr_t2_take_all *e = mmr_slot(b);
		mmr_head(e, MMR_EV_T2_TAKE_ALL, 0, o->ts, o->seq, o->pid, tid, o->cpu);
		e->ret = (s32)ret;
		e->dur = bpf_ktime_get_ns() - o->ts;
		e->mm = o->mm;
		mmr_count(MMR_EV_T2_TAKE_ALL, 1, 0);
		mmr_commit(b, MMR_EV_T2_TAKE_ALL);
	}
	mmr_t2_take_alls.delete(&tid);
	return 0;
}

#if MMR_T2_FENTRY
KFUNC_PROBE(mm_take_all_locks, void *mm)
{
	return mmr_t2_take_all_begin((u64)mm);
}
KRETFUNC_PROBE(mm_take_all_locks, void *mm, int ret)
{
	return mmr_t2_take_all_end(ret);
}
#else
int mmr_t2_enter_mm_take_all_locks(struct pt_regs *ctx)
{
	return mmr_t2_take_all_begin(PT_REGS_PARM1(ctx));
}
int mmr_t2_exit_mm_take_all_locks(struct pt_regs *ctx)
{
	return mmr_t2_take_all_end((int)PT_REGS_RC(ctx));
}
#endif
