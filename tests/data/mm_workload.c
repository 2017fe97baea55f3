// Live-test workload: threads sharing one mm that fault, mprotect, madvise and
// munmap private anonymous regions in a loop, so they contend on mmap_lock,
// flush TLBs (also remotely, the mm runs on several CPUs) and free pages in
// mmu_gather batches.  usage: mm_workload THREADS ITERATIONS PAGES [time]
// With "time", prints the wall time of the threads' work and the CPU time
// (user + system, all threads) of the process, in ns, on stdout
// (benchmarks/record_overhead.py: excludes tracer start-up and exec).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int iterations, pages;
static long page_size;

static void *worker(void *arg)
{
	(void)arg;
	for (int i = 0; i < iterations; i++) {
		size_t len = (size_t)pages * page_size;
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			perror("mmap");
			exit(1);
		}
		for (int k = 0; k < pages; k++)
			p[(size_t)k * page_size] = (char)k;
		mprotect(p, page_size, PROT_READ);
		madvise(p + page_size, page_size, MADV_DONTNEED);
		munmap(p, len);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4 && !(argc == 5 && strcmp(argv[4], "time") == 0)) {
		fprintf(stderr, "usage: %s THREADS ITERATIONS PAGES [time]\n", argv[0]);
		return 2;
	}
	int threads = atoi(argv[1]);
	iterations = atoi(argv[2]);
	pages = atoi(argv[3]);
	page_size = sysconf(_SC_PAGESIZE);
	pthread_t tid[64];
	if (threads < 1 || threads > 64)
		return 2;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int t = 0; t < threads; t++)
		pthread_create(&tid[t], NULL, worker, NULL);
	for (int t = 0; t < threads; t++)
		pthread_join(tid[t], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (argc == 5) {
		struct rusage ru;
		getrusage(RUSAGE_SELF, &ru);
		long long cpu = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
				(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
		printf("%lld %lld\n", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec), cpu);
	}
	return 0;
}
