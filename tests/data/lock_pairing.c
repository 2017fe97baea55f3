/* Drives bpf/mmr_lc_pair.h -- the pairing code bpf/lock_contention.c runs -- with one task's
 * lock:contention_{begin,end} events on one lock, as bpf/lock_contention.c keeps them in its map.
 *
 * stdin: one event per line: "b FLAGS" (contention_begin) or "e" (contention_end).
 * stdout: one line per outcome, in order:
 *   "wait FIRST_EVENT FLAGS BEGINS"  a wait closed by an end (FIRST_EVENT: index of its first begin)
 *   "stale FIRST_EVENT"              an open wait whose end was lost (dropped, counted unmatched)
 *   "unmatched EVENT"                an end with no open wait
 *   "open FIRST_EVENT FLAGS BEGINS"  a wait still open after the last event
 */
#include <stdio.h>
#include "mmr_lc_pair.h"

int main(void)
{
	struct mmr_lc_pairing p = {0};
	int open = 0, first_event = 0, i = 0;
	char op;
	unsigned int flags;

	while (scanf(" %c", &op) == 1) {
		if (op == 'b') {
			if (scanf("%u", &flags) != 1)
				return 2;
			if (!open) {
				mmr_lc_open(&p, flags);
				open = 1;
				first_event = i;
			} else if (mmr_lc_begin_again(&p, flags) == MMR_LC_STALE) {
				printf("stale %d\n", first_event);
				first_event = i;
			}
		} else if (op == 'e') {
			if (!open) {
				printf("unmatched %d\n", i);
			} else if (mmr_lc_end_closes(&p)) {
				printf("wait %d %u %d\n", first_event, p.flags, p.begins);
				open = 0;
			}
		} else {
			return 2;
		}
		i++;
	}
	if (open)
		printf("open %d %u %d\n", first_event, p.flags, p.begins);
	return 0;
}
