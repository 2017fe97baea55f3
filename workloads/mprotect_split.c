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
#include "shared_anon_vma.h"

static void testcase(struct wl_task *t)
{
	char *page = anon_vma_page(t);

	while (!wl_stopped()) {
		if (mprotect(page, wl_pgsize, PROT_READ))
			wl_die("mprotect split");
		if (mprotect(page, wl_pgsize, PROT_READ | PROT_WRITE))
			wl_die("mprotect merge");
		t->iterations++;
	}
}
