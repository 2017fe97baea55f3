"""The analytics' callers and the recorder's symbolizer name every address alike (one Kallsyms underneath)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from replay.analytics.callers import SymbolTable
from replay.symbols import Kallsyms, Symbolizer
from replay.trace.reader import Trace
from tests import analytics_fixtures as fx

SAMPLES = Path(__file__).parent.parent / "sample_traces"


def test_callers_and_symbolizer_agree_on_every_stack_frame_of_the_samples(tmp_path: Path) -> None:
    samples = [p for p in sorted(SAMPLES.iterdir()) if (p / "stacks.arrow").exists()]
    paths = [fx.write_recorded(tmp_path / "t"), *samples]
    checked = 0
    for path in paths:
        trace = Trace.open(path)
        ips = np.concatenate([np.asarray(x, dtype=np.uint64) for x in trace.read("stacks")["ips"].to_list()])
        names, offsets = SymbolTable.from_trace(trace).lookup(ips)
        expected = Symbolizer.from_trace(trace).symbolize_many(ips)
        got = [f"{n}+0x{int(o):x}" if n is not None else f"0x{int(i):x}" for n, o, i in zip(names, offsets, ips,
                                                                                                 strict=True)]
        # Symbolizer appends " [module]" for module symbols; the callers print bare names
        assert got == [e.split(" [")[0] for e in expected], path
        checked += len(ips)
    assert checked > 50


def test_aliases_at_one_address_resolve_to_the_same_name_in_both() -> None:
    ks = Kallsyms.from_arrays([0x1000, 0x1000, 0x2000], ["_stext", "do_thing", "other"])
    table = SymbolTable(ks, [])
    names, _ = table.lookup(np.array([0x1010], dtype=np.uint64))
    assert names[0] == Symbolizer(ks).name(0x1010) == "do_thing"
