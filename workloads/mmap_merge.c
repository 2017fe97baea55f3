/* mmap-merge (2011 review of the anon_vma lock -> mutex conversion): the
 * parent maps an anonymous region of 2N+1 pages and writes it, so the VMA gets
 * an anon_vma, then forks N children that all share that root anon_vma. Child
 * k loops on its own page 2k+1: munmap (splits its VMA: anon_vma_clone/unlink
 * under the ROOT anon_vma lock) and mmap(MAP_FIXED) of a fresh anonymous page
 * in the hole (merges back with its neighbours: vma_merge under the same
 * lock), then writes it (one anonymous fault). The children's mmap_locks are
 * private; what they share is the root anon_vma's rwsem.
 * One iteration = one munmap + mmap(MAP_FIXED) + write. */
static const char *wl_name = "mmap-merge";
#include "shared_anon_vma.h"

static void testcase(struct wl_task *t)
{
	char *page = anon_vma_page(t);

	while (!wl_stopped()) {
		if (munmap(page, wl_pgsize))
			wl_die("munmap");
		char *c = mmap(page, wl_pgsize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (c != page)
			wl_die("mmap MAP_FIXED");
		c[0] = 1;
		t->iterations++;
	}
}
