"""Suite-wide settings.

Hypothesis' per-example deadline (200 ms by default) measures wall time; on the shared 2-CPU machines
these tests run on, a load average of 17 stretched one example of test_compare's t-quantile test to
320 ms and failed a correct test. Speed is checked by benchmarks/, never by a timed test, so the
deadline is off for every property test; a test's own @settings still sets everything else.
"""

from hypothesis import settings

settings.register_profile("mmreplay", deadline=None)
settings.load_profile("mmreplay")
