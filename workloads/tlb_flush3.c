/* tlb_flush3 (will-it-scale tests/tlb_flush3.c): TLB flush of a separate file's shared mapping.
 * Each task maps REGION (-s; will-it-scale uses 128 MiB), and for every page writes
 * it, MADV_DONTNEEDs it (zap + TLB flush; in thread mode a shootdown of the
 * other CPUs running the mm) and checks the content. One iteration = one page. */
static const char *wl_name = "tlb_flush3";
#include "harness.h"

static void testcase(struct wl_task *t)
{
	unsigned long size = wl_opt.region;
	int fd = wl_tmpfile(size);

	while (!wl_stopped()) {
		char *addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (addr == MAP_FAILED)
			wl_die("mmap");
		for (unsigned long i = 0; i < size && !wl_stopped(); i += wl_pgsize) {
			addr[i] = 1;
			if (madvise(addr + i, wl_pgsize, MADV_DONTNEED))
				wl_die("madvise");
			if (addr[i] != 1) {
				errno = EINVAL;
				wl_die("unexpected page content after MADV_DONTNEED");
			}
			t->iterations++;
		}
		if (munmap(addr, size))
			wl_die("munmap");
	}
	if (fd >= 0)
		close(fd);
}
