/* Setup shared by mmap-merge and mprotect-split: the parent maps an anonymous
 * region of 2N+1 pages and writes it (one VMA, one anon_vma) before forking
 * the N children, so every child's copy of the VMA hangs off that ROOT
 * anon_vma. Child k works on its own page 2k+1: anon_vma_page(t). */
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

static char *anon_vma_page(const struct wl_task *t)
{
	return region + (2UL * t->nr + 1) * wl_pgsize;
}
