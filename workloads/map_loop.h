/* The will-it-scale map/unmap testcase shared by mmap1, mmap2 and page_fault1/2/3.
 * Each task maps its own REGION (-s, default 128 MiB), anonymous or of a separate
 * file, optionally writes one byte in every page (one fault per page), unmaps it,
 * repeats. The including program sets
 *   MAP_LOOP_FLAGS  the mmap flags (MAP_PRIVATE | MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED);
 *   MAP_LOOP_TOUCH  1: one iteration per page written; 0: per mmap+munmap pair. */
#include "harness.h"

static void testcase(struct wl_task *t)
{
	unsigned long size = wl_opt.region;
	int fd = (MAP_LOOP_FLAGS) & MAP_ANONYMOUS ? -1 : wl_tmpfile(size);

	while (!wl_stopped()) {
		char *c = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_LOOP_FLAGS, fd, 0);
		if (c == MAP_FAILED)
			wl_die("mmap");
#if MAP_LOOP_TOUCH
		for (unsigned long i = 0; i < size && !wl_stopped(); i += wl_pgsize) {
			c[i] = 0;
			t->iterations++;
		}
#endif
		if (munmap(c, size))
			wl_die("munmap");
#if !MAP_LOOP_TOUCH
		t->iterations++;
#endif
	}
	if (fd >= 0)
		close(fd);
}
