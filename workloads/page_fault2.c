/* page_fault2 (will-it-scale tests/page_fault2.c): separate file, private mapping page fault
 * (-s REGION, default 128 MiB). The testcase is in page_fault_file.h. */
static const char *wl_name = "page_fault2";
#define PF_FLAGS MAP_PRIVATE
#include "page_fault_file.h"
