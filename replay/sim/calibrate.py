"""Costs calibrated from a trace: figures the trace measures replace the defaults.

DESIGN.md §5: "calibrate on the host where you can: the trace itself holds
wakeup→run latencies and flush sizes". What a trace can measure:

* wake-up latency: ``sched_wakeup`` (kind ``wakeup``) → the next ``sched_switch``
  onto the woken task. The simulator's wake-up is ``wakeup_ns`` + Exp(mean
  ``wake_jitter_ns``) before the switch, so ``wakeup_ns`` = 5th percentile and
  ``wake_jitter_ns`` = (median − 5th percentile) / ln 2 (the median of an
  exponential is its mean · ln 2); latencies over 1 ms (run-queue waits) are
  left out.
* a woken lock sleeper's waker -> activation delay: ``sched_waking`` (in the
  releaser's try_to_wake_up, where the engine's wake-up starts) → the same
  task's next ``sched_wakeup`` (where it is activated: on a CPU that idles,
  after an IPI has brought it out of idle), for wake-ups inside the task's
  recorded lock waits: ``lock_wake_samples_ns``, up to 1,000 quantiles, one
  drawn per wake-up of a lock sleeper on top of the wake-up latency (17 µs at
  the median on a quiet 2-vCPU recording here, docs/VALIDATION.md §e item 10).
* a lock sleeper's way to sleep: ``lock_waits``' ``contention_begin`` (fired in
  a sleeping lock's slowpath right before schedule()) → the task's switch-out
  asleep inside that wait: ``lock_sleep_window_ns`` = the median; a grant inside
  it is taken on the CPU (5.9/7.9/13.2 µs p10/p50/p90 on a quiet tlb_flush2
  recording here, where 71 read waits were granted 3.1–6.6 µs in without a switch).
* a sleep's wake-up: a trace's off-CPU intervals (reconstruction's ``Block``
  ops, switch-out → switch-in) hold their wake-up and switch already:
  ``blocks_hold_wakeup`` = 1 with a ``sched_switch`` table (the engine adds none
  to a block; docs/VALIDATION.md §e item 12).
* page freeing: ``page_free_batches`` bursts freed through the gather path:
  ``free_page_ns`` = median of ``dur / (pages − 1)`` over bursts of ≥ 16 pages.
* zapping (tier 2 ``gathers``): per-page gather time minus the freeing and the
  modelled flushes: ``zap_page_ns`` = median of
  ``(dur − flushes · flush cost) / pages − free_page_ns`` over gathers of ≥ 64 pages.
* lock hand-off: a contended acquisition whose wait saw another task release the
  same lock gives release → next owner running; ``line_transfer_ns`` = the
  median over ``lock_holds`` (mmap_lock in tier 1: both sides are recorded) of
  the waiters that stayed on their CPU through the wait (no sched_switch onto
  them inside it): a sleeper's hand-off also holds its wake-up and run-queue
  wait, which the engine adds on top of ``line_transfer_ns`` (counted twice
  before: 4.9 to 9 µs on mmap1 recordings here). It includes what the kernel's
  waiter does to notice the release and what the tracer adds at both events,
  which is what the recorded waits hold too. ``line_transfer_samples_ns``: the
  same hand-offs as up to 10,000 quantiles (less the release tail), one drawn
  per hand-off to a spinner: a convoy lasts the sum of its hand-offs, whose
  mean the median misses (issue #16, docs/VALIDATION.md §e item 8).

* the tracer's own time at an ``mmap_lock`` acquisition (tier 1): its recorded
  wait runs from ``mmap_lock_start_locking`` to ``mmap_lock_acquire_returned``,
  which holds the first tracepoint's BPF program and the fast path: an
  uncontended acquisition "waits" 0.1 to 0.7 µs on this kernel where the
  kernel itself takes ~10 ns. ``mmap_lock_tracer_ns`` = the 99th percentile
  of the recorded waits of the acquisitions no other task's release fell
  into and whose task stayed on its CPU (uncontended); the engine replays
  min(recorded wait, it) per acquisition as CPU time counted in the wait, so
  replayed waits and system calls hold the tracer's time as the recorded
  ones do (issue #16; without it every replayed system call was short by
  it: mmap -8 %, munmap -9 % on mmap1_processes).

Everything else (context switch, fast paths, TLB flush and IPI costs) keeps its
default: no tracepoint times it. Each figure is reported with its sample count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from replay.sim.costs import Costs
from replay.sim.program import tlb_flush_ns
from replay.trace.reader import Trace

MIN_SAMPLES = 20
MAX_WAKE_NS = 1_000_000


@dataclass(frozen=True)
class Calibration:
    """Calibrated costs and one line per figure saying where it came from."""

    costs: Costs
    notes: tuple[str, ...]


def _wake_latencies(trace: Trace) -> pl.Series:
    wakes = (
        trace.scan("sched_wakeup")
        .filter(pl.col("kind") == "wakeup")
        .select(pl.col("ts").alias("wake_ts"), "tid")
        .sort("wake_ts")
    )
    runs = (
        trace.scan("sched_switch")
        .select(pl.col("ts").alias("run_ts"), pl.col("next_tid").alias("tid"))
        .sort("run_ts")
    )
    # both sides are sorted just above; polars cannot verify that per "by" group
    joined = wakes.join_asof(
        runs, left_on="wake_ts", right_on="run_ts", by="tid", strategy="forward", check_sortedness=False
    )
    return (
        joined.select((pl.col("run_ts") - pl.col("wake_ts")).alias("lat"))
        .drop_nulls()
        .filter(pl.col("lat").is_between(0, MAX_WAKE_NS))
        .collect()["lat"]
    )


def _handoffs(trace: Trace) -> pl.Series:
    """Release → next owner running, for acquisitions that waited through another task's release."""
    holds = trace.scan("lock_holds").filter(~pl.col("incomplete")).select(
        "lock_addr", "tid", pl.col("ts").alias("got"), (pl.col("ts") - pl.col("wait")).alias("tried"))
    releases = (
        trace.scan("lock_holds").filter(~pl.col("incomplete"))
        .select("lock_addr", pl.col("tid").alias("holder"), (pl.col("ts") + pl.col("dur")).alias("released"))
        .sort("released")
    )
    joined = holds.sort("got").join_asof(releases, left_on="got", right_on="released", by="lock_addr",
                                         strategy="backward", check_sortedness=False)
    handed = joined.filter((pl.col("released") >= pl.col("tried")) & (pl.col("holder") != pl.col("tid")))
    if trace.has("sched_switch"):
        # a waiter switched in during its wait slept (or was preempted): its hand-off holds a wake-up and a
        # run-queue wait, which the engine adds to a sleeper's hand-off itself. Keep the waiters that stayed on
        # their CPU (spinning): their hand-off is the release -> owner-running transfer alone.
        runs = (trace.scan("sched_switch").select(pl.col("ts").alias("ran"), pl.col("next_tid").alias("tid"))
                .sort("ran"))
        handed = (handed.sort("got")
                  .join_asof(runs, left_on="got", right_on="ran", by="tid", strategy="backward",
                             check_sortedness=False)
                  .filter(pl.col("ran").is_null() | (pl.col("ran") < pl.col("tried"))))
    return handed.select((pl.col("got") - pl.col("released")).alias("handoff")).collect()["handoff"]


#: quantiles of the recorded hand-offs kept (Costs.line_transfer_samples_ns): enough for the rare long ones
#: (0.5 % over 1 µs, up to 0.2 ms, on mmap1_threads) to keep their share of the mean: 24 ns above the median
#: there, 9 with 200 quantiles, 23 with 10,000
HANDOFF_QUANTILES = 10_000


def _quantile_samples(values: pl.Series, most: int, less: int = 0) -> tuple[int, ...]:
    """``values`` as up to ``most`` equally likely values, the (i + 1/2)/n quantiles, each less ``less`` (floored
    at 0): drawing one per event gives the recorded distribution, its mean and its tail."""
    n = min(most, len(values))
    qs = np.quantile(values.to_numpy().astype(np.float64), (np.arange(n) + 0.5) / n)
    return tuple(max(0, round(float(q)) - less) for q in qs)


def _handoff_samples(ho: pl.Series, tail: int) -> tuple[int, ...]:
    """The recorded hand-offs as up to HANDOFF_QUANTILES equally likely values less the release tail the engine
    replays before each release, where one median gave every hand-off the same length."""
    return _quantile_samples(ho, HANDOFF_QUANTILES, tail)


def _recorded_lock_waits(trace: Trace) -> list[pl.LazyFrame]:
    """The recorded lock waits as (tid, w0, w1) spans: lock_holds' waits before their acquisitions and lock_waits
    (not the run queue's), each table that the trace has."""
    waits = []
    if trace.has("lock_holds"):
        waits.append(trace.scan("lock_holds").filter(~pl.col("incomplete") & (pl.col("wait") > 0))
                     .select("tid", (pl.col("ts") - pl.col("wait")).alias("w0"), pl.col("ts").alias("w1")))
    if trace.has("lock_waits"):
        waits.append(trace.scan("lock_waits").filter(~pl.col("incomplete") & (pl.col("lock_class") != "runqueue_lock"))
                     .select("tid", pl.col("ts").alias("w0"), (pl.col("ts") + pl.col("dur")).alias("w1")))
    return waits


def _lock_wake_delays(trace: Trace) -> pl.Series:
    """Waker -> activation delay of each woken lock sleeper: from ``sched_waking`` (fired in the waker's
    try_to_wake_up, where the engine's wake-up begins) to the same task's next ``sched_wakeup`` (fired where it
    is activated: on another CPU that idles, only after an IPI has brought that CPU out of idle), for wake-ups
    inside a recorded lock wait of the woken task (lock_holds' waits, lock_waits). Over 1 ms: left out."""
    wk = trace.scan("sched_wakeup").select("ts", "tid", "kind")
    waking = wk.filter(pl.col("kind") == "waking").select(pl.col("ts").alias("waking"), "tid").sort("waking")
    pairs = (wk.filter(pl.col("kind") == "wakeup").select("ts", "tid").sort("ts")
             .join_asof(waking, left_on="ts", right_on="waking", by="tid", strategy="backward",
                        check_sortedness=False)
             .filter(pl.col("waking").is_not_null() & (pl.col("ts") - pl.col("waking") < 1_000_000)))
    inside = pl.lit(False)
    for i, wt in enumerate(_recorded_lock_waits(trace)):
        wt = wt.rename({"w0": f"w0_{i}", "w1": f"w1_{i}"}).sort(f"w0_{i}")
        pairs = pairs.join_asof(wt, left_on="ts", right_on=f"w0_{i}", by="tid", strategy="backward",
                                check_sortedness=False)
        inside = inside | (pl.col(f"w1_{i}").is_not_null() & (pl.col("ts") <= pl.col(f"w1_{i}"))
                           & (pl.col("waking") >= pl.col(f"w0_{i}")))
    return pairs.filter(inside).select((pl.col("ts") - pl.col("waking")).alias("delay")).collect()["delay"]


def _lock_wake_long(trace: Trace, long_after: int, tail: int) -> pl.Series:
    """Release -> switch-in delay of each lock sleeper woken onto another CPU than its waker's after a long sleep:
    ``sched_waking`` inside a recorded lock wait of the woken task (as ``_lock_wake_delays``) whose task had
    left its CPU (its last ``sched_switch`` out) ``long_after`` ns or more before, to its next switch-in, on
    another CPU than the waking's (the waker's), within 1 ms. The delay starts at the waker's last mmap_lock
    release stamp (lock_holds' end) plus ``tail`` (the tracer's time after it, which the engine replays before
    the release) if that is within 50 µs before the waking -- the engine wakes at the release, and the kernel's
    up_read/up_write -> rwsem_wake -> try_to_wake_up takes 2-6 µs before ``sched_waking`` fires -- else at the
    waking."""
    wk = trace.scan("sched_wakeup").filter(pl.col("kind") == "waking")
    waking = wk.select(pl.col("ts").alias("waking"), "tid", pl.col("cpu").alias("wcpu"),
                       pl.col("waker_tid").alias("waker")).sort("waking")
    sw = trace.scan("sched_switch")
    ins = sw.select(pl.col("ts").alias("run"), pl.col("next_tid").alias("tid"), pl.col("cpu").alias("rcpu")).sort("run")
    outs = sw.select(pl.col("ts").alias("out"), pl.col("prev_tid").alias("tid")).sort("out")
    pairs = (waking.join_asof(ins, left_on="waking", right_on="run", by="tid", strategy="forward",
                              check_sortedness=False)
             .join_asof(outs, left_on="waking", right_on="out", by="tid", strategy="backward", check_sortedness=False)
             .filter(pl.col("run").is_not_null() & pl.col("out").is_not_null()
                     & (pl.col("run") - pl.col("waking") < MAX_WAKE_NS) & (pl.col("rcpu") != pl.col("wcpu"))
                     & (pl.col("waking") - pl.col("out") >= long_after)))
    inside = pl.lit(False)
    for i, wt in enumerate(_recorded_lock_waits(trace)):
        wt = wt.rename({"w0": f"w0_{i}", "w1": f"w1_{i}"}).sort(f"w0_{i}")
        pairs = pairs.join_asof(wt, left_on="waking", right_on=f"w0_{i}", by="tid", strategy="backward",
                                check_sortedness=False)
        inside = inside | (pl.col(f"w1_{i}").is_not_null() & (pl.col("waking") <= pl.col(f"w1_{i}")))
    start = pl.col("waking")
    if trace.has("lock_holds"):
        rel = (trace.scan("lock_holds").filter(~pl.col("incomplete") & (pl.col("lock_class") == "mmap_lock"))
               .select(pl.col("tid").alias("waker"), (pl.col("ts") + pl.col("dur")).alias("rel")).sort("rel"))
        pairs = pairs.sort("waking").join_asof(rel, left_on="waking", right_on="rel", by="waker", strategy="backward",
                                               check_sortedness=False)
        start = (pl.when(pl.col("rel").is_not_null() & (pl.col("waking") - pl.col("rel") <= 50_000))
                 .then(pl.min_horizontal(pl.col("rel") + tail, pl.col("waking"))).otherwise(pl.col("waking")))
    return pairs.filter(inside).select((pl.col("run") - start).alias("delay")).collect()["delay"]


def _lock_sleep_windows(trace: Trace) -> pl.Series:
    """A lock sleeper's way to sleep: from its ``contention_begin`` (lock_waits' ts; a sleeping lock's slowpath
    fires it right before schedule()) to its switch-out asleep (``sched_switch`` with ``prev_state`` ≠ 0) inside
    that wait, for the waits of sleeping locks (not LCB_F_SPIN) whose task slept in them."""
    waits = (trace.scan("lock_waits").filter(~pl.col("incomplete") & ((pl.col("flags") & 1) == 0))
             .select("tid", "ts", (pl.col("ts") + pl.col("dur")).alias("end")).sort("ts"))
    outs = (trace.scan("sched_switch").filter(pl.col("prev_state") != 0)
            .select(pl.col("prev_tid").alias("tid"), pl.col("ts").alias("out")).sort("out"))
    return (waits.join_asof(outs, left_on="ts", right_on="out", by="tid", strategy="forward", check_sortedness=False)
            .filter(pl.col("out").is_not_null() & (pl.col("out") <= pl.col("end")))
            .select((pl.col("out") - pl.col("ts")).alias("window")).collect()["window"])


#: lock sleepers woken after a long sleep a recording must hold for lock_wake_long_samples_ns: they are few (one per
#: munmap-sized wait), and each is a measured delay, so a handful stands (page_fault1_threads, 1.5 s: 8)
MIN_LONG_WAKES = 5

#: quantiles of the recorded lock wake-up delays kept (Costs.lock_wake_samples_ns)
LOCK_WAKE_QUANTILES = 1_000


def _uncontended_mmap_lock_waits(trace: Trace) -> pl.Series:
    """Recorded waits of mmap_lock acquisitions no other task's release fell into, by tasks that stayed on
    their CPU: the tracer's own time between its two tracepoints (and the fast path)."""
    ok = ~pl.col("incomplete") & pl.col("success") & (pl.col("lock_class") == "mmap_lock")
    holds = trace.scan("lock_holds").filter(ok).select(
        "lock_addr", "tid", "wait", pl.col("ts").alias("got"), (pl.col("ts") - pl.col("wait")).alias("tried"))
    releases = (trace.scan("lock_holds").filter(ok)
                .select("lock_addr", pl.col("tid").alias("holder"), (pl.col("ts") + pl.col("dur")).alias("released"))
                .sort("released"))
    joined = holds.sort("got").join_asof(releases, left_on="got", right_on="released", by="lock_addr",
                                         strategy="backward", check_sortedness=False)
    free = joined.filter(pl.col("released").is_null() | (pl.col("released") < pl.col("tried"))
                         | (pl.col("holder") == pl.col("tid")))
    if trace.has("sched_switch"):
        runs = (trace.scan("sched_switch").select(pl.col("ts").alias("ran"), pl.col("next_tid").alias("tid"))
                .sort("ran"))
        free = (free.sort("got").join_asof(runs, left_on="got", right_on="ran", by="tid", strategy="backward",
                                            check_sortedness=False)
                .filter(pl.col("ran").is_null() | (pl.col("ran") < pl.col("tried"))))
    return free.select("wait").collect()["wait"]


def calibrate(trace: Trace, base: Costs | None = None) -> Calibration:
    """``base`` (default: Costs()) with every figure the trace can measure replaced."""
    costs = base or Costs()
    notes: list[str] = []
    changes: dict[str, int] = {}

    if trace.has("sched_wakeup") and trace.has("sched_switch"):
        lat = _wake_latencies(trace)
        if len(lat) >= MIN_SAMPLES:
            q05 = float(lat.quantile(0.05))
            med = float(lat.median())
            changes["wakeup_ns"] = round(q05)
            changes["wake_jitter_ns"] = round(max(0.0, med - q05) / math.log(2))
            notes.append(f"wakeup_ns = {changes['wakeup_ns']}, wake_jitter_ns = {changes['wake_jitter_ns']}: "
                         f"{len(lat)} wake-up → switch-in latencies (5th percentile, median)")
        else:
            notes.append(f"wakeup_ns, wake_jitter_ns: default ({len(lat)} wake-ups, need {MIN_SAMPLES})")
    else:
        notes.append("wakeup_ns, wake_jitter_ns: default (no sched_wakeup/sched_switch tables)")

    if trace.has("sched_wakeup") and (trace.has("lock_holds") or trace.has("lock_waits")):
        dl = _lock_wake_delays(trace)
        if len(dl) >= MIN_SAMPLES:
            changes["lock_wake_samples_ns"] = _quantile_samples(dl, LOCK_WAKE_QUANTILES)
            n = len(changes["lock_wake_samples_ns"])
            notes.append(f"lock_wake_samples_ns: {len(dl)} woken lock sleepers' waker → activation delays "
                         f"(sched_waking → sched_wakeup) as {n} quantiles (median {float(dl.median()):.0f} ns, mean "
                         f"{float(dl.mean()):.0f} ns), one drawn per wake-up of a lock sleeper")
        else:
            notes.append(f"lock_wake_samples_ns: none ({len(dl)} woken lock sleepers, need {MIN_SAMPLES})")
    else:
        notes.append("lock_wake_samples_ns: none (no sched_wakeup or lock tables)")
    if trace.has("lock_waits") and trace.has("sched_switch"):
        win = _lock_sleep_windows(trace)
        if len(win) >= MIN_SAMPLES:
            changes["lock_sleep_window_ns"] = round(float(win.median()))
            notes.append(f"lock_sleep_window_ns = {changes['lock_sleep_window_ns']}: median over {len(win)} lock waits "
                         "that slept of contention_begin → their switch-out (p10/p90 "
                         f"{float(win.quantile(0.1)):.0f}/{float(win.quantile(0.9)):.0f} ns)")
        else:
            notes.append(f"lock_sleep_window_ns: 0 ({len(win)} lock waits that slept, need {MIN_SAMPLES})")
    else:
        notes.append("lock_sleep_window_ns: 0 (no lock_waits or sched_switch table)")

    if trace.has("sched_switch"):
        # reconstruction's blocks are the trace's off-CPU intervals, switch-out to switch-in: their wake-up is inside
        changes["blocks_hold_wakeup"] = 1
        notes.append("blocks_hold_wakeup = 1: the trace's sleeps (switch-out → switch-in) hold their wake-up and "
                     "switch")
    else:
        notes.append("blocks_hold_wakeup: 0 (no sched_switch table: no recorded sleeps)")

    free_ns = costs.free_page_ns
    if trace.has("page_free_batches"):
        per = (
            trace.scan("page_free_batches")
            .filter(pl.col("batched") & (pl.col("pages") >= 16) & ~pl.col("incomplete"))
            .select((pl.col("dur") / (pl.col("pages") - 1)).alias("per"))
            .collect()["per"]
        )
        if len(per) >= MIN_SAMPLES:
            free_ns = changes["free_page_ns"] = round(float(per.median()))
            notes.append(f"free_page_ns = {free_ns}: median over {len(per)} batched free bursts of ≥ 16 pages")
        else:
            notes.append(f"free_page_ns: default ({len(per)} batched bursts of ≥ 16 pages, need {MIN_SAMPLES})")
    else:
        notes.append("free_page_ns: default (no page_free_batches table)")

    if trace.has("gathers"):
        g = (
            trace.scan("gathers")
            .filter((pl.col("pages") >= 64) & ~pl.col("incomplete"))
            .select("dur", "pages", "flushes", "fullmm")
            .collect()
        )
        per = [
            (dur - fl * tlb_flush_ns(max(1, pages // max(1, fl)), costs, fullmm)) / pages - free_ns
            for dur, pages, fl, fullmm in g.iter_rows()
        ]
        if len(per) >= MIN_SAMPLES:
            changes["zap_page_ns"] = max(0, round(sorted(per)[len(per) // 2]))
            notes.append(f"zap_page_ns = {changes['zap_page_ns']}: median over {len(per)} gathers of ≥ 64 pages "
                         "(minus freeing and modelled flushes)")
        else:
            notes.append(f"zap_page_ns: default ({len(per)} gathers of ≥ 64 pages, need {MIN_SAMPLES})")
    else:
        notes.append("zap_page_ns: default (no gathers table: tier 2)")

    tails = _mmap_lock_tails(trace, notes) if trace.has("lock_holds") else {}
    changes.update(tails)
    if trace.has("lock_holds"):
        ho = _handoffs(trace)
        if len(ho) >= MIN_SAMPLES:
            # a recorded hand-off starts at the release's stamp: the tracer's time after it (replayed before the
            # release since issue #16) is in it once, not twice
            tail = tails.get("mmap_lock_release_tail_ns", 0)
            changes["line_transfer_ns"] = max(0, round(float(ho.median())) - tail)
            notes.append(f"line_transfer_ns = {changes['line_transfer_ns']}: median over {len(ho)} lock hand-offs "
                         "of waiters that stayed on their CPU (release → next owner running, tracer time included"
                         + (f", less the {tail} ns replayed before each release)" if tail else ")"))
            samples = _handoff_samples(ho, tail)
            changes["line_transfer_samples_ns"] = samples
            notes.append(f"line_transfer_samples_ns: the same hand-offs as {len(samples)} quantiles, less the same "
                         f"tail (mean {sum(samples) / len(samples):.0f} ns, 99th percentile "
                         f"{samples[len(samples) * 99 // 100]} ns), one drawn per hand-off to a spinner")
        else:
            notes.append(f"line_transfer_ns: default ({len(ho)} recorded lock hand-offs, need {MIN_SAMPLES})")
    else:
        notes.append("line_transfer_ns: default (no lock_holds table)")

    if trace.has("lock_holds"):
        tw = _uncontended_mmap_lock_waits(trace)
        if len(tw) >= MIN_SAMPLES:
            changes["mmap_lock_tracer_ns"] = round(float(tw.quantile(0.99)))
            notes.append(f"mmap_lock_tracer_ns = {changes['mmap_lock_tracer_ns']}: 99th percentile of {len(tw)} "
                         f"uncontended mmap_lock waits (median {float(tw.median()):.0f} ns): the tracer's own time, "
                         "replayed at each acquisition up to its recorded wait")
        else:
            notes.append(f"mmap_lock_tracer_ns: 0 ({len(tw)} uncontended mmap_lock acquisitions, need {MIN_SAMPLES})")

    if trace.has("sched_wakeup") and trace.has("sched_switch") and (trace.has("lock_holds") or trace.has("lock_waits")):
        lw = _lock_wake_long(trace, costs.lock_wake_long_after_ns, tails.get("mmap_lock_release_tail_ns", 0))
        if len(lw) >= MIN_LONG_WAKES:
            changes["lock_wake_long_samples_ns"] = _quantile_samples(lw, LOCK_WAKE_QUANTILES)
            notes.append(f"lock_wake_long_samples_ns: {len(lw)} lock sleepers woken onto another CPU after "
                         f"{costs.lock_wake_long_after_ns} ns or more off it, release → switch-in (median "
                         f"{float(lw.median()):.0f} ns, min {float(lw.min()):.0f} ns), one drawn per wake-up of such a "
                         "sleeper instead of the wake-up latency")
        else:
            notes.append(f"lock_wake_long_samples_ns: none ({len(lw)} lock sleepers woken after a long sleep, need "
                         f"{MIN_LONG_WAKES})")
    else:
        notes.append("lock_wake_long_samples_ns: none (no sched_wakeup, sched_switch or lock tables)")

    notes.append("context switch, lock fast paths, TLB flush and IPI costs: defaults (no tracepoint times them)")
    return Calibration(replace(costs, **changes), tuple(notes))


#: samples of the recorder's mmap_lock tail measurement (manifest extra.mmap_lock_tail) a mean needs
MIN_TAIL_SAMPLES = 100


def _mmap_lock_tails(trace: Trace, notes: list[str]) -> dict[str, int]:
    """mmap_lock_release_tail_ns and mmap_lock_downgrade_tail_ns from the recorder's measurement: the mean time
    its release (downgrade) program ran after its timestamp while the lock was still held (bpf/mmap_lock.c,
    manifest extra.mmap_lock_tail). A recording made before the recorder measured it: 0, said."""
    extra = trace.manifest.extra if isinstance(trace.manifest.extra, dict) else {}
    tail = extra.get("mmap_lock_tail")
    out: dict[str, int] = {}
    for key, name in (("release", "mmap_lock_release_tail_ns"), ("downgrade", "mmap_lock_downgrade_tail_ns")):
        got = tail.get(key) if isinstance(tail, dict) else None
        n = got.get("samples") if isinstance(got, dict) else None
        ns = got.get("ns") if isinstance(got, dict) else None
        if not isinstance(n, int) or not isinstance(ns, int) or isinstance(n, bool) or n < 0 or ns < 0:
            why = "not measured by this recording's recorder" if tail is None else "no valid measurement"
            notes.append(f"{name}: 0 ({why}: manifest extra.mmap_lock_tail.{key})")
        elif n < MIN_TAIL_SAMPLES:
            notes.append(f"{name}: 0 ({n} sampled {key}s, need {MIN_TAIL_SAMPLES})")
        else:
            out[name] = round(ns / n)
            notes.append(f"{name} = {out[name]}: mean over {n} sampled {key}s of the tracer's time after its "
                         "timestamp, the lock still held (replayed before each mmap_lock "
                         f"{'release' if key == 'release' else 'downgrade'})")
    return out
