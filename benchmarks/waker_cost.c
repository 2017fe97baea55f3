/* The waker's cost of a wake-up: FUTEX_WAKE timed in the waking thread, once with a
 * sleeper to wake on another CPU and once with none. Their difference is what
 * try_to_wake_up() (select_task_rq, the wake list, the IPI) costs the waker, the
 * figure Costs.mutex_waker_ns stands for (docs/VALIDATION.md section b).
 *
 *   waker_cost ROUNDS WAKER_CPU SLEEPER_CPU
 * prints "sleeper p10 p50 p90 none p10 p50 p90" in ns. */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static _Atomic int word, rounds_done, stop;
static int nobody; /* a futex word no thread waits on */
static int sleeper_cpu;

static long futex_on(void *uaddr, int op, int val)
{
	return syscall(SYS_futex, uaddr, op, val, NULL, NULL, 0);
}

static long futex(int op, int val)
{
	return futex_on(&word, op, val);
}

static long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void pin(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	pthread_setaffinity_np(pthread_self(), sizeof(s), &s);
}

static void *sleeper(void *arg)
{
	(void)arg;
	pin(sleeper_cpu);
	while (!stop) {
		while (word == 0 && !stop)
			futex(FUTEX_WAIT_PRIVATE, 0);
		word = 0;
		rounds_done++;
	}
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: waker_cost ROUNDS WAKER_CPU SLEEPER_CPU\n");
		return 2;
	}
	int n = atoi(argv[1]);
	sleeper_cpu = atoi(argv[3]);
	long *with = calloc(n, sizeof(long)), *none = calloc(n, sizeof(long));
	pthread_t t;
	if (n <= 0 || !with || !none || pthread_create(&t, NULL, sleeper, NULL))
		return 1;
	pin(atoi(argv[2]));
	for (int i = 0; i < n; i++) {
		long t0 = now_ns();
		futex_on(&nobody, FUTEX_WAKE_PRIVATE, 1); /* the same call with nobody to wake */
		none[i] = now_ns() - t0;
		usleep(200); /* the sleeper goes to sleep, its CPU idle */
		int r = rounds_done;
		word = 1;
		t0 = now_ns();
		futex(FUTEX_WAKE_PRIVATE, 1);
		with[i] = now_ns() - t0;
		while (rounds_done == r)
			;
	}
	stop = 1;
	word = 1;
	futex(FUTEX_WAKE_PRIVATE, 1);
	pthread_join(t, NULL);
	qsort(with, n, sizeof(long), cmp);
	qsort(none, n, sizeof(long), cmp);
	printf("%ld %ld %ld %ld %ld %ld\n", with[n / 10], with[n / 2], with[9 * n / 10], none[n / 10], none[n / 2],
	       none[9 * n / 10]);
	return 0;
}
