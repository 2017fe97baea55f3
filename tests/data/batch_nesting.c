/* Drives nested "programs" through bpf/mmr_batch.h, the bookkeeping of the
 * recorder's per-CPU batches, and checks that every event reaches user space
 * exactly once and intact. Used by tests/test_batch_nesting.py.
 *
 * A program is what every BPF probe does: get a batch, write a 64-byte slot
 * field by field, commit (submitting the batch when full). An "interrupt" runs
 * another program at one of the interrupt points: inside the level claim and
 * release (mmr_batch.h's MMR_INTERRUPT_POINT) or between the slot's field
 * writes (point 3), up to one deeper than the levels (task, softirq, hardirq,
 * NMI, and one that must be dropped and counted).
 *
 * -DMMR_SINGLE_BATCH builds the recorder's former scheme (one batch per CPU,
 * no nesting level) so the test can show that it loses and duplicates rows.
 *
 * Output: one line "programs P recorded R missing M duplicated D corrupt C dropped X".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Programs running at once, at most: one more than the levels, so that one is dropped. */
#ifndef MMR_TEST_MAX_DEPTH
#define MMR_TEST_MAX_DEPTH (MMR_NEST + 1)
#endif

static void interrupt_point(int where);
#define MMR_INTERRUPT_POINT(n) interrupt_point(n)
#include "mmr_batch.h"

static struct mmr_nest nest;
static struct mmr_batch batches[MMR_NEST];
static unsigned char *out;       /* submitted slots, in order */
static size_t out_n, out_cap;
static unsigned long programs, dropped_seen;
static int depth;                /* programs running now */
static unsigned long long rng = 88172645463325252ULL;
static int rate;                 /* 1 in rate interrupt points runs a nested program */

static unsigned long long xorshift(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void submit(struct mmr_batch *b)
{
	if (out_n + b->count > out_cap) {
		out_cap = (out_n + b->count) * 2;
		out = realloc(out, out_cap * MMR_EVENT_SIZE);
	}
	memcpy(out + out_n * MMR_EVENT_SIZE, b->ev, (size_t)b->count * MMR_EVENT_SIZE);
	out_n += b->count;
	mmr_batch_reset(b);
}

static struct mmr_batch *batch_get(void)
{
#ifdef MMR_SINGLE_BATCH
	return &batches[0];
#else
	int level = mmr_nest_enter(&nest);
	return level < 0 ? NULL : &batches[level];
#endif
}

static void commit(struct mmr_batch *b, int kind)
{
	if (mmr_batch_advance(b, kind))
		submit(b);
#ifndef MMR_SINGLE_BATCH
	mmr_nest_exit(&nest);
#endif
}

/* One probe hit: event number id, written field by field. */
static void program(void)
{
	unsigned long long id = ++programs;
	depth++;
	struct mmr_batch *b = batch_get();
	if (!b) {
		dropped_seen++;
		depth--;
		return;
	}
	struct mmr_event_head *h = mmr_batch_slot(b);
	h->seq = id;
	interrupt_point(3);
	h->ts = id * 7;
	h->tid = (mmr_s32)id;
	interrupt_point(3);
	h->pid = (mmr_s32)(id * 3);
	h->kind = 1;
	commit(b, 1);
	depth--;
}

static void interrupt_point(int where)
{
	(void)where;
	if (depth == 0 || depth >= MMR_TEST_MAX_DEPTH || !rate)
		return;
	if (xorshift() % (unsigned)rate == 0)
		program();
}

int main(int argc, char **argv)
{
	unsigned long n = argc > 1 ? strtoul(argv[1], 0, 10) : 200000;
	rate = argc > 2 ? atoi(argv[2]) : 4;
	for (unsigned long i = 0; i < n; i++)
		program();
	for (int l = 0; l < MMR_NEST; l++)   /* what the recorder reads at stop */
		if (batches[l].count)
			submit(&batches[l]);

	unsigned char *seen = calloc(programs + 1, 1);
	unsigned long missing = 0, dup = 0, corrupt = 0;
	for (size_t i = 0; i < out_n; i++) {
		struct mmr_event_head *h = (void *)(out + i * MMR_EVENT_SIZE);
		unsigned long long id = h->seq;
		if (id == 0 || id > programs || h->ts != id * 7 || h->tid != (mmr_s32)id ||
		    h->pid != (mmr_s32)(id * 3) || h->kind != 1) {
			corrupt++;
			continue;
		}
		if (seen[id]++)
			dup++;
	}
	for (unsigned long long id = 1; id <= programs; id++)
		missing += !seen[id];
	printf("programs %lu recorded %zu missing %lu duplicated %lu corrupt %lu dropped %lu %llu\n", programs,
	       out_n, missing, dup, corrupt, dropped_seen, (unsigned long long)nest.dropped);
	return 0;
}
