/* mmap-file (2011 review of the i_mmap_lock -> mutex conversion): N forked
 * tasks each loop mmap + munmap of one page of ONE shared file. Every mmap
 * links a VMA into the file's i_mmap tree and every munmap unlinks it, both
 * under i_mmap_rwsem held for write, so the tasks contend on that one lock
 * (their mmap_locks are private). With -f each task also writes the page
 * between mmap and munmap (a shared-file fault per iteration).
 * One iteration = one mmap+munmap pair. */
static const char *wl_name = "mmap-file";
#define WL_HAVE_SETUP
#include "harness.h"

static int shared_fd = -1;

static void setup(void)
{
	shared_fd = wl_tmpfile(wl_opt.region);
}

static void testcase(struct wl_task *t)
{
	/* Tasks spread over the file's pages so that only the i_mmap lock is shared. */
	unsigned long pages = wl_opt.region / wl_pgsize;
	off_t off = (off_t)((t->nr % (pages ? pages : 1)) * wl_pgsize);

	while (!wl_stopped()) {
		char *c = mmap(NULL, wl_pgsize, PROT_READ | PROT_WRITE, MAP_SHARED, shared_fd, off);
		if (c == MAP_FAILED)
			wl_die("mmap");
		if (wl_opt.flag)
			c[0] = 1;
		if (munmap(c, wl_pgsize))
			wl_die("munmap");
		t->iterations++;
	}
}
