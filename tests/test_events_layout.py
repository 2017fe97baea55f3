"""tracer/events.py mirrors bpf/mmreplay.h exactly: sizes and offsets agree with what gcc computes."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from tracer import BPF_DIR, events

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")


def _c_layout(tmp_path) -> dict[str, int]:
    """Compile a program that prints sizeof/offsetof of every mirrored struct and field."""
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "mmreplay.h"', "int main(void) {"]
    for struct, dt in events.DTYPES.items():
        lines.append(f'printf("{struct} %zu\\n", sizeof(struct {struct}));')
        for name in dt.names:
            lines.append(f'printf("{struct}.{name} %zu\\n", offsetof(struct {struct}, {name}));')
    lines += ["return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-Wall", "-Werror", f"-I{BPF_DIR}", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_every_struct_size_and_field_offset_matches_the_c_header(tmp_path):
    c = _c_layout(tmp_path)
    for struct, dt in events.DTYPES.items():
        assert dt.itemsize == c[struct], struct
        for name in dt.names:
            assert dt.fields[name][1] == c[f"{struct}.{name}"], f"{struct}.{name}"


def test_every_event_kind_has_one_64_byte_slot_dtype():
    for dt in events.KIND_DTYPES.values():
        assert dt.itemsize == events.EVENT_SIZE
    assert events.BATCH_SIZE == 64 + events.BATCH_EVENTS * events.EVENT_SIZE


def test_split_batch_keeps_only_counted_slots_and_groups_them_by_kind():
    batch = np.zeros(1, events.DTYPES["mmr_batch"])
    batch["count"] = 3
    ev = batch["ev"][0].view(np.uint8).reshape(events.BATCH_EVENTS, events.EVENT_SIZE)
    faults = ev[:2].view(np.void(events.EVENT_SIZE)).ravel().view(events.KIND_DTYPES[events.EV_PAGE_FAULT])
    faults["kind"] = events.EV_PAGE_FAULT
    faults["address"] = [0x1000, 0x2000]
    flush = ev[2:3].view(np.void(events.EVENT_SIZE)).ravel().view(events.KIND_DTYPES[events.EV_TLB_FLUSH])
    flush["kind"] = events.EV_TLB_FLUSH
    flush["pages"] = -1
    ev[3, 26] = events.EV_IPI  # beyond count: must be ignored
    out = events.split_batch(batch.tobytes() * 2)
    assert sorted(out) == [events.EV_TLB_FLUSH, events.EV_PAGE_FAULT]
    assert list(out[events.EV_PAGE_FAULT]["address"]) == [0x1000, 0x2000] * 2
    assert list(out[events.EV_TLB_FLUSH]["pages"]) == [-1, -1]


def test_full_and_partial_batches_give_their_counted_slots_in_order():
    batches = np.zeros(3, events.DTYPES["mmr_batch"])
    batches["count"] = [events.BATCH_EVENTS, 5, events.BATCH_EVENTS]
    ev = batches["ev"].view(np.uint8).reshape(3, events.BATCH_EVENTS, events.EVENT_SIZE)
    faults = ev.view(np.void(events.EVENT_SIZE)).reshape(3, -1).view(events.KIND_DTYPES[events.EV_PAGE_FAULT])
    faults["kind"] = events.EV_PAGE_FAULT
    faults["address"] = np.arange(3 * events.BATCH_EVENTS).reshape(3, -1)
    want = [*range(events.BATCH_EVENTS), *range(events.BATCH_EVENTS, events.BATCH_EVENTS + 5),
            *range(2 * events.BATCH_EVENTS, 3 * events.BATCH_EVENTS)]
    assert list(events.split_batch(batches.tobytes())[events.EV_PAGE_FAULT]["address"]) == want
    full = batches[[0, 2]].tobytes()  # every batch full: the one-copy path
    assert list(events.split_batch(full)[events.EV_PAGE_FAULT]["address"]) == want[:256] + want[-256:]
