/* fork-exit churn: each task loops fork() of a child that writes REGION bytes
 * (-s, default 1 MiB here) of memory it inherited copy-on-write, then _exit()s;
 * the task waits for it. Every exit tears down a whole mm: exit_mmap runs a
 * full-mm mmu_gather (tlb_gather_mmu_fullmm) over all its VMAs; fork itself
 * takes the parent's mmap_lock for write and clones every anon_vma chain.
 * One iteration = one fork + exit + wait. */
static const char *wl_name = "fork-exit";
#define WL_HAVE_SETUP
#include "harness.h"

static char *region;

static void setup(void)
{
	region = mmap(NULL, wl_opt.region, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		wl_die("mmap region");
	for (unsigned long i = 0; i < wl_opt.region; i += wl_pgsize)
		region[i] = 1;
}

static void testcase(struct wl_task *t)
{
	while (!wl_stopped()) {
		pid_t pid = fork();
		if (pid < 0)
			wl_die("fork");
		if (pid == 0) {
			for (unsigned long i = 0; i < wl_opt.region; i += wl_pgsize)
				region[i] = 2;
			_exit(0);
		}
		int status;
		while (waitpid(pid, &status, 0) < 0)
			if (errno != EINTR)
				wl_die("waitpid");
		t->iterations++;
	}
}
