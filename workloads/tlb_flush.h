/* The will-it-scale tlb_flush testcase, shared by tlb_flush1/2/3, which set:
 *   TLB_FILE   1: map a separate file (wl_tmpfile), 0: anonymous memory
 *   TLB_FLAGS  the mmap flags
 *   TLB_AFTER  the byte a page reads back after MADV_DONTNEED (0: zapped
 *              private page; 1: the shared file keeps the written data)
 * Each task maps REGION, and for every page writes it, MADV_DONTNEEDs it (zap
 * + TLB flush; in thread mode a shootdown of the other CPUs running the mm)
 * and checks the content. One iteration = one page. */
#include "harness.h"

static void testcase(struct wl_task *t)
{
	unsigned long size = wl_opt.region;
	int fd = TLB_FILE ? wl_tmpfile(size) : -1;

	while (!wl_stopped()) {
		char *addr = mmap(NULL, size, PROT_READ | PROT_WRITE, TLB_FLAGS, fd, 0);
		if (addr == MAP_FAILED)
			wl_die("mmap");
		for (unsigned long i = 0; i < size && !wl_stopped(); i += wl_pgsize) {
			addr[i] = 1;
			if (madvise(addr + i, wl_pgsize, MADV_DONTNEED))
				wl_die("madvise");
			if (addr[i] != TLB_AFTER) {
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
