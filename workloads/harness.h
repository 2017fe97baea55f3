/*
 * Shared driver of the mmreplay workload programs (modelled on will-it-scale's
 * main.c): start N tasks as processes or threads, let each run testcase() in a
 * loop that bumps its own iteration counter, stop them all after the given
 * time or on SIGINT/SIGTERM, print one summary line and exit 0.
 *
 * A workload file defines the testcase (and optional setup) and then
 * includes this header:
 *
 *   static const char *wl_name = "page_fault1";
 *   static void testcase(struct wl_task *t) { while (!wl_stopped()) { ...; t->iterations++; } }
 *
 * Command line (every program): -t TASKS -d SECONDS (0: until killed)
 * -m processes|threads -s REGION_BYTES -n COUNT -f (flag) -w DIR; -s, -n and -f
 * mean what each workload says.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WL_MAX_TASKS 4096

struct wl_task {
	unsigned long long iterations;
	int nr;                       /* 0 .. tasks-1 */
	char pad[64 - sizeof(unsigned long long) - sizeof(int)];
};

struct wl_shared {
	volatile int stop;
	char pad[60];
	struct wl_task task[WL_MAX_TASKS];
};

struct wl_options {
	int tasks;
	double seconds;
	int threads;                  /* 0: processes */
	unsigned long region;         /* bytes, workload-specific meaning */
	int flag;                     /* workload-specific switch (-f) */
	long count;                   /* workload-specific count (-n), 0: its default */
	const char *dir;              /* where temporary files go */
};

static struct wl_shared *wl_shared;
static struct wl_options wl_opt = { 1, 1.0, 0, 128UL << 20, 0, 0, "/tmp" };
static unsigned long wl_pgsize;

static inline int wl_stopped(void) { return wl_shared->stop; }

static void wl_die(const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", wl_name, what, strerror(errno));
	_exit(1);
}

/* An unlinked temporary file of `size` bytes in the options' directory. */
static __attribute__((unused)) int wl_tmpfile(unsigned long size)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/mmreplay-%s.XXXXXX", wl_opt.dir, wl_name);
	int fd = mkstemp(path);
	if (fd < 0)
		wl_die("mkstemp");
	if (ftruncate(fd, (off_t)size))
		wl_die("ftruncate");
	unlink(path);
	return fd;
}

static void testcase(struct wl_task *t);
#ifdef WL_HAVE_SETUP
static void setup(void);           /* once, in the parent, before the tasks start */
#endif
#ifdef WL_HAVE_CLEANUP
static void cleanup(void);         /* once, in the parent, after the tasks stopped */
#endif
#ifdef WL_HAVE_SUMMARY
static void summary(FILE *out);    /* extra " key=value" fields of the summary line */
#endif

static void *wl_thread(void *arg)
{
	testcase(arg);
	return NULL;
}

static void wl_usage(void)
{
	fprintf(stderr, "usage: %s [-t TASKS] [-d SECONDS] [-m processes|threads] [-s BYTES] [-n COUNT] [-f] [-w DIR]\n", wl_name);
	exit(2);
}

static double wl_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int c;
	while ((c = getopt(argc, argv, "t:d:m:s:n:fw:")) != -1) {
		switch (c) {
		case 't': wl_opt.tasks = atoi(optarg); break;
		case 'd': wl_opt.seconds = atof(optarg); break;
		case 'm':
			if (!strcmp(optarg, "threads")) wl_opt.threads = 1;
			else if (!strcmp(optarg, "processes")) wl_opt.threads = 0;
			else wl_usage();
			break;
		case 's': wl_opt.region = strtoul(optarg, NULL, 0); break;
		case 'f': wl_opt.flag = 1; break;
		case 'n': wl_opt.count = atol(optarg); break;
		case 'w': wl_opt.dir = optarg; break;
		default: wl_usage();
		}
	}
	if (optind != argc || wl_opt.tasks < 1 || wl_opt.tasks > WL_MAX_TASKS || wl_opt.seconds < 0 || !wl_opt.region || wl_opt.count < 0)
		wl_usage();
	wl_pgsize = (unsigned long)getpagesize();

	wl_shared = mmap(NULL, sizeof(*wl_shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (wl_shared == MAP_FAILED)
		wl_die("mmap shared counters");

	/* Only the parent's main thread takes the stop signals; tasks watch wl_shared->stop. */
	sigset_t stopsigs;
	sigemptyset(&stopsigs);
	sigaddset(&stopsigs, SIGINT);
	sigaddset(&stopsigs, SIGTERM);
	sigprocmask(SIG_BLOCK, &stopsigs, NULL);

#ifdef WL_HAVE_SETUP
	setup();
#endif
	pid_t parent = getpid();
	static pid_t pids[WL_MAX_TASKS];
	static pthread_t tids[WL_MAX_TASKS];
	double start = wl_now();
	for (int i = 0; i < wl_opt.tasks; i++) {
		struct wl_task *t = &wl_shared->task[i];
		t->nr = i;
		if (wl_opt.threads) {
			if ((errno = pthread_create(&tids[i], NULL, wl_thread, t)))
				wl_die("pthread_create");
			continue;
		}
		pids[i] = fork();
		if (pids[i] < 0)
			wl_die("fork");
		if (pids[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(1);
			testcase(t);
			_exit(0);
		}
	}

	int sig = 0;
	if (wl_opt.seconds > 0) {
		struct timespec timeout;
		timeout.tv_sec = (time_t)wl_opt.seconds;
		timeout.tv_nsec = (long)((wl_opt.seconds - (double)timeout.tv_sec) * 1e9);
		sig = sigtimedwait(&stopsigs, NULL, &timeout);
	} else {
		while ((sig = sigwaitinfo(&stopsigs, NULL)) < 0 && errno == EINTR)
			;
	}
	wl_shared->stop = 1;
	__sync_synchronize();

	int failed = 0;
	for (int i = 0; i < wl_opt.tasks; i++) {
		if (wl_opt.threads) {
			pthread_join(tids[i], NULL);
			continue;
		}
		int status;
		while (waitpid(pids[i], &status, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			failed++;
	}
	double elapsed = wl_now() - start;
#ifdef WL_HAVE_CLEANUP
	cleanup();
#endif
	unsigned long long total = 0;
	for (int i = 0; i < wl_opt.tasks; i++)
		total += wl_shared->task[i].iterations;
	struct rusage ru;
	getrusage(RUSAGE_CHILDREN, &ru);
	long minflt = ru.ru_minflt;
	getrusage(RUSAGE_SELF, &ru);
	minflt += ru.ru_minflt;
	printf("%s mode=%s tasks=%d seconds=%.3f iterations=%llu per_second=%.0f minflt=%ld stopped_by=%s failed=%d",
	       wl_name, wl_opt.threads ? "threads" : "processes", wl_opt.tasks, elapsed, total,
	       elapsed > 0 ? total / elapsed : 0.0, minflt, sig > 0 ? "signal" : "time", failed);
#ifdef WL_HAVE_SUMMARY
	summary(stdout);
#endif
	putchar('\n');
	fflush(stdout);
	return failed ? 1 : 0;
}
