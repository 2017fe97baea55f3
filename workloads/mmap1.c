/* mmap1 (will-it-scale tests/mmap1.c): anonymous memory mmap/munmap.
 * Each task maps REGION (-s, default 128 MiB) and unmaps it without touching it.
 * One iteration = one mmap+munmap pair. The testcase is in map_loop.h. */
static const char *wl_name = "mmap1";
#define MAP_LOOP_FLAGS (MAP_PRIVATE | MAP_ANONYMOUS)
#define MAP_LOOP_TOUCH 0
#include "map_loop.h"
