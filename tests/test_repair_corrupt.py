"""`mmreplay repair` past a chunk corrupted in the middle of a file: every valid chunk after it comes back.

The files are real recordings' tables (sample_traces: lock_holds of mprotect-split, with enum columns
sent as dictionaries; page_faults of page_fault1_threads; symbols of kbuild, with strings) written in
ten chunks by a process that dies before closing them, exactly as a killed recorder leaves them (and,
for the finished-file cases, closed properly). One chunk in the middle is then damaged: its header
zeroed, a bit of its metadata length flipped, random bits of its metadata flipped, cut short (so every
later chunk sits at a shifted, unaligned offset), a zeroed range across two chunks, or garbage inserted
between two chunks. Repair must bring back every other chunk, in order and exactly, say what it skipped,
and `info` must print it.

Arrow IPC carries no checksum: a flipped bit inside a value is not detectable and such a chunk is kept
(the random-flip case allows the damaged chunk either way; every other chunk must be exact).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from replay.cli.main import main
from replay.trace import Trace
from replay.trace.repair import repair

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = 10
SOURCES = {  # table: the real recording it comes from
    "lock_holds": "sample_traces/mprotect-split",
    "page_faults": "sample_traces/page_fault1_threads",
    "symbols": "sample_traces/kbuild",
}


def _write(out: Path, *, finished: bool, compression: str | None) -> None:
    code = (
        "import os, pyarrow as pa\n"
        "from replay.trace import TraceWriter\n"
        f"w = TraceWriter({str(out)!r}, compression={compression!r}, extra={{'recorder': 'a test'}})\n"
        f"for name, src in {SOURCES!r}.items():\n"
        "    t = pa.ipc.open_file(pa.memory_map(f'{src}/{name}.arrow')).read_all()\n"
        f"    n = -(-t.num_rows // {CHUNKS})\n"
        f"    for k in range({CHUNKS}):\n"
        "        w.write(name, t.slice(k * n, n))\n"
        + ("w.close()\n" if finished else "os._exit(0)\n")
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[tuple[bool, str | None], Path]:
    """The three tables in ten chunks: unfinished (killed) or finished, uncompressed or zstd."""
    base = tmp_path_factory.mktemp("corrupt")
    out = {}
    for finished in (False, True):
        for compression in (None, "zstd"):
            p = base / f"{'finished' if finished else 'killed'}-{compression}"
            _write(p, finished=finished, compression=compression)
            out[finished, compression] = p
    return out


def _chunks(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) in the file of each record-batch message, read from an intact file."""
    r = pa.BufferReader(pa.py_buffer(raw[8:]))
    out = []
    while True:
        at = r.tell()
        try:
            m = pa.ipc.read_message(r)
        except (EOFError, pa.ArrowException, OSError):
            return out
        if m.type == "record batch":
            out.append((8 + at, 8 + r.tell()))


def _expected(table: str) -> list[list[int]]:
    """The ``seq`` values of each chunk, as written."""
    t = pa.ipc.open_file(pa.memory_map(f"{ROOT / SOURCES[table]}/{table}.arrow")).read_all()
    n = -(-t.num_rows // CHUNKS)
    key = "seq" if "seq" in t.column_names else "addr"
    return [t.slice(k * n, n).column(key).to_pylist() for k in range(CHUNKS)]


Damage = Callable[[bytearray, list[tuple[int, int]], random.Random], tuple[bytearray, set[int], set[int]]]


def zeroed_header(raw, chunks, rng):
    s, _ = chunks[4]
    raw[s:s + 64] = bytes(64)
    return raw, {4}, set()


def flipped_metadata_length(raw, chunks, rng):
    s, _ = chunks[4]
    raw[s + 5] ^= 0x01  # the length grows by 256: the metadata and body are read from the wrong place
    return raw, {4}, set()


def cut_short(raw, chunks, rng):
    s, e = chunks[4]
    mid = s + (e - s) // 2 | 1  # an odd number of bytes goes: every later chunk is unaligned
    return raw[:mid] + raw[e:], {4}, set()


def zeroed_across_two(raw, chunks, rng):
    (s4, e4), (s5, e5) = chunks[4], chunks[5]
    a, b = (s4 + e4) // 2, (s5 + e5) // 2
    raw[a:b] = bytes(b - a)
    return raw, {5}, {4}  # zeros are valid values: chunk 4 may be kept, its second half zeroed


def garbage_between(raw, chunks, rng):
    _, e = chunks[4]
    junk = bytes(rng.getrandbits(8) for _ in range(1001))
    return raw[:e] + junk + raw[e:], set(), set()


def random_metadata_flips(raw, chunks, rng):
    s, _ = chunks[4]
    for _ in range(3):
        raw[s + rng.randrange(8, 200)] ^= 1 << rng.randrange(8)
    return raw, set(), {4}  # a flip in a value or in padding is not detectable: chunk 4 may stay


DAMAGE: dict[str, Damage] = {f.__name__: f for f in (zeroed_header, flipped_metadata_length, cut_short,
                                                      zeroed_across_two, garbage_between)}


def _damage_and_repair(src: Path, dst: Path, table: str, damage: Damage, rng: random.Random):
    shutil.copytree(src, dst)
    f = dst / f"{table}.arrow"
    raw = bytearray(f.read_bytes())
    chunks = _chunks(bytes(raw))
    assert len(chunks) == CHUNKS
    raw, lost, maybe = damage(raw, chunks, rng)
    f.write_bytes(bytes(raw))
    results = {r.table: r for r in repair(dst)}
    return results, lost, maybe


def _check(dst: Path, table: str, results, lost: set[int], maybe: set[int]) -> None:
    """Every chunk but those in ``lost`` and ``maybe`` is back, exactly and in order; a chunk in ``maybe``
    (damaged where no check can tell: in its values) is either back with all its rows or gone."""
    expected = _expected(table)
    got = Trace.open(dst).read(table)["seq" if table != "symbols" else "addr"].to_list()
    present = [i for i in range(CHUNKS) if i not in lost]

    def rows(ids: list[int]) -> int:
        return sum(len(expected[i]) for i in ids)

    ids = [i for i in present if i not in maybe]
    if maybe and len(got) == rows(present):  # kept: its values may be damaged, the others must not be
        (k,) = maybe
        at = rows([i for i in present if i < k])
        got = got[:at] + expected[k] + got[at + len(expected[k]):]
        ids = present
    assert got == [v for i in ids for v in expected[i]], (table, results[table])
    for other in SOURCES:  # the other tables are untouched
        if other != table:
            assert results[other].rows == sum(len(c) for c in _expected(other))


@pytest.mark.parametrize("finished", [False, True], ids=["killed", "finished"])
@pytest.mark.parametrize("compression", [None, "zstd"])
@pytest.mark.parametrize("table", sorted(SOURCES))
@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_every_valid_chunk_after_a_corrupt_one_comes_back(written, tmp_path, table, how, compression, finished):
    dst = tmp_path / "t"
    results, lost, maybe = _damage_and_repair(written[finished, compression], dst, table, DAMAGE[how],
                                              random.Random(14))
    _check(dst, table, results, lost, maybe)
    r = results[table]
    assert r.skipped, r  # the region was found and stepped over, not taken for the file's end
    if how == "garbage_between":
        assert r.skipped == ((_chunks((written[finished, compression] / f"{table}.arrow").read_bytes())[4][1],
                              1001),) and r.rows == sum(map(len, _expected(table)))
    if finished:
        assert r.lost_bytes == sum(n for _, n in r.skipped)  # the footer after the last chunk is no loss


def test_random_flips_in_a_chunks_metadata_lose_that_chunk_at_most(written, tmp_path):
    rng = random.Random(1414)
    for i in range(40):
        table = rng.choice(sorted(SOURCES))
        src = written[rng.choice([False, True]), rng.choice([None, "zstd"])]
        dst = tmp_path / f"t{i}"
        results, lost, maybe = _damage_and_repair(src, dst, table, random_metadata_flips, rng)
        _check(dst, table, results, lost, maybe)


def test_info_says_what_was_skipped_and_the_manifest_keeps_it(written, tmp_path, capsys):
    dst = tmp_path / "t"
    results, _, _ = _damage_and_repair(written[False, None], dst, "lock_holds", zeroed_across_two,
                                       random.Random(0))
    r = results["lock_holds"]
    assert r.action == "rebuilt past 1 corrupt region"
    rep = json.loads((dst / "manifest.json").read_text())["extra"]["repair"]
    assert rep["tables"]["lock_holds"]["skipped"] == [{"offset": o, "bytes": n} for o, n in r.skipped]
    capsys.readouterr()
    assert main(["info", str(dst)]) == 0
    out = capsys.readouterr().out
    (offset, size), = r.skipped
    assert f"lock_holds: rebuilt past 1 corrupt region, {r.rows} rows kept, {r.lost_bytes} bytes dropped" in out
    assert f"corrupt, skipped: {size} bytes at offset {offset}" in out
    assert main(["query", str(dst), "--sql", "SELECT count(*) AS n FROM lock_holds"]) == 0
    assert f"{r.rows:,}" in capsys.readouterr().out


def _dictionary_offsets(raw: bytes, column: str) -> tuple[int, int]:
    """Where in the file the string offsets of ``column``'s dictionary lie: (start, count)."""
    first = pa.ipc.open_stream(pa.py_buffer(raw[8:])).read_next_batch()
    words = first.column(column).dictionary.to_pylist()
    ends = [0]
    for w in words:
        ends.append(ends[-1] + len(w.encode()))
    pattern = b"".join(e.to_bytes(4, "little") for e in ends)
    assert raw.count(pattern) == 1, "the dictionary's offsets are not uniquely findable"
    return raw.index(pattern), len(ends)


def test_a_damaged_first_dictionary_falls_back_to_the_vocabulary(written, tmp_path):
    """The dictionary message before the first batch has a string offset ~2 GB past its data. Reading that
    dictionary's words (to compare them with the table's vocabulary) read out of bounds and killed the
    process (SIGSEGV, seen in CI); the first batch is now validated first, a damaged one is not read from,
    and every chunk comes back decoded with the vocabulary TraceWriter stores."""
    dst = tmp_path / "t"
    shutil.copytree(written[False, None], dst)
    f = dst / "lock_holds.arrow"
    raw = bytearray(f.read_bytes())
    at, n = _dictionary_offsets(bytes(raw), "lock_class")
    raw[at + 4 * (n - 1):at + 4 * n] = (0x7FFF_FFF0).to_bytes(4, "little")
    f.write_bytes(bytes(raw))
    code = ("import sys; from replay.trace.repair import repair; "
            "r = {x.table: x for x in repair(sys.argv[1])}; print(r['lock_holds'].rows)")
    done = subprocess.run([sys.executable, "-c", code, str(dst)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    src = pa.ipc.open_file(pa.memory_map(f"{ROOT / SOURCES['lock_holds']}/lock_holds.arrow")).read_all()
    got = Trace.open(dst).read("lock_holds")
    assert int(done.stdout) == got.height == src.num_rows
    assert got["seq"].to_list() == src.column("seq").to_pylist()
    assert got["lock_class"].cast(str).to_list() == src.column("lock_class").cast(pa.string()).to_pylist()
