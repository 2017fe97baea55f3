/* page_fault3 (will-it-scale tests/page_fault3.c): separate file, shared mapping page fault
 * (-s REGION, default 128 MiB). The testcase is in page_fault_file.h. */
static const char *wl_name = "page_fault3";
#define PF_FLAGS MAP_SHARED
#include "page_fault_file.h"
