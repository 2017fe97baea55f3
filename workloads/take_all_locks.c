/* take-all-locks: mm_take_all_locks() against faulting neighbours.
 *
 * Setup (parent): -n COUNT (default 256) one-page files and an area of 2*COUNT
 * page slots; slot 2i maps file i MAP_SHARED, slot 2i+1 is an anonymous page
 * that is written, so it gets an anon_vma of its own (its neighbours are file
 * VMAs, nothing to share with). The mm then holds COUNT file VMAs on COUNT
 * distinct address_spaces and COUNT anon VMAs on COUNT anon_vmas.
 *
 * Task 0, the locker, loops KVM_CREATE_VM on /dev/kvm + close: creating a VM
 * registers an mmu notifier on the caller's mm, and mmu_notifier_register
 * runs mm_take_all_locks(): mmap_lock for write, every VMA write-locked, then
 * every i_mmap_rwsem and every anon_vma root rwsem of the mm, nested, COUNT
 * deep each. One locker iteration = one VM created and destroyed.
 *
 * The other tasks fault on the same files:
 *  - processes: forked after setup, each loops over the files: mmap one page
 *    of file i, write it, munmap -- i_mmap_rwsem of file i for write twice
 *    (vma link/unlink), which the locker holds while it takes all locks.
 *  - threads: in the locker's mm, each loops over the slots: write the page
 *    (a fault under the VMA lock or mmap_lock for read) and MADV_DONTNEED it,
 *    which block while the locker holds mmap_lock / the VMA write locks.
 * One faulter iteration = one page mapped (or zapped) and faulted. */
static const char *wl_name = "take-all-locks";
#define WL_HAVE_SETUP
#define WL_HAVE_SUMMARY
#include "harness.h"
#include <linux/kvm.h>
#include <sys/ioctl.h>

static long nfiles;
static int *fds;
static char *area;
static int kvm_fd = -1;

static void setup(void)
{
	nfiles = wl_opt.count ? wl_opt.count : 256;
	struct rlimit rl;
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < (rlim_t)nfiles + 64) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0)
		wl_die("open /dev/kvm");
	fds = calloc((size_t)nfiles, sizeof(*fds));
	area = mmap(NULL, 2 * nfiles * wl_pgsize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!fds || area == MAP_FAILED)
		wl_die("allocate slots");
	for (long i = 0; i < nfiles; i++) {
		fds[i] = wl_tmpfile(wl_pgsize);
		char *f = area + 2 * i * wl_pgsize;
		if (mmap(f, wl_pgsize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fds[i], 0) != f)
			wl_die("mmap file slot");
		char *a = f + wl_pgsize;
		if (mmap(a, wl_pgsize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != a)
			wl_die("mmap anon slot");
		f[0] = 1;
		a[0] = 1;
	}
}

static void locker(struct wl_task *t)
{
	while (!wl_stopped()) {
		int vm = ioctl(kvm_fd, KVM_CREATE_VM, 0);
		if (vm < 0)
			wl_die("ioctl KVM_CREATE_VM");
		close(vm);
		t->iterations++;
	}
}

static void file_faulter(struct wl_task *t)
{
	for (long i = t->nr; !wl_stopped(); i++) {
		char *c = mmap(NULL, wl_pgsize, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i % nfiles], 0);
		if (c == MAP_FAILED)
			wl_die("mmap");
		c[0] = 2;
		if (munmap(c, wl_pgsize))
			wl_die("munmap");
		t->iterations++;
	}
}

static void slot_faulter(struct wl_task *t)
{
	for (long i = t->nr; !wl_stopped(); i++) {
		char *c = area + (i % (2 * nfiles)) * wl_pgsize;
		c[0] = 3;
		if (madvise(c, wl_pgsize, MADV_DONTNEED))
			wl_die("madvise");
		t->iterations++;
	}
}

static void testcase(struct wl_task *t)
{
	if (t->nr == 0)
		locker(t);
	else if (wl_opt.threads)
		slot_faulter(t);
	else
		file_faulter(t);
}

static void summary(FILE *out)
{
	unsigned long long faults = 0;
	for (int i = 1; i < wl_opt.tasks; i++)
		faults += wl_shared->task[i].iterations;
	fprintf(out, " vms_created=%llu vmas=%ld faulter_iterations=%llu", wl_shared->task[0].iterations, 2 * nfiles, faults);
}
