/* mmap2 (will-it-scale tests/mmap2.c): separate file mmap/munmap.
 * Each task maps REGION (-s, default 128 MiB) and unmaps it without touching it.
 * One iteration = one mmap+munmap pair. */
static const char *wl_name = "mmap2";
#include "harness.h"

static void testcase(struct wl_task *t)
{
	unsigned long size = wl_opt.region;
	int fd = wl_tmpfile(size);

	while (!wl_stopped()) {
		char *c = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		if (c == MAP_FAILED)
			wl_die("mmap");
		if (munmap(c, size))
			wl_die("munmap");
		t->iterations++;
	}
	if (fd >= 0)
		close(fd);
}
