"""Per-CPU batches are nesting-safe: a probe that interrupts another on the same CPU loses or
duplicates nothing (issue #12, bug 1: fentry programs take no global recursion guard).

tests/data/batch_nesting.c drives the real bookkeeping of bpf/mmr_batch.h (the code every BPF
probe runs through mmr_batch_get/mmr_commit) with programs nested at every interrupt point.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tracer import BPF_DIR

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")

SRC = Path(__file__).parent / "data" / "batch_nesting.c"


def _run(tmp_path: Path, n: int, rate: int, *defines: str) -> dict[str, int]:
    exe = tmp_path / ("bn" + "".join(defines).replace("-D", "_"))
    if not exe.exists():
        subprocess.run(["gcc", "-O2", "-Wall", "-Werror", f"-I{BPF_DIR}", *defines, "-o", str(exe), str(SRC)],
                       check=True)
    words = subprocess.run([str(exe), str(n), str(rate)], check=True, capture_output=True, text=True).stdout.split()
    out = {words[i]: int(words[i + 1]) for i in range(0, 12, 2)}
    out["counted"] = int(words[12])
    return out


@pytest.mark.parametrize("rate", [2, 4, 50])
def test_every_event_of_nested_programs_is_recorded_once_and_intact(tmp_path, rate):
    r = _run(tmp_path, 5000, rate)
    assert r["programs"] > 5000  # nested programs did run
    assert r["duplicated"] == 0 and r["corrupt"] == 0
    # only programs nested deeper than the four levels are dropped, and each is counted
    assert r["missing"] == r["dropped"] == r["counted"]
    assert r["recorded"] == r["programs"] - r["dropped"]


def test_nesting_no_deeper_than_the_levels_drops_nothing(tmp_path):
    r = _run(tmp_path, 20000, 4, "-DMMR_TEST_MAX_DEPTH=4")
    assert r["dropped"] == 0 and r["missing"] == 0 and r["recorded"] == r["programs"]


def test_one_batch_per_cpu_loses_and_duplicates_rows_of_nested_programs(tmp_path):
    """The former scheme, for contrast: what made fentry traces fail to replay."""
    r = _run(tmp_path, 20000, 4, "-DMMR_SINGLE_BATCH")
    assert r["duplicated"] > 0 and r["missing"] > 0


def test_the_python_mirror_knows_the_number_of_levels():
    """The recorder reads every level's leftover batch at stop (tracer.events.NEST)."""
    import re

    from tracer import events

    header = (BPF_DIR / "mmreplay.h").read_text()
    assert int(re.search(r"#define MMR_NEST (\d+)", header).group(1)) == events.NEST
