/* tlb_flush2 (will-it-scale tests/tlb_flush2.c): TLB flush of an anonymous private mapping
 * (-s REGION; will-it-scale uses 1 MiB). The testcase is in tlb_flush.h. */
static const char *wl_name = "tlb_flush2";
#define TLB_FILE 0
#define TLB_FLAGS (MAP_PRIVATE | MAP_ANONYMOUS)
#define TLB_AFTER 0
#include "tlb_flush.h"
