/* page_fault1 (will-it-scale tests/page_fault1.c): anonymous memory page fault.
 * Each task maps its own REGION (-s, default 128 MiB), writes one byte in every
 * page (one fault per page), unmaps it, repeats. One iteration = one page.
 * The testcase is in map_loop.h. */
static const char *wl_name = "page_fault1";
#define MAP_LOOP_FLAGS (MAP_PRIVATE | MAP_ANONYMOUS)
#define MAP_LOOP_TOUCH 1
#include "map_loop.h"
