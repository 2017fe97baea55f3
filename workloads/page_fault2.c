/* page_fault2 (will-it-scale tests/page_fault2.c): separate file, private mapping page fault.
 * Each task maps its own REGION (-s, default 128 MiB), writes one byte in every
 * page (one fault per page), unmaps it, repeats. One iteration = one page. */
static const char *wl_name = "page_fault2";
#include "harness.h"

static void testcase(struct wl_task *t)
{
	unsigned long size = wl_opt.region;
	int fd = wl_tmpfile(size);

	while (!wl_stopped()) {
		char *c = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		if (c == MAP_FAILED)
			wl_die("mmap");
		for (unsigned long i = 0; i < size && !wl_stopped(); i += wl_pgsize) {
			c[i] = 0;
			t->iterations++;
		}
		if (munmap(c, size))
			wl_die("munmap");
	}
	if (fd >= 0)
		close(fd);
}
