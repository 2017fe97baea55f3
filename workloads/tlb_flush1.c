/* tlb_flush1 (will-it-scale tests/tlb_flush1.c): TLB flush of a separate file's private mapping
 * (-s REGION; will-it-scale uses 128 MiB). The testcase is in tlb_flush.h. */
static const char *wl_name = "tlb_flush1";
#define TLB_FILE 1
#define TLB_FLAGS MAP_PRIVATE
#define TLB_AFTER 0
#include "tlb_flush.h"
