/* tlb_flush3 (will-it-scale tests/tlb_flush3.c): TLB flush of a separate file's shared mapping
 * (-s REGION; will-it-scale uses 128 MiB). The testcase is in tlb_flush.h. */
static const char *wl_name = "tlb_flush3";
#define TLB_FILE 1
#define TLB_FLAGS MAP_SHARED
#define TLB_AFTER 1
#include "tlb_flush.h"
