"""replay.symbols: kallsyms parsing and lookup, DWARF file:line, the symbols table, offline symbolization."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.symbols import (
    DwarfError,
    DwarfFunctions,
    DwarfLines,
    Kallsyms,
    KallsymsError,
    Symbolizer,
    symbol_rows,
)
from replay.trace.reader import Trace
from replay.trace.writer import write_trace

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81000000 T startup_64
ffffffff81001000 t __pfx_down_write
ffffffff81001010 T down_write
ffffffff81001080 T up_write
ffffffff81002000 t rwsem_down_write_slowpath
ffffffffc0201000 t ext4_fault\t[ext4]
ffffffffc0201400 t ext4_map_blocks\t[ext4]
"""

DOWN_WRITE = 0xFFFFFFFF81001010
EXT4_FAULT = 0xFFFFFFFFC0201000


@pytest.fixture
def ks() -> Kallsyms:
    return Kallsyms.parse(KALLSYMS)


def test_lookup_returns_name_module_and_offset(ks: Kallsyms) -> None:
    assert ks.lookup(DOWN_WRITE) == ("down_write", "", 0)
    assert ks.lookup(DOWN_WRITE + 0x25) == ("down_write", "", 0x25)
    assert ks.lookup(EXT4_FAULT + 0x10) == ("ext4_fault", "ext4", 0x10)


def test_lookup_below_the_first_symbol_or_far_past_the_last_is_none(ks: Kallsyms) -> None:
    assert ks.lookup(0xFFFFFFFF80000000) is None
    assert ks.lookup(0xFFFFFFFFC0201400 + (1 << 20)) is None


def test_aliases_at_one_address_keep_one_name_preferring_no_underscore(ks: Kallsyms) -> None:
    assert ks.lookup(0xFFFFFFFF81000004) == ("startup_64", "", 4)
    assert len(ks) == 7


def test_lookup_many_matches_scalar_lookup(ks: Kallsyms) -> None:
    q = np.array([DOWN_WRITE + 1, 5, EXT4_FAULT + 0x401, 0xFFFFFFFF81001085], dtype=np.uint64)
    idx, off = ks.lookup_many(q)
    for a, i, o in zip(q, idx, off, strict=True):
        hit = ks.lookup(int(a))
        if i < 0:
            assert hit is None
        else:
            assert hit == (ks.names[i], ks.modules[i], int(o))
    assert [ks.names[i] for i in idx if i >= 0] == ["down_write", "ext4_map_blocks", "up_write"]


@given(st.lists(st.integers(0xFFFFFFFF80000000, 0xFFFFFFFFC0300000), max_size=50))
def test_lookup_never_points_at_a_symbol_after_the_address(addrs: list[int]) -> None:
    ks = Kallsyms.parse(KALLSYMS)
    idx, off = ks.lookup_many(np.asarray(addrs, dtype=np.uint64))
    for a, i, o in zip(addrs, idx, off, strict=True):
        if i >= 0:
            assert int(ks.addrs[i]) + int(o) == a and a < int(ks.ends[i])


def test_an_empty_symbol_table_resolves_nothing() -> None:
    empty = Kallsyms.from_arrays([], [])
    assert empty.lookup(0xFFFFFFFF81000000) is None
    assert Symbolizer(empty).symbolize_many([0x10]) == ["0x10"]


def test_zero_addresses_from_kptr_restrict_raise_a_clear_error() -> None:
    hidden = "".join("0000000000000000 " + line.split(" ", 1)[1] + "\n" for line in KALLSYMS.splitlines())
    with pytest.raises(KallsymsError, match="kptr_restrict"):
        Kallsyms.parse(hidden)


def test_unreadable_or_empty_kallsyms_raise_kallsyms_error(tmp_path: Path) -> None:
    with pytest.raises(KallsymsError, match="cannot read"):
        Kallsyms.load(tmp_path / "absent")
    (tmp_path / "empty").write_text("hello\n")
    with pytest.raises(KallsymsError, match="no symbols"):
        Kallsyms.load(tmp_path / "empty")


def test_live_kallsyms_resolves_down_write_when_readable() -> None:
    try:
        ks = Kallsyms.load()
    except KallsymsError as e:
        pytest.skip(str(e))
    addr = ks.address_of("down_write")
    assert addr is not None
    assert ks.lookup(addr + 1) == ("down_write", "", 1)


def test_symbol_rows_hold_only_the_symbols_covering_the_addresses(ks: Kallsyms) -> None:
    rows = symbol_rows(ks, [DOWN_WRITE + 4, DOWN_WRITE + 8, EXT4_FAULT + 1, 3])
    assert rows["addr"].dtype == np.uint64
    assert {**rows, "addr": rows["addr"].tolist()} == {
        "addr": [DOWN_WRITE, EXT4_FAULT],
        "name": ["down_write", "ext4_fault"],
        "module": ["", "ext4"],
        "file": [None, None],
        "line": [None, None],
    }


def test_symbolizer_reads_the_trace_symbols_table(ks: Kallsyms, tmp_path: Path) -> None:
    ips = [DOWN_WRITE + 0x2A, EXT4_FAULT + 0x10, 0x1234]
    write_trace(tmp_path / "t", {"symbols": symbol_rows(ks, ips)})
    sym = Symbolizer.from_trace(Trace.open(tmp_path / "t"))
    assert sym.symbolize_many(ips) == ["down_write+0x2a", "ext4_fault+0x10 [ext4]", "0x1234"]
    assert sym.name(DOWN_WRITE + 0x2A) == "down_write"
    assert sym.name(0x1234) is None


# ---- DWARF: on an ELF this test compiles ------------------------------------

SOURCE = """\
int helper(int x) {
	return x * 3;
}

void _text(void) {
}

int main(void) {
	return helper(2);
}
"""


@pytest.fixture(scope="module")
def elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    d = tmp_path_factory.mktemp("dwarf")
    (d / "prog.c").write_text(SOURCE)
    subprocess.run(["gcc", "-g", "-O0", "-o", str(d / "prog"), str(d / "prog.c")], check=True)
    return d / "prog"


def test_dwarf_lines_map_a_function_start_to_its_source_line(elf: Path) -> None:
    with DwarfLines(elf) as dw:
        helper = dw.symbol_address("helper")
        main = dw.symbol_address("main")
        assert dw.lookup(helper) == (str(elf.parent / "prog.c"), 1)
        assert dw.lookup(main) == (str(elf.parent / "prog.c"), 8)


def test_dwarf_lines_inside_a_function_stay_in_its_line_range(elf: Path) -> None:
    with DwarfLines(elf) as dw:
        main = dw.symbol_address("main")
        files, lines = dw.lookup_many(range(main, main + 12))
        assert set(files) == {str(elf.parent / "prog.c")}
        assert set(lines) <= {8, 9, 10} and 9 in set(lines)


def test_dwarf_lines_outside_any_sequence_is_none(elf: Path) -> None:
    with DwarfLines(elf) as dw:
        assert dw.lookup(1) is None


def test_an_elf_without_dwarf_raises_dwarf_error(elf: Path, tmp_path: Path) -> None:
    stripped = tmp_path / "stripped"
    subprocess.run(["objcopy", "--strip-debug", str(elf), str(stripped)], check=True)
    with pytest.raises(DwarfError, match="no DWARF"):
        DwarfLines(stripped)
    with pytest.raises(DwarfError, match="not a readable ELF"):
        DwarfLines(tmp_path / "absent")


def test_symbol_rows_with_vmlinux_apply_the_kaslr_slide(elf: Path) -> None:
    with DwarfLines(elf) as dw:
        linked = {n: dw.symbol_address(n) for n in ("_text", "helper", "main")}
    slide = 0xFFFFFFFF80000000
    ks = Kallsyms.from_arrays(
        [a + slide for a in linked.values()] + [0xFFFFFFFFC0000000],
        list(linked) + ["modfunc"],
        ["", "", "", "mod"],
    )
    rows = symbol_rows(ks, [linked["helper"] + slide + 2, linked["main"] + slide, 0xFFFFFFFFC0000004], vmlinux=elf)
    src = str(elf.parent / "prog.c")
    assert rows["name"] == ["helper", "main", "modfunc"]
    assert rows["file"] == [src, src, None]
    assert rows["line"] == [1, 8, None]


# ---- kernel modules: relocatable objects ---------------------------------------------

MODULE_SOURCE = """\
int helper(int x) {
	return x * 3;
}

__attribute__((section(".text.unlikely"))) int cold(int x) {
	return x + 1;
}

int modfunc(void) {
	return helper(2) + cold(1);
}
"""


@pytest.fixture(scope="module")
def ko(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A relocatable object with two text sections, like a .ko (both start at address 0)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    d = tmp_path_factory.mktemp("ko")
    (d / "mod.c").write_text(MODULE_SOURCE)
    subprocess.run(["gcc", "-g", "-O0", "-c", "-o", str(d / "mod.ko"), str(d / "mod.c")], check=True)
    return d / "mod.ko"


def test_dwarf_functions_give_each_module_function_its_definition_line(ko: Path) -> None:
    funcs = DwarfFunctions(ko)
    src = str(ko.parent / "mod.c")
    assert funcs.lookup("helper") == (src, 1)
    assert funcs.lookup("cold") == (src, 5)
    assert funcs.lookup("modfunc.isra.0") == (src, 9)
    assert funcs.lookup("absent") is None


def test_dwarf_lines_refuse_relocatable_objects_whose_sections_overlap(ko: Path) -> None:
    with pytest.raises(DwarfError, match="relocatable"):
        DwarfLines(ko)


def test_symbol_rows_fill_module_symbols_from_their_ko(ko: Path) -> None:
    ks = Kallsyms.parse(
        "ffffffffc0201000 t helper\t[mod]\nffffffffc0201100 t modfunc\t[mod]\nffffffffc0202000 t other\t[x]\n"
    )
    rows = symbol_rows(ks, [0xFFFFFFFFC0201004, 0xFFFFFFFFC0201104, 0xFFFFFFFFC0202004], modules={"mod": ko})
    src = str(ko.parent / "mod.c")
    assert rows["file"] == [src, src, None] and rows["line"] == [1, 9, None]


def test_without_debug_aranges_only_the_covering_compilation_unit_is_decoded(tmp_path: Path) -> None:
    """clang emits no .debug_aranges: the CU is then found from its top DIE's address ranges."""
    if shutil.which("gcc") is None or shutil.which("objcopy") is None:
        pytest.skip("gcc/objcopy not installed")
    (tmp_path / "a.c").write_text("int helper(int x) {\n\treturn x * 3;\n}\n")
    (tmp_path / "b.c").write_text("int helper(int);\n\nint main(void) {\n\treturn helper(2);\n}\n")
    exe, bare = tmp_path / "prog", tmp_path / "prog-noaranges"
    subprocess.run(["gcc", "-g", "-O0", "-o", str(exe), str(tmp_path / "a.c"), str(tmp_path / "b.c")], check=True)
    subprocess.run(["objcopy", "--remove-section", ".debug_aranges", str(exe), str(bare)], check=True)
    with DwarfLines(exe) as with_ar, DwarfLines(bare) as without:
        assert without._aranges is None
        main = with_ar.symbol_address("main")
        assert without.lookup(main) == with_ar.lookup(main) == (str(tmp_path / "b.c"), 3)
        assert len(without._done) == 1


def test_call_sites_map_return_addresses_to_the_calling_line_without_a_text_anchor(elf: Path) -> None:
    slide = 0xFFFFFFFF80000000
    with DwarfLines(elf) as dw:
        linked = {n: dw.symbol_address(n) for n in ("helper", "main")}
        files, lines = dw.lookup_many(range(linked["main"], linked["main"] + 40))
        call_line_addr = linked["main"] + list(lines).index(9)  # first instruction of "return helper(2);"
    # like a trace's symbols table: only the symbols its stacks need, no _text
    sym = Symbolizer(Kallsyms.from_arrays([a + slide for a in linked.values()], list(linked)))
    ret = call_line_addr + 1 + slide  # a return address just past the start of that line
    assert sym.call_sites([ret, 0x10], elf) == [(str(elf.parent / "prog.c"), 9), None]
