/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Nesting-safe per-CPU batches: the bookkeeping of bpf/mmr_common.h's
 * mmr_batch_get / mmr_commit, in plain C so that tests/test_batch_nesting.py
 * can compile it with gcc and drive nested programs through it.
 *
 * Why: a program can be interrupted on its CPU by another one that fills the
 * same per-CPU batch. Classic tracepoint programs share the kernel's per-CPU
 * recursion guard (the nested one is skipped), but raw-tracepoint and
 * fentry/fexit programs only guard themselves: an fentry program on
 * up_read in an interrupt, or a raw tracepoint on an IPI, runs while a
 * task-context program is half-way through a slot. With one batch per CPU
 * both write the same slot (one row lost, one duplicated) or the nested one
 * submits and resets the batch under the outer one (stale rows).
 *
 * How: each CPU has a nesting level and one batch per level. A program
 * claims the next level (mmr_nest_enter) before touching a batch and gives it
 * back when done (mmr_nest_exit, in mmr_commit). The read-modify-write of the
 * level needs no atomics: a program that interrupts between the read and the
 * write sees the same level, but it has finished with that level's batch and
 * put the level back before the interrupted program runs on. Levels: task,
 * softirq, hardirq, NMI; a program nested deeper is dropped and counted.
 *
 * MMR_INTERRUPT_POINT(n) marks where an interrupt may arrive; it is empty in
 * the BPF build and calls the nested program in the test.
 */
#ifndef MMR_BATCH_H
#define MMR_BATCH_H

#include "mmreplay.h"

#ifndef MMR_INLINE
#define MMR_INLINE static inline __attribute__((always_inline))
#endif
#ifndef MMR_INTERRUPT_POINT
#define MMR_INTERRUPT_POINT(n) do { } while (0)
#endif
/* Keep the claim of a level before every write into its batch. */
#define mmr_barrier() asm volatile("" ::: "memory")

/* Per-CPU nesting state (one-entry per-CPU array map mmr_nest). */
struct mmr_nest {
	mmr_u32 level;    /* batches in use on this CPU: programs running, innermost last */
	mmr_u32 _pad;
	mmr_u64 dropped;  /* events of programs nested deeper than MMR_NEST, not recorded */
};

/* Claim this CPU's next batch level: its index, or -1 (the event is dropped, counted). */
MMR_INLINE int mmr_nest_enter(struct mmr_nest *n)
{
	mmr_u32 level = n->level;
	MMR_INTERRUPT_POINT(1);
	if (level >= MMR_NEST) {
		n->dropped++;
		return -1;
	}
	n->level = level + 1;
	mmr_barrier();
	MMR_INTERRUPT_POINT(2);
	return (int)level;
}

/* Give the level back (after the last write into its batch). */
MMR_INLINE void mmr_nest_exit(struct mmr_nest *n)
{
	mmr_barrier();
	mmr_u32 level = n->level;
	MMR_INTERRUPT_POINT(6);
	if (level > 0)
		n->level = level - 1;
}

/* The slot the next event goes into. */
MMR_INLINE void *mmr_batch_slot(struct mmr_batch *b)
{
	mmr_u32 i = b->count & (MMR_BATCH_EVENTS - 1);
	return &b->ev[i * MMR_EVENT_SIZE];
}

/* Count the slot just written; 1 when the batch is full and must be submitted. */
MMR_INLINE int mmr_batch_advance(struct mmr_batch *b, int kind)
{
	MMR_INTERRUPT_POINT(4);
	b->count = (b->count & (MMR_BATCH_EVENTS - 1)) + 1;
	if (kind > 0 && kind < MMR_MAX_KINDS)
		b->kind_count[kind]++;
	MMR_INTERRUPT_POINT(5);
	return b->count >= MMR_BATCH_EVENTS;
}

/* Empty the batch after submitting it. */
MMR_INLINE void mmr_batch_reset(struct mmr_batch *b)
{
	b->count = 0;
#ifdef __clang__
#pragma unroll
#endif
	for (int k = 0; k < MMR_MAX_KINDS; k++)
		b->kind_count[k] = 0;
}

#endif /* MMR_BATCH_H */
