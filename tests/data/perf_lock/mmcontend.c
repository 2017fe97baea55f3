/* N threads: each loops mmap(1 MiB anon) + touch + munmap: contends mmap_lock. */
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
static int iters;
static void *work(void *a) {
    for (int i = 0; i < iters; i++) {
        char *p = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (int j = 0; j < (1 << 20); j += 4096) p[j] = 1;
        munmap(p, 1 << 20);
    }
    return a;
}
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 4;
    iters = argc > 2 ? atoi(argv[2]) : 2000;
    pthread_t t[64];
    for (int i = 0; i < n; i++) pthread_create(&t[i], 0, work, 0);
    for (int i = 0; i < n; i++) pthread_join(t[i], 0);
    return 0;
}
