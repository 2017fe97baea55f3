/* Which source a compiled part of the simulator was built from.
 *
 * setup.py compiles this file into each extension (engine.c's and
 * flatten.c's) with MMR_SOURCE_SHA256 set to the SHA-256 of that extension's
 * main source. replay/sim/cbuild.py reads it back before loading the part and
 * refuses a library built from another source (a stale install or in-place
 * build next to an edited checkout), whose structures may no longer match the
 * Python code that drives it.
 */
#ifndef MMR_SOURCE_SHA256
#error "MMR_SOURCE_SHA256 must be defined (setup.py does)"
#endif

__attribute__((visibility("default"))) const char mmr_source_sha256[65] = MMR_SOURCE_SHA256;
