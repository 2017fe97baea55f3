"""mmreplay: the trace format, the simulator, analytics and the CLI (no bcc needed)."""

import os as _os

# polars' allocator (jemalloc) keeps freed pages for 0.5-1 s (polars' defaults): a replay's loader frees hundreds
# of MB at a time and the process's peak was those kept pages plus the next stage's (the 60-s recording of
# docs/SCALING.md: the loader's peak 1.90 -> 1.62 GB with them given back at once). polars appends the value
# found here to its defaults when it is first imported (jemalloc takes the last), so it is set here, before any
# module of the package imports polars; a value the user set is kept, and a program that imported polars
# before this package keeps its own.
_os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
