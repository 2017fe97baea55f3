/* Drives bpf/mmr_bk_slots.h, the bookkeeping of kmem:mm_page_free's two
 * programs (bpf/page_free.c), the way the kernel runs them on one CPU, and
 * checks that no hit is recorded twice and that the hits no program recorded
 * are exactly the main program's skips and deferrals less the backup's
 * recoveries, the number the recorder reports as lost. Used by
 * tests/test_pf_backup_nesting.py.
 *
 * A hit runs the two programs in attach order (main, backup). Each run is the
 * kernel's __bpf_trace_run: the program's per-CPU recursion counter is raised,
 * the body runs only if it was 0 (else the kernel counts a miss), the counter
 * is lowered. An "interrupt" runs another hit, nested, at any point: before or
 * after the counter is raised or lowered (the dispatch), between the
 * dispatches, and between the bookkeeping's loads and stores
 * (MMR_INTERRUPT_POINT), up to MAX_DEPTH hits at once (task, softirq, hardirq,
 * NMI). A hit's key (its raw context's address) depends on its depth and on
 * one of CTXS call paths: hits in flight never share one, hits one after
 * another at the same depth often do. Pages come from a pool of POOL and are
 * reused as soon as freed, never while a hit freeing them is in flight.
 *
 * -DLEVEL_BY_NEST builds, for contrast, a slot per nesting level of the
 * recorder's own programs (mmr_level(): raised only while a program holds a
 * batch, not during the kernel's dispatch), which records some hits twice.
 *
 * Output: "hits H skipped S deferred F recovered R unrecorded U duplicated D
 * backup_skipped B both_skipped W fooled L deferred_lost E": W hits both programs skipped, L
 * hits the main program skipped whose backup took a slot left by an earlier
 * hit (same key, same page) for its own, E hits the main program left to a
 * backup that was skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MAX_DEPTH
#define MAX_DEPTH 4
#endif
#ifndef POOL
#define POOL 6
#endif
#ifndef CTXS
#define CTXS 3
#endif

static void interrupt_point(int where);
#define MMR_INTERRUPT_POINT(n) interrupt_point(n)
#include "mmr_bk_slots.h"

static struct mmr_bk_slots slots __attribute__((unused));
static int active[2];
static unsigned long misses[2], recovered, deferred, hits, both, fooled, deferred_lost;
static int deferred_at[MAX_DEPTH + 1]; /* per hit in flight: its main program found no slot */
static unsigned char *recorded, *main_skipped;
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

#ifdef LEVEL_BY_NEST
static unsigned int nest;                  /* mmr_nest.level: batches held by running programs */
static unsigned long long last[MAX_DEPTH + 4];

static void body(int prog, unsigned long id, unsigned long long key, unsigned long long page)
{
	(void)key;
	unsigned int l = nest;
	interrupt_point(21);
	if (prog == 0) {
		last[l] = page;
		nest++; /* mmr_enter .. mmr_exit around the record */
		interrupt_point(22);
		record(id);
		nest--;
	} else if (last[l] == page) {
		last[l] = 0;
	} else {
		nest++;
		recovered++;
		record(id);
		nest--;
	}
	interrupt_point(23);
}
#else
static void body(int prog, unsigned long id, unsigned long long key, unsigned long long page)
{
	interrupt_point(21);
	if (prog == 0) {
		if (mmr_bk_claim(&slots, key, page)) {
			deferred++;
			deferred_at[depth - 1] = 1;
		} else {
			interrupt_point(22);
			record(id);
		}
	} else if (mmr_bk_release(&slots, key, page)) {
		recovered++;
		record(id);
	} else if (main_skipped[id]) {
		fooled++;
	}
	interrupt_point(23);
}
#endif

static int dispatch(int prog, unsigned long id, unsigned long long key, unsigned long long page)
{
	int skipped = 0;
	interrupt_point(1);
	if (++active[prog] != 1) {
		misses[prog]++;
		skipped = 1;
		if (prog == 0)
			main_skipped[id] = 1;
	} else {
		interrupt_point(2); /* the run context, rcu_read_lock, the statistics' clock */
		body(prog, id, key, page);
		interrupt_point(3);
	}
	active[prog]--;
	interrupt_point(4);
	return skipped;
}

static void hit(void)
{
	unsigned long id = hits++;
	if (hits >= cap) {
		recorded = realloc(recorded, cap * 2);
		main_skipped = realloc(main_skipped, cap * 2);
		memset(recorded + cap, 0, cap);
		memset(main_skipped + cap, 0, cap);
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
	/* the raw context's address: its stack depth and call path */
	unsigned long long key = 0xffffc90000000000ULL + 0x4000ULL * (unsigned)(depth + 1) + 8 * (xorshift() % CTXS);
	deferred_at[depth] = 0;
	in_flight[depth++] = page;
	int s = dispatch(0, id, key, page);
	interrupt_point(5); /* between the two dispatches: the tracepoint's loop over its probes */
	int b = dispatch(1, id, key, page);
	both += s && b;
	deferred_lost += deferred_at[depth - 1] && b;
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
	main_skipped = calloc(cap, 1);
	for (unsigned long i = 0; i < n; i++)
		hit();
	unsigned long unrecorded = 0, dup = 0;
	for (unsigned long id = 0; id < hits; id++) {
		unrecorded += recorded[id] == 0;
		dup += recorded[id] > 1;
	}
	printf("hits %lu skipped %lu deferred %lu recovered %lu unrecorded %lu duplicated %lu backup_skipped %lu "
	       "both_skipped %lu fooled %lu deferred_lost %lu\n", hits, misses[0], deferred, recovered, unrecorded, dup,
	       misses[1], both, fooled, deferred_lost);
	return 0;
}
