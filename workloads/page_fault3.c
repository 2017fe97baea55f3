/* page_fault3 (will-it-scale tests/page_fault3.c): separate file, shared mapping page fault
 * (-s REGION, default 128 MiB). The testcase is in map_loop.h. */
static const char *wl_name = "page_fault3";
#define MAP_LOOP_FLAGS MAP_SHARED
#define MAP_LOOP_TOUCH 1
#include "map_loop.h"
