/* Drives bpf/mmr_pf_stack.h, the bookkeeping of kmem:mm_page_free's three
 * programs (bpf/page_free.c), the way the kernel runs them on one CPU, and
 * checks that no hit is recorded twice and that the hits no program recorded
 * are exactly the main program's skips less the backup's recoveries, the
 * number the recorder reports as lost. Used by tests/test_pf_backup_nesting.py.
 *
 * A hit runs the three programs in attach order (first, main, backup). Each
 * run is the kernel's __bpf_trace_run: the program's per-CPU recursion counter
 * is raised, the body runs only if it was 0 (else the kernel counts a miss),
 * the counter is lowered. An "interrupt" runs another hit, nested, at any
 * point: before or after the counter is raised or lowered (the dispatch), and
 * between the bookkeeping's loads and stores (MMR_INTERRUPT_POINT), up to
 * MAX_DEPTH hits at once (task, softirq, hardirq, NMI). Pages come from a small
 * pool and are reused as soon as freed (the per-CPU free lists are LIFO), never
 * while a hit freeing them is in flight (a page is freed once).
 *
 * -DFORMER_FLAG builds the recorder's former design (a flag the main program's
 * body sets, read by the backup) so the test can show what it missed.
 *
 * Output: "hits H skipped S recovered R unrecorded U duplicated D resets X
 * first_skipped F backup_skipped B".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MAX_DEPTH
#define MAX_DEPTH 4
#endif
#define POOL 6

static void interrupt_point(int where);
#define MMR_INTERRUPT_POINT(n) interrupt_point(n)
#include "mmr_pf_stack.h"

static struct mmr_pf_stack st __attribute__((unused));
static int active[3];
static unsigned long misses[3], recovered, resets, hits;
static unsigned char *recorded;
static size_t cap;
static int depth, rate;
static unsigned long long in_flight[MAX_DEPTH + 1];
static unsigned long long rng = 88172645463325252ULL;

static unsigned long long xorshift(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void record(unsigned long id)
{
	if (recorded[id] < 255)
		recorded[id]++;
}

#ifdef FORMER_FLAG
/* The recorder's former design, for contrast: no first program; the main one sets a per-CPU flag while its
 * body runs, and the backup records a hit whenever it finds the flag set. */
static int running;

static void body(int prog, unsigned long id, unsigned long long page)
{
	(void)page;
	if (prog == 1) {
		int was = running;
		running = 1;
		interrupt_point(22);
		record(id);
		running = was;
	} else if (prog == 2 && running) {
		recovered++;
		record(id);
	}
}
#else
static void body(int prog, unsigned long id, unsigned long long page)
{
	interrupt_point(21);
	if (prog == 0) {
		resets += mmr_pf_stack_push(&st, page, 0) == 1;
	} else if (prog == 1) {
		resets += mmr_pf_stack_mark(&st, page) == 2;
		interrupt_point(22);
		record(id);
	} else if (mmr_pf_stack_pop(&st, page)) {
		recovered++;
		record(id);
	}
	interrupt_point(23);
}
#endif

static void dispatch(int prog, unsigned long id, unsigned long long page)
{
	interrupt_point(1);
	if (++active[prog] != 1) {
		misses[prog]++;
	} else {
		interrupt_point(2); /* the run context, rcu_read_lock, the statistics' clock */
		body(prog, id, page);
		interrupt_point(3);
	}
	active[prog]--;
	interrupt_point(4);
}

static void hit(void)
{
	unsigned long id = hits++;
	if (hits >= cap) {
		recorded = realloc(recorded, cap * 2);
		memset(recorded + cap, 0, cap);
		cap *= 2;
	}
	unsigned long long page;
	for (;;) { /* a page not being freed by a hit in flight */
		page = 64 * (1 + xorshift() % POOL);
		int busy = 0;
		for (int i = 0; i < depth; i++)
			busy |= in_flight[i] == page;
		if (!busy)
			break;
	}
	in_flight[depth++] = page;
	for (int prog = 0; prog < 3; prog++)
		dispatch(prog, id, page);
	depth--;
}

static void interrupt_point(int where)
{
	(void)where;
	if (depth == 0 || depth >= MAX_DEPTH || !rate)
		return;
	if (xorshift() % (unsigned)rate == 0)
		hit();
}

int main(int argc, char **argv)
{
	unsigned long n = argc > 1 ? strtoul(argv[1], 0, 10) : 200000;
	rate = argc > 2 ? atoi(argv[2]) : 8;
	if (argc > 3)
		rng ^= strtoull(argv[3], 0, 10) * 0x9E3779B97F4A7C15ULL;
	cap = 1024;
	recorded = calloc(cap, 1);
	for (unsigned long i = 0; i < n; i++)
		hit();
	unsigned long unrecorded = 0, dup = 0;
	for (unsigned long id = 0; id < hits; id++) {
		unrecorded += recorded[id] == 0;
		dup += recorded[id] > 1;
	}
	printf("hits %lu skipped %lu recovered %lu unrecorded %lu duplicated %lu resets %lu first_skipped %lu "
	       "backup_skipped %lu\n", hits, misses[1], recovered, unrecorded, dup, resets, misses[0], misses[2]);
	return 0;
}
