/* mprotect-split: the parent maps an anonymous region of 2N+1 pages and writes
 * it (one VMA, one anon_vma), then forks N children; every child's copy of the
 * VMA hangs off the parent's ROOT anon_vma. Child k loops on its own page
 * 2k+1: mprotect(PROT_READ) splits its VMA in three (__split_vma ->
 * anon_vma_clone, which locks the root anon_vma) and mprotect(PROT_READ |
 * PROT_WRITE) merges the pieces back (vma_merge -> vma_prepare locks the root
 * anon_vma; the removed pieces' anon_vma chains are unlinked under it too).
 * Unlike mmap-merge, whose remapped page gets an anon_vma of its own after the
 * first round (a forked VMA's anon_vma is not reusable: its chain is not
 * singular), every iteration here takes the shared root: the anon_vma
 * contention the 2011 review asked about, on current kernels.
 * One iteration = one split + merge. */
static const char *wl_name = "mprotect-split";
#define WL_HAVE_SETUP
#include "harness.h"

static char *region;

static void setup(void)
{
	if (wl_opt.threads) {
		fprintf(stderr, "%s: the children must be forked to share one root anon_vma; use -m processes\n", wl_name);
		exit(2);
	}
	unsigned long size = (2UL * wl_opt.tasks + 1) * wl_pgsize;
	region = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		wl_die("mmap region");
	for (unsigned long i = 0; i < size; i += wl_pgsize)
		region[i] = 1;
}

static void testcase(struct wl_task *t)
{
	char *page = region + (2UL * t->nr + 1) * wl_pgsize;

	while (!wl_stopped()) {
		if (mprotect(page, wl_pgsize, PROT_READ))
			wl_die("mprotect split");
		if (mprotect(page, wl_pgsize, PROT_READ | PROT_WRITE))
			wl_die("mprotect merge");
		t->iterations++;
	}
}
