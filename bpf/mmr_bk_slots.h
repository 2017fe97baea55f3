/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Two raw-tracepoint programs on one tracepoint, a main one and a backup
 * attached after it, that record each hit once although the kernel skips
 * either for a hit that lands in its own window on the CPU (its per-program
 * recursion guard: from its dispatch's first step to its last, not only while
 * its body runs). bpf/page_free.c runs it on kmem:mm_page_free; in plain C so
 * that tests/test_pf_backup_nesting.py can compile it with gcc and drive it
 * with hits nested at every point, the kernel's dispatch included.
 *
 * A hit's key is its raw context's address: the argument array on the stack of
 * the kernel's dispatch (bpf_trace_runN). Both programs of one hit are called
 * from the same frame (the tracepoint's loop over its probes), so they see the
 * same address; a hit nested in another (an interrupt's) runs on a deeper part
 * of the same stack or on another stack, so no two hits in flight on a CPU
 * share a key, while hits one after another at the same depth do.
 *
 * The main program claims a slot for its hit: the slot that holds its key (a
 * finished hit's, at the same depth: not in flight, since no hit in flight has
 * this key), else a free one (tag 0), and writes its key, then the hit's tag
 * (the page), and records the hit. The backup looks for its key: the slot
 * holds its tag -> the main program ran for this hit: free the slot (tag 0; the
 * key stays, for the next hit at this depth), record nothing; anything else ->
 * the main program was skipped (or found no slot, counted): record the hit.
 *
 * Why never a duplicate: once the main program has written a hit's tag, only
 * that hit's own backup writes that slot again: other hits in flight have
 * other keys, so they neither take the slot (they take their key's slot or a
 * free one, and this one is not free) nor clear it (a backup clears only the
 * slot of its own key); no other main program runs until this hit's is over
 * (a program never nests in itself on a CPU), and the key is written before
 * the tag, so that no backup sees this tag under an earlier key. Why every skip
 * of the main program is recovered unless the backup is skipped too (a hit
 * two windows deep): the backup finds its key's slot holding its tag only if
 * an earlier hit at the same depth freeing the same page left it behind (its
 * backup skipped; such a slot stays until the next hit with its key); that hit
 * is then a miss, counted by the kernel and not recovered, never hidden.
 * Should every slot be held (left behind), the main program records nothing
 * (counted) and the backup records the hit. tracer/recorder.py empties the
 * slots once both programs are attached, before the recording starts: the
 * main program runs alone from load to then, and its slots stay behind.
 *
 * MMR_INTERRUPT_POINT(n) marks where an interrupt may arrive (empty in BPF).
 */
#ifndef MMR_BK_SLOTS_H
#define MMR_BK_SLOTS_H

#include "mmr_batch.h"

#define MMR_BK_SLOTS 8

struct mmr_bk_slots {
	mmr_u64 key[MMR_BK_SLOTS]; /* the raw context's address of the hit that last held the slot */
	mmr_u64 tag[MMR_BK_SLOTS]; /* its tag (never 0); 0: free */
};

/* The slot holding key, or -1. */
MMR_INLINE int mmr_bk_find(struct mmr_bk_slots *s, mmr_u64 key)
{
#ifdef __clang__
#pragma unroll
#endif
	for (int i = 0; i < MMR_BK_SLOTS; i++) {
		MMR_INTERRUPT_POINT(31);
		if (s->key[i] == key)
			return i;
	}
	return -1;
}

/* The main program, for every hit: 0 slot claimed (record the hit), 1 no slot (do not record it: the backup
 * will). No atomics: the main program never runs nested in itself on a CPU, so no other claim can come
 * between this one's loads and stores; what can (backups of hits nested in this program's window) only
 * clears the tag of a slot holding their own key, never this hit's. */
MMR_INLINE int mmr_bk_claim(struct mmr_bk_slots *s, mmr_u64 key, mmr_u64 tag)
{
	int i = mmr_bk_find(s, key);
	if (i < 0) {
#ifdef __clang__
#pragma unroll
#endif
		for (int j = 0; j < MMR_BK_SLOTS; j++) {
			MMR_INTERRUPT_POINT(32);
			if (s->tag[j] == 0) {
				i = j;
				break;
			}
		}
		if (i < 0)
			return 1;
		s->key[i & (MMR_BK_SLOTS - 1)] = key;
		/* the key before the tag: a backup of an earlier key must never see this tag in its slot */
		mmr_barrier();
	}
	MMR_INTERRUPT_POINT(33);
	s->tag[i & (MMR_BK_SLOTS - 1)] = tag;
	return 0;
}

/* The backup, for every hit: 0 the main program ran for it (its slot released: the tag cleared, the key kept
 * for the next hit at this depth), 1 record it (the main program was skipped or found no slot), 2 record it,
 * and a slot of its key an earlier hit left behind was released. (No other slot is released here: were the
 * main program skipped for this hit while such a slot held its page, this program would take that slot for
 * its own, and could not tell the hits in flight from those gone.) */
MMR_INLINE int mmr_bk_release(struct mmr_bk_slots *s, mmr_u64 key, mmr_u64 tag)
{
	int i = mmr_bk_find(s, key);
	if (i < 0)
		return 1;
	MMR_INTERRUPT_POINT(34);
	i &= MMR_BK_SLOTS - 1;
	mmr_u64 held = s->tag[i];
	if (!held)
		return 1;
	s->tag[i] = 0;
	return held == tag ? 0 : 2;
}

#endif /* MMR_BK_SLOTS_H */
