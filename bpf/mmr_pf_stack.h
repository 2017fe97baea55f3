/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The per-CPU stack of hits in flight that lets tlb:tlb_flush's backup
 * program record exactly the hits the kernel skipped for the main one
 * (bpf/tlb_flush.c; three programs: a first one pushes, the main one marks,
 * the backup pops), in plain C so that tests/test_pf_backup_nesting.py can
 * compile it with gcc and drive it with hits nested at every point, the
 * kernel's raw-tracepoint dispatch included. kmem:mm_page_free used it too,
 * until two programs and a slot per hit in flight (bpf/mmr_bk_slots.h) did
 * the same with one dispatch fewer per page freed.
 *
 * A slot is one u64, the hit's key | mark. The key is the page pointer
 * (64-byte aligned: bit 0 is the mark; bpf/tlb_flush.c passes its raw
 * context's address instead: any even value that no two hits in flight on a
 * CPU share will do) with the stack's generation in bits 48-63; a full stack (stale slots, in practice) is emptied by starting a new
 * generation, so that no slot written before can match a key again. The
 * stack's top word (depth, generation, and a count of its changes) is changed
 * by compare-and-swap only, from the value the program read: a program that
 * an interrupt's hits overtook never writes a depth out of date. A slot is
 * written whole, and a mark is set by compare-and-swap, so that a slot changed
 * behind a program's back (only by emptying the stack) is never marked.
 *
 * The invariant that excludes a duplicate: once the main program ran for a
 * hit, the topmost slot holding its key is marked, and stays so: other hits
 * push slots of other keys (a page being freed is not freed again until its
 * hit is over), and pop or mark only slots of their own key; emptying the
 * stack changes the key. The backup records a hit only when the topmost slot
 * holding its key is unmarked, and marks it as it does.
 *
 * MMR_INTERRUPT_POINT(n) marks where an interrupt may arrive (empty in BPF).
 */
#ifndef MMR_PF_STACK_H
#define MMR_PF_STACK_H

#include "mmr_batch.h"

#define MMR_PF_STACK 16

struct mmr_pf_stack {
	mmr_u64 top;  /* depth (bits 0-7) | generation (8-23) | changes (24-63) */
	mmr_u64 slot[MMR_PF_STACK];
};

#define MMR_PF_DEPTH(w) ((mmr_u32)((w) & 0xff))
#define MMR_PF_GEN(w) (((w) >> 8) & 0xffff)
#define MMR_PF_TOP(w, gen, depth) (((((w) >> 24) + 1) << 24) | ((mmr_u64)(gen) << 8) | (mmr_u64)(depth))

/* The key of a hit freeing page in the generation of top word w; never 0. */
MMR_INLINE mmr_u64 mmr_pf_stack_key(mmr_u64 w, mmr_u64 page)
{
	return (page & ~1ULL) ^ (MMR_PF_GEN(w) << 48);
}

/* Push a slot for a hit freeing page (mark: 1 marked); 0 pushed, 1 pushed into an emptied stack (a new
 * generation), -1 not pushed (overtaken by interrupts three times). */
MMR_INLINE int mmr_pf_stack_push(struct mmr_pf_stack *st, mmr_u64 page, int mark)
{
#ifdef __clang__
#pragma unroll
#endif
	for (int tries = 0; tries < 3; tries++) {
		mmr_u64 w = st->top;
		mmr_u32 d = MMR_PF_DEPTH(w);
		mmr_u64 gen = MMR_PF_GEN(w);
		int reset = d >= MMR_PF_STACK;
		if (reset) {
			d = 0;
			gen = (gen + 1) & 0xffff;
		}
		d &= MMR_PF_STACK - 1;
		/* no key is 0: until the slot is written, no hit takes it for its own (slot d is above every
		 * live one, or the stack is being emptied) */
		st->slot[d] = 0;
		mmr_barrier();
		MMR_INTERRUPT_POINT(11);
		mmr_u64 nw = MMR_PF_TOP(w, gen, d + 1);
		if (__sync_val_compare_and_swap(&st->top, w, nw) != w)
			continue;
		MMR_INTERRUPT_POINT(12);
		st->slot[d] = mmr_pf_stack_key(nw, page) | (mark ? 1 : 0);
		return reset;
	}
	return -1;
}

/* The topmost slot (index) holding key in a stack of depth d, or -1. */
MMR_INLINE int mmr_pf_stack_find(struct mmr_pf_stack *st, mmr_u32 d, mmr_u64 key, mmr_u64 *v)
{
#ifdef __clang__
#pragma unroll
#endif
	for (int i = MMR_PF_STACK - 1; i >= 0; i--) {
		if ((mmr_u32)i >= d)
			continue;
		MMR_INTERRUPT_POINT(13);
		*v = st->slot[i];
		if ((*v & ~1ULL) == key)
			return i;
	}
	return -1;
}

/* The main program, for every hit: mark the topmost slot holding this hit's key (its own, pushed by the
 * first program), else push a marked one (the first program was skipped for this hit, or the stack was
 * emptied since). 0: marked; 1: pushed; 2: pushed into an emptied stack; 3: neither (counted). */
MMR_INLINE int mmr_pf_stack_mark(struct mmr_pf_stack *st, mmr_u64 page)
{
	mmr_u64 w = st->top;
	mmr_u64 v = 0;
	int i = mmr_pf_stack_find(st, MMR_PF_DEPTH(w), mmr_pf_stack_key(w, page), &v);
	MMR_INTERRUPT_POINT(14);
	if (i >= 0 && ((v & 1) || __sync_val_compare_and_swap(&st->slot[i & (MMR_PF_STACK - 1)], v, v | 1) == v))
		return 0;
	int r = mmr_pf_stack_push(st, page, 1);
	return r < 0 ? 3 : 1 + r;
}

/* The backup program, for every hit: 1 if the topmost slot holding this hit's key is unmarked, i.e. the
 * kernel skipped the main program for this hit (record it); the slot is marked as it is taken, and popped
 * if it is the top and nothing changed since. No slot of its key: 0 (a miss, if the main program was
 * skipped; counted by the kernel, not recovered). */
MMR_INLINE int mmr_pf_stack_pop(struct mmr_pf_stack *st, mmr_u64 page)
{
	mmr_u64 w = st->top;
	mmr_u32 d = MMR_PF_DEPTH(w);
	mmr_u64 v = 0;
	int i = mmr_pf_stack_find(st, d, mmr_pf_stack_key(w, page), &v);
	if (i < 0)
		return 0;
	MMR_INTERRUPT_POINT(15);
	int take = !(v & 1) && __sync_val_compare_and_swap(&st->slot[i & (MMR_PF_STACK - 1)], v, v | 1) == v;
	MMR_INTERRUPT_POINT(16);
	if ((mmr_u32)i + 1 == d)
		__sync_val_compare_and_swap(&st->top, w, MMR_PF_TOP(w, MMR_PF_GEN(w), i));
	return take;
}

#endif /* MMR_PF_STACK_H */
