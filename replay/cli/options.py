"""Option values every subcommand checks the same way: finite numbers in a range, bounded integers, limits.

The checkers are argparse ``type=`` functions (they raise ArgumentTypeError, which the parser reports
as one line); the others raise UsageError. Limits are checked here, before
anything is allocated or looped over by the value: ``--cpus 1e8`` or ``--duration nan`` must be a
one-line refusal, not a hang.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from replay.errors import UsageError
from replay.trace.manifest import MAX_CPUS

#: Largest values accepted, each far beyond any real use and small enough not to exhaust memory or time.
MAX_TASKS = 4096
MAX_SEEDS = 10_000
MAX_JOBS = 1024
MAX_SCALE = 1024.0
MAX_SIM_TASKS = 65_536  # tasks a replay simulates, after --scale-tasks
MAX_SECONDS = 1e7  # ~115 days
PID_MAX = 4_194_304  # PID_MAX_LIMIT on 64-bit kernels
#: Cost constants: no ns cost above 100 s, no page count above 2^30 (a 4 TiB gather).
MAX_COST_NS = 1e11
MAX_COST_PAGES = 1 << 30

__all__ = ["MAX_CPUS", "check_tasks", "costs", "int_list", "integer", "number"]


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, option: str = "--max-memory") -> int:
    """``4G``, ``512M``, ``1.5G``, ``1000000`` as bytes (binary units); a one-line UsageError naming the
    option otherwise."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"{option} needs a size such as 4G, 512M or a number of bytes, not {text!r}")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise UsageError(f"{option} must be positive (got {text!r})")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def number(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi] (or (lo, hi] with ``lo_open``); NaN and infinities are refused."""

    def check(text: str) -> float:
        v = _number(text)
        if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
            low = f"more than {lo:g}" if lo_open else f"at least {lo:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {low} and at most {hi:g}, not {text!r}")
        return v

    check.__name__ = "number"
    return check


def integer(lo: int, hi: int) -> Callable[[str], int]:
    """An integer (decimal, or 0x...) from lo to hi."""

    def check(text: str) -> int:
        try:
            v = int(text, 0) if isinstance(text, str) else int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}, not {v}")
        return v

    check.__name__ = "integer"
    return check


def int_list(lo: int, hi: int) -> Callable[[str], list[int]]:
    """A comma-separated list of integers from lo to hi (--pid 1,2,3)."""
    one = integer(lo, hi)

    def check(text: str) -> list[int]:
        try:
            return [one(x.strip()) for x in text.split(",") if x.strip()]
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: each item {e}") from None

    check.__name__ = "list"
    return check


def check_tasks(recorded: int, scale: float) -> None:
    """UsageError if --scale-tasks would make more than MAX_SIM_TASKS tasks of the recorded ones."""
    if recorded * scale > MAX_SIM_TASKS:
        raise UsageError(f"--scale-tasks {scale:g} would replay {recorded * scale:,.0f} tasks "
                         f"({recorded} recorded); at most {MAX_SIM_TASKS:,}")


def costs(path: str | os.PathLike[str] | None) -> Any:
    """replay.sim.costs.Costs from a cost file (defaults without one), refusing a file that is no regular
    file, and values that are not finite or beyond MAX_COST_NS / MAX_COST_PAGES (a cost of 1e30 ns
    would make a replay run for ever)."""
    from replay.sim.costs import Costs
    from replay.trace.safeio import open_regular

    if path is None:
        return Costs()
    p = Path(path)
    try:
        os.close(open_regular(p))  # a FIFO would block the loader
    except FileNotFoundError:
        raise UsageError(f"{p}: no such cost file") from None
    except Exception as e:  # noqa: BLE001 - TraceError: one line naming the file
        raise UsageError(str(e)) from None
    c = Costs.load(p)
    for name, v in vars(c).items():
        if name == "line_transfer_samples_ns" and any(x > MAX_COST_NS for x in v):
            raise UsageError(f"{p}: cost {name} must hold numbers at most {MAX_COST_NS:g}, not {max(v)!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        limit = MAX_COST_PAGES if name.endswith("_pages") or name == "cpus_per_socket" else MAX_COST_NS
        if not math.isfinite(v) or v > limit:
            raise UsageError(f"{p}: cost {name} must be a finite number at most {limit:g}, not {v!r}")
    return c
