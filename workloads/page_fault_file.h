/* The will-it-scale file page-fault testcase, shared by page_fault2 (private
 * mapping) and page_fault3 (shared), which set PF_FLAGS, the mmap flags.
 * Each task maps its own REGION of a separate file, writes one byte in every
 * page (one fault per page), unmaps it, repeats. One iteration = one page. */
#include "harness.h"

static void testcase(struct wl_task *t)
{
	unsigned long size = wl_opt.region;
	int fd = wl_tmpfile(size);

	while (!wl_stopped()) {
		char *c = mmap(NULL, size, PROT_READ | PROT_WRITE, PF_FLAGS, fd, 0);
		if (c == MAP_FAILED)
			wl_die("mmap");
		for (unsigned long i = 0; i < size && !wl_stopped(); i += wl_pgsize) {
			c[i] = 0;
			t->iterations++;
		}
		if (munmap(c, size))
			wl_die("munmap");
	}
	close(fd);
}
