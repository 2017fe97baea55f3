/* Drives bpf/mmr_lc_pair.h's task state -- the code bpf/lock_contention.c runs to tell a wait cut by the
 * recording's start from an end whose begin was lost -- with one task's lock:contention_{begin,end} events
 * since the start, on several locks, as the program sees them (a begin the kernel skipped is absent).
 * The task was alive at the start: the recorder gave it its state then.
 *
 * stdin: one event per line:
 *   "b ADDR FLAGS"  contention_begin the program kept in its map
 *   "f ADDR FLAGS"  contention_begin the program saw but could not keep (no room in the map)
 *   "e ADDR"        contention_end
 *   "n ADDR"        contention_end inside our contention_begin program on the CPU (an interrupt's)
 * stdout: one line per end that reaches the program without an inner-wait_lock fold:
 *   "wait ADDR FLAGS"  a wait with its begin, written
 *   "cut ADDR"         an end without a begin, written as cut by the start
 *   "lost ADDR"        an end without a begin whose begin was lost: counted, not written
 */
#include <stdio.h>
#include "mmr_lc_pair.h"

#define LOCKS 16

int main(void)
{
	struct mmr_lc_task t = {0};
	struct mmr_lc_pairing p[LOCKS];
	unsigned long addr[LOCKS];
	int used[LOCKS] = {0};
	char op;
	unsigned long a;
	unsigned int flags;

	while (scanf(" %c %lu", &op, &a) == 2) {
		int i, slot = -1, free_slot = -1;
		for (i = 0; i < LOCKS; i++) {
			if (used[i] && addr[i] == a)
				slot = i;
			else if (!used[i] && free_slot < 0)
				free_slot = i;
		}
		if (op == 'b' || op == 'f') {
			if (scanf("%u", &flags) != 1)
				return 2;
			if (slot >= 0) {
				if (mmr_lc_begin_again(&p[slot], flags) == MMR_LC_STALE && !mmr_lc_may_nest(flags))
					t.settled = 1; /* as bpf/lock_contention.c does for a new wait after a lost end */
			} else if (op == 'f' || free_slot < 0) {
				mmr_lc_task_began(&t, flags, 0);
			} else {
				used[free_slot] = 1;
				addr[free_slot] = a;
				mmr_lc_open(&p[free_slot], flags);
				mmr_lc_task_began(&t, flags, 1);
			}
		} else if (op == 'e' || op == 'n') {
			if (slot >= 0) {
				if (mmr_lc_end_closes(&p[slot])) {
					printf("wait %lu %u\n", a, p[slot].flags);
					used[slot] = 0;
					mmr_lc_task_closed(&t);
				}
			} else if (op == 'n' || !mmr_lc_cut_by_start(&t)) {
				printf("lost %lu\n", a);
			} else {
				printf("cut %lu\n", a);
			}
		} else {
			return 2;
		}
	}
	return 0;
}
