/* page_fault2 (will-it-scale tests/page_fault2.c): separate file, private mapping page fault
 * (-s REGION, default 128 MiB). The testcase is in map_loop.h. */
static const char *wl_name = "page_fault2";
#define MAP_LOOP_FLAGS MAP_PRIVATE
#define MAP_LOOP_TOUCH 1
#include "map_loop.h"
