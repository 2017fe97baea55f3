"""Kernel symbols: /proc/kallsyms snapshots, DWARF file:line, offline symbolization.

Three pieces, used by record (to snapshot what a trace needs) and by every
later stage (to print stacks on another machine):

* ``Kallsyms`` — /proc/kallsyms (or a saved copy) as sorted numpy arrays, with
  scalar and vectorized address lookup;
* ``DwarfLines`` — address → (file, line) from an ELF's DWARF line program
  (vmlinux, a ``.ko`` or any ELF built with ``-g``), parsing only the
  compilation units that cover the addresses asked for;
* ``symbol_rows`` and ``Symbolizer`` — the trace's ``symbols`` table, written
  from a Kallsyms snapshot and read back to turn stack ips into "func+0xoff".
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from replay.errors import MmreplayError

#: Bound on the offset into the highest-addressed symbol, whose end kallsyms does not tell.
LAST_SYMBOL_SPAN = 1 << 16

# When several symbols share an address, the one kept: functions before data,
# global before local, and names without a leading underscore (aliases such as
# _stext/_text) last.
_TYPE_RANK = {"T": 0, "t": 1, "W": 2, "w": 3}


class KallsymsError(MmreplayError):
    """kallsyms cannot be used (unreadable, empty, or addresses hidden by kptr_restrict)."""


@dataclass(frozen=True)
class Kallsyms:
    """A kallsyms snapshot: one symbol per distinct address, sorted by address.

    ``ends[i]`` is the next symbol's address (the best bound kallsyms gives on
    the extent of symbol ``i``).
    """

    addrs: np.ndarray  # uint64, strictly increasing
    ends: np.ndarray  # uint64
    names: np.ndarray  # object (str)
    modules: np.ndarray  # object (str, "" for vmlinux)
    types: np.ndarray  # <U1, the kallsyms type letter

    @classmethod
    def load(cls, path: str | os.PathLike[str] = "/proc/kallsyms") -> Kallsyms:
        """Parse a kallsyms file; raises KallsymsError if it is unusable."""
        p = Path(path)
        try:
            text = p.read_text(errors="replace")
        except OSError as e:
            raise KallsymsError(f"{p}: cannot read ({e.strerror or e})") from None
        return cls.parse(text, source=str(p))

    @classmethod
    def parse(cls, text: str | bytes, source: str = "kallsyms") -> Kallsyms:
        """Lines 'ADDR TYPE NAME' or 'ADDR TYPE NAME\\t[MODULE]'; malformed lines are skipped. One parser for
        both forms: CompactKallsyms.parse, whose columns are decoded here into Python strings."""
        c = CompactKallsyms.parse(text if isinstance(text, bytes) else text.encode(errors="replace"), source)
        return cls(c.addrs, c.ends, np.asarray(list(c.names), dtype=object), np.asarray(list(c.modules), dtype=object),
                   c.type_codes.view("S1").astype("<U1"))

    @classmethod
    def from_arrays(
        cls,
        addrs: Sequence[int] | np.ndarray,
        names: Sequence[str],
        modules: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
    ) -> Kallsyms:
        """Build from unsorted columns; keeps one symbol per address (see _TYPE_RANK)."""
        a = np.asarray(addrs, dtype=np.uint64)
        n = np.asarray(names, dtype=object)
        m = np.asarray(modules if modules is not None else [""] * len(a), dtype=object)
        t = np.asarray(types if types is not None else ["T"] * len(a), dtype="<U1")
        rank = np.fromiter((_TYPE_RANK.get(x, 4) for x in t), dtype=np.int8, count=len(t))
        underscore = np.fromiter((s.startswith("_") for s in n), dtype=bool, count=len(n))
        order = np.lexsort((underscore, rank, a))  # last key is primary
        a, n, m, t = a[order], n[order], m[order], t[order]
        first = np.ones(len(a), dtype=bool)
        first[1:] = a[1:] != a[:-1]
        a, n, m, t = a[first], n[first], m[first], t[first]
        ends = np.empty_like(a)
        ends[:-1] = a[1:]
        if len(a):
            ends[-1] = a[-1] + np.uint64(LAST_SYMBOL_SPAN)
        return cls(a, ends, n, m, t)

    def __len__(self) -> int:
        return len(self.addrs)

    def lookup_many(self, addresses: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Vectorized lookup: (symbol index or -1, offset into the symbol) per address."""
        q = np.asarray(addresses, dtype=np.uint64)
        if not len(self.addrs):
            return np.full(len(q), -1, np.int64), np.zeros(len(q), np.uint64)
        idx = np.searchsorted(self.addrs, q, side="right").astype(np.int64) - 1
        ok = idx >= 0
        safe = np.where(ok, idx, 0)
        ok &= q < self.ends[safe]
        offsets = np.where(ok, q - self.addrs[safe], np.uint64(0))
        return np.where(ok, idx, -1), offsets

    def lookup(self, addr: int) -> tuple[str, str, int] | None:
        """(name, module, offset) of the symbol covering ``addr``, or None."""
        idx, off = self.lookup_many(np.array([addr], dtype=np.uint64))
        i = int(idx[0])
        if i < 0:
            return None
        return str(self.names[i]), str(self.modules[i]), int(off[0])

    def address_of(self, name: str) -> int | None:
        """Start address of the first symbol called ``name`` (linear scan; for a few names only)."""
        hits = np.flatnonzero(self.names == name)
        return int(self.addrs[hits[0]]) if len(hits) else None


def _kptr_restrict() -> str:
    try:
        return Path("/proc/sys/kernel/kptr_restrict").read_text().strip()
    except OSError:
        return "?"


# ---- kallsyms, compact ------------------------------------------------------
# The one kallsyms parser (issue #11): the recorder keeps a CompactKallsyms all along (it looks up only a
# few hundred addresses); Kallsyms.parse builds its string columns from the same parse.
#
# CompactKallsyms keeps the file's bytes and, per symbol, the address, its end and where its name and
# module are in those bytes (~9 MiB for 121k symbols, against ~20 MiB for a Python string per symbol),
# and parses with numpy (no Python object per line). A name is decoded only when looked up. Same semantics
# as ``Kallsyms.from_arrays``: one symbol per address (functions before data, globals before locals, names
# without a leading underscore first), each symbol ends where the next one starts.

_HEX = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
_RANK = np.full(256, 4, np.int8)
for _t, _r in _TYPE_RANK.items():
    _RANK[ord(_t)] = _r


class CompactKallsyms:
    """kallsyms as sorted addresses plus offsets into the file's bytes; the lookups of ``Kallsyms``."""

    def __init__(self, data: bytes, addrs: np.ndarray, name_at: np.ndarray, name_len: np.ndarray,
                 mod_at: np.ndarray, mod_len: np.ndarray, types: np.ndarray | None = None):
        self._data = data
        self.addrs = addrs
        self.type_codes = types if types is not None else np.full(len(addrs), ord("T"), np.uint8)  # kallsyms letter
        self.ends = np.empty_like(addrs)
        self.ends[:-1] = addrs[1:]
        if len(addrs):
            self.ends[-1] = addrs[-1] + np.uint64(LAST_SYMBOL_SPAN)
        self._name_at, self._name_len, self._mod_at, self._mod_len = name_at, name_len, mod_at, mod_len

    @classmethod
    def load(cls, path: str | os.PathLike[str] = "/proc/kallsyms") -> CompactKallsyms:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise KallsymsError(f"{path}: cannot read ({e.strerror or e})") from None
        return cls.parse(data, source=str(path))

    @classmethod
    def parse(cls, data: bytes, source: str = "kallsyms") -> CompactKallsyms:
        """Lines 'ADDR TYPE NAME' or 'ADDR TYPE NAME\\t[MODULE]'; malformed lines are skipped."""
        if data and not data.endswith(b"\n"):
            data += b"\n"
        buf = np.frombuffer(data, np.uint8)
        ends = np.flatnonzero(buf == 10)
        starts = np.empty_like(ends)
        starts[:1] = 0
        starts[1:] = ends[:-1] + 1
        spaces = np.flatnonzero(buf == 32)
        tabs = np.flatnonzero(buf == 9)
        s1 = spaces[np.minimum(np.searchsorted(spaces, starts), max(len(spaces) - 1, 0))] if len(spaces) else ends
        width = s1 - starts
        # ADDR TYPE NAME: the first space ends the address, the type is one letter, then a space
        ok = (width >= 1) & (width <= 16) & (s1 + 3 < ends)
        s1c = np.where(ok, s1, 0)
        ok &= buf[np.minimum(s1c + 2, len(buf) - 1)] == 32
        starts, ends, s1, width = starts[ok], ends[ok], s1[ok], width[ok]
        addrs = np.zeros(len(starts), np.uint64)
        bad = np.zeros(len(starts), bool)
        for k in range(int(width.max()) if len(width) else 0):  # right-aligned digits, one column at a time
            pos = s1 - width + k
            inside = pos >= starts
            d = _HEX[buf[np.where(inside, pos, 0)]]
            bad |= inside & (d == 255)
            addrs = np.where(inside, addrs * np.uint64(16) + d.astype(np.uint64), addrs)
        keep = ~bad
        zero = int(np.count_nonzero(keep & (addrs == 0)))
        keep &= addrs != 0
        starts, ends, s1, addrs = starts[keep], ends[keep], s1[keep], addrs[keep]
        if not len(addrs):
            if zero:
                raise KallsymsError(
                    f"{source}: every address is 0 — kernel addresses are hidden "
                    f"(kernel.kptr_restrict={_kptr_restrict()}, or not running as root); "
                    "run as root with 'sysctl kernel.kptr_restrict=0' or pass a kallsyms copy taken as root"
                )
            raise KallsymsError(f"{source}: no symbols found (not a kallsyms file?)")
        types = buf[s1 + 1]
        name_at = s1 + 3
        tab = tabs[np.minimum(np.searchsorted(tabs, name_at), max(len(tabs) - 1, 0))] if len(tabs) else ends
        has_mod = tab < ends
        name_end = np.where(has_mod, tab, ends)
        mod_at = np.where(has_mod, tab + 2, ends)  # '\t[' MODULE ']'
        mod_len = np.where(has_mod, np.maximum(ends - 1 - mod_at, 0), 0)
        underscore = buf[name_at] == ord("_")
        order = np.lexsort((underscore, _RANK[types], addrs))
        first = np.ones(len(order), bool)
        sorted_addrs = addrs[order]
        first[1:] = sorted_addrs[1:] != sorted_addrs[:-1]
        pick = order[first]
        return cls(data, sorted_addrs[first], name_at[pick].astype(np.uint32),
                   (name_end - name_at)[pick].astype(np.uint16), mod_at[pick].astype(np.uint32),
                   mod_len[pick].astype(np.uint16), types[pick])

    def __len__(self) -> int:
        return len(self.addrs)

    def _name(self, i: int) -> str:
        at = int(self._name_at[i])
        return self._data[at:at + int(self._name_len[i])].decode(errors="replace")

    def _module(self, i: int) -> str:
        at = int(self._mod_at[i])
        return self._data[at:at + int(self._mod_len[i])].decode(errors="replace")

    @property
    def names(self) -> _Column:
        return _Column(self._name, len(self.addrs))

    @property
    def modules(self) -> _Column:
        return _Column(self._module, len(self.addrs))

    def lookup_many(self, addresses: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(symbol index or -1, offset into the symbol) per address."""
        return Kallsyms.lookup_many(self, addresses)  # type: ignore[arg-type]  # only addrs and ends are read

    def lookup(self, addr: int) -> tuple[str, str, int] | None:
        """(name, module, offset) of the symbol covering ``addr``, or None."""
        i = int(np.searchsorted(self.addrs, np.uint64(addr), side="right")) - 1
        if i < 0 or addr >= int(self.ends[i]):
            return None
        return self._name(i), self._module(i), addr - int(self.addrs[i])

    def address_of(self, name: str) -> int | None:
        """Start address of the first symbol called ``name`` (a scan of the file's bytes; for a few names)."""
        want = name.encode()
        hits = np.flatnonzero(self._name_len == len(want))
        for i in hits.tolist():
            at = int(self._name_at[i])
            if self._data[at:at + len(want)] == want:
                return int(self.addrs[i])
        return None


class _Column:
    """names[indices] / modules[indices] of a CompactKallsyms, decoded on demand."""

    def __init__(self, get, n: int):  # noqa: ANN001
        self._get, self._n = get, n

    def __len__(self) -> int:
        return self._n

    def __iter__(self):  # noqa: ANN204
        return (self._get(i) for i in range(self._n))

    def __getitem__(self, idx):  # noqa: ANN001, ANN204
        if np.ndim(idx) == 0:
            return self._get(int(idx))
        return np.array([self._get(int(i)) for i in np.asarray(idx).ravel()], dtype=object)


# ---- DWARF ------------------------------------------------------------------


class DwarfError(MmreplayError):
    """An ELF file is unreadable or has no DWARF line information."""


class DwarfLines:
    """Address → (file, line) from an ELF's DWARF line programs.

    Only the compilation units covering the addresses looked up are decoded
    (found through .debug_aranges when present), so a vmlinux costs as much as
    the CUs a trace touches, not the whole kernel. Addresses are ELF (link-time)
    addresses; see ``symbol_rows`` for the KASLR slide.
    """

    def __init__(self, elf_path: str | os.PathLike[str]):
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        self.path = Path(elf_path)
        try:
            self._file = open(self.path, "rb")  # kept open: CUs are parsed lazily
            self._elf = ELFFile(self._file)
        except (OSError, ELFError) as e:
            raise DwarfError(f"{self.path}: not a readable ELF file ({e})") from None
        if not self._elf.has_dwarf_info() or self._elf.get_section_by_name(".debug_line") is None:
            self._file.close()
            raise DwarfError(f"{self.path}: no DWARF line information (build with -g / CONFIG_DEBUG_INFO)")
        if self._elf.header["e_type"] == "ET_REL":
            self._file.close()
            raise DwarfError(
                f"{self.path}: a relocatable object (.o/.ko) has one address space per section; "
                "use DwarfFunctions for its functions' file:line"
            )
        self._dwarf = self._elf.get_dwarf_info()
        self._aranges = self._dwarf.get_aranges()
        self._cu_index: tuple[np.ndarray, np.ndarray, np.ndarray, set[int]] | None = None
        self._done: set[int] = set()
        # Accumulated rows of every decoded CU, merged into sorted arrays on demand.
        self._addr_parts: list[np.ndarray] = []
        self._line_parts: list[np.ndarray] = []
        self._file_parts: list[np.ndarray] = []
        self._end_parts: list[np.ndarray] = []
        self._files: list[str] = []
        self._file_ids: dict[str, int] = {}
        self._sorted: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DwarfLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def symbol_address(self, name: str) -> int | None:
        """Value of ``name`` in the ELF symbol table (used to compute the KASLR slide)."""
        symtab = self._elf.get_section_by_name(".symtab")
        if symtab is None:
            return None
        syms = symtab.get_symbol_by_name(name)
        return int(syms[0]["st_value"]) if syms else None

    def lookup(self, addr: int) -> tuple[str, int] | None:
        files, lines = self.lookup_many([addr])
        return None if files[0] is None else (files[0], int(lines[0]))

    def lookup_many(self, addresses: Iterable[int]) -> tuple[list[str | None], np.ndarray]:
        """(file or None, line or 0) for each address."""
        q = np.asarray(list(addresses), dtype=np.uint64)
        self._load_cus_for(q)
        if self._sorted is None:
            return [None] * len(q), np.zeros(len(q), dtype=np.int64)
        addr, line, file_id, end = self._sorted
        idx = np.searchsorted(addr, q, side="right").astype(np.int64) - 1
        ok = idx >= 0
        safe = np.where(ok, idx, 0)
        ok &= ~end[safe]
        files = [self._files[file_id[i]] if good else None for i, good in zip(safe, ok, strict=True)]
        return files, np.where(ok, line[safe], 0)

    # -- loading ------------------------------------------------------------------

    def _load_cus_for(self, q: np.ndarray) -> None:
        if self._aranges is not None:
            wanted = set()
            for a in np.unique(q):
                off = self._aranges.cu_offset_at_addr(int(a))
                if off is not None:
                    wanted.add(off)
        else:
            wanted = self._cus_covering(np.unique(q))
        todo = wanted - self._done
        if not todo:
            return
        for off in sorted(todo):
            cu = self._dwarf.get_CU_at(off)
            self._decode_cu(cu)
            self._done.add(off)
        self._merge()

    def _cus_covering(self, q: np.ndarray) -> set[int]:
        """Without .debug_aranges (clang does not emit it): CUs whose top DIE's ranges hold an address.

        CUs whose ranges cannot be read are always decoded.
        """
        if self._cu_index is None:
            starts, ends, offs, unknown = [], [], [], []
            for cu in self._dwarf.iter_CUs():
                spans = _cu_spans(self._dwarf, cu)
                if spans is None:
                    unknown.append(cu.cu_offset)
                for lo, hi in spans or ():
                    starts.append(lo)
                    ends.append(hi)
                    offs.append(cu.cu_offset)
            order = np.argsort(np.asarray(starts, dtype=np.uint64), kind="stable")
            self._cu_index = (
                np.asarray(starts, dtype=np.uint64)[order],
                np.asarray(ends, dtype=np.uint64)[order],
                np.asarray(offs, dtype=np.int64)[order],
                set(unknown),
            )
        starts, ends, offs, unknown = self._cu_index
        wanted = set(unknown)
        for a in q:
            # spans may overlap (rare): check every span starting at or before a
            hits = np.flatnonzero((starts <= a) & (a < ends))
            wanted.update(int(offs[h]) for h in hits)
        return wanted

    def _decode_cu(self, cu) -> None:  # cu: elftools CompileUnit
        lp = self._dwarf.line_program_for_CU(cu)
        if lp is None:
            return
        file_names = _line_program_files(lp, cu)
        first_file = 0 if lp.header["version"] >= 5 else 1
        addrs: list[int] = []
        lines: list[int] = []
        fids: list[int] = []
        ends: list[bool] = []
        for entry in lp.get_entries():
            st = entry.state
            if st is None:
                continue
            fi = st.file - first_file
            fname = file_names[fi] if 0 <= fi < len(file_names) else "??"
            fid = self._file_ids.get(fname)
            if fid is None:
                fid = self._file_ids[fname] = len(self._files)
                self._files.append(fname)
            addrs.append(st.address)
            lines.append(st.line)
            fids.append(fid)
            ends.append(bool(st.end_sequence))
        if addrs:
            self._addr_parts.append(np.asarray(addrs, dtype=np.uint64))
            self._line_parts.append(np.asarray(lines, dtype=np.int64))
            self._file_parts.append(np.asarray(fids, dtype=np.int64))
            self._end_parts.append(np.asarray(ends, dtype=bool))

    def _merge(self) -> None:
        if not self._addr_parts:
            return
        addr = np.concatenate(self._addr_parts)
        line = np.concatenate(self._line_parts)
        fid = np.concatenate(self._file_parts)
        end = np.concatenate(self._end_parts)
        # At one address, an end_sequence row sorts before the row that starts the
        # next sequence there, and among real rows the last one wins (the line
        # program's own rule); a stable sort on address keeps program order.
        order = np.lexsort((~end, addr))
        addr, line, fid, end = addr[order], line[order], fid[order], end[order]
        self._addr_parts, self._line_parts = [addr], [line]
        self._file_parts, self._end_parts = [fid], [end]
        self._sorted = (addr, line, fid, end)


def _cu_spans(dwarf, cu) -> list[tuple[int, int]] | None:
    """Address ranges of a CU from its top DIE (low_pc/high_pc or DW_AT_ranges); None if unreadable."""
    top = cu.get_top_DIE()
    attrs = top.attributes
    low = attrs.get("DW_AT_low_pc")
    base = int(low.value) if low is not None else 0
    spans: list[tuple[int, int]] = []
    try:
        if "DW_AT_ranges" in attrs:
            entries = dwarf.range_lists().get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=cu)
            for e in entries:
                if hasattr(e, "begin_offset") and e.begin_offset is not None and hasattr(e, "end_offset"):
                    absolute = getattr(e, "is_absolute", False)
                    lo, hi = (0, 0) if absolute else (base, base)
                    spans.append((int(lo + e.begin_offset), int(hi + e.end_offset)))
                elif hasattr(e, "base_address"):
                    base = int(e.base_address)
            return spans
        high = attrs.get("DW_AT_high_pc")
        if low is not None and high is not None:
            hi = int(high.value) if high.form == "DW_FORM_addr" else base + int(high.value)
            return [(base, hi)]
        return []  # no code (a CU of declarations only)
    except Exception:  # noqa: BLE001 - pyelftools raises many types on forms it cannot resolve
        return None


def _line_program_files(lp, cu) -> list[str]:
    """Full paths of a line program's file table, in its own indexing (DWARF 5: from 0, else from 1)."""
    comp_dir = _attr_str(cu.get_top_DIE(), "DW_AT_comp_dir")
    version = lp.header["version"]
    dirs = [_decode(d) for d in lp.header["include_directory"]]
    out: list[str] = []
    for fe in lp.header["file_entry"]:
        name = _decode(fe.name)
        d = fe.dir_index
        if version >= 5:
            base = dirs[d] if d < len(dirs) else ""
        else:
            base = comp_dir if d == 0 else (dirs[d - 1] if d - 1 < len(dirs) else "")
        if base and not name.startswith("/"):
            if not base.startswith("/") and comp_dir and base != comp_dir:
                base = os.path.join(comp_dir, base)
            name = os.path.join(base, name)
        out.append(os.path.normpath(name))
    return out


class DwarfFunctions:
    """Function name -> (file, line) of its definition, from DW_TAG_subprogram DIEs.

    The way to symbolize a kernel module (.ko): in a relocatable object every
    section starts at address 0, so addresses cannot be looked up, but names
    can. Reads every DIE once, which is fine for a module and too slow for a
    whole vmlinux (use DwarfLines there).
    """

    def __init__(self, elf_path: str | os.PathLike[str]):
        from elftools.common.exceptions import DWARFError, ELFError
        from elftools.elf.elffile import ELFFile

        self.path = Path(elf_path)
        self.functions: dict[str, tuple[str, int]] = {}
        try:
            with open(self.path, "rb") as f:
                elf = ELFFile(f)
                if not elf.has_dwarf_info():
                    raise DwarfError(f"{self.path}: no DWARF information (build with -g / CONFIG_DEBUG_INFO)")
                dwarf = elf.get_dwarf_info()
                for cu in dwarf.iter_CUs():
                    lp = dwarf.line_program_for_CU(cu)
                    files = _line_program_files(lp, cu) if lp is not None else []
                    first = 0 if lp is not None and lp.header["version"] >= 5 else 1
                    for die in cu.iter_DIEs():
                        if die.tag != "DW_TAG_subprogram" or "DW_AT_declaration" in die.attributes:
                            continue
                        name = _attr_str(die, "DW_AT_name")
                        fattr = die.attributes.get("DW_AT_decl_file")
                        lattr = die.attributes.get("DW_AT_decl_line")
                        if not name or fattr is None or lattr is None:
                            continue
                        fi = int(fattr.value) - first
                        if 0 <= fi < len(files):
                            self.functions.setdefault(name, (files[fi], int(lattr.value)))
        except (OSError, ELFError, DWARFError) as e:
            raise DwarfError(f"{self.path}: not a readable ELF file with DWARF ({e})") from None

    def lookup(self, name: str) -> tuple[str, int] | None:
        """(file, line) where function ``name`` (clone suffixes like .isra.0 ignored) is defined."""
        return self.functions.get(name.split(".", 1)[0])


def _decode(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _attr_str(die, name: str) -> str:
    attr = die.attributes.get(name)
    return _decode(attr.value) if attr is not None else ""


# ---- the trace's symbols table ----------------------------------------------


def kaslr_slide(kallsyms: Kallsyms, dwarf: DwarfLines, tries: int = 64) -> int:
    """Runtime minus link-time address of vmlinux.

    From `_text`/`_stext` when both have it; otherwise (a trace's symbols table
    holds only the symbols it needs) the most common difference over up to
    ``tries`` vmlinux symbols found in both.
    """
    for anchor in ("_text", "_stext", "startup_64"):
        runtime = kallsyms.address_of(anchor)
        linked = dwarf.symbol_address(anchor)
        if runtime is not None and linked is not None:
            return runtime - linked
    diffs: list[int] = []
    for name, module, addr in zip(kallsyms.names, kallsyms.modules, kallsyms.addrs, strict=True):
        if module:
            continue
        linked = dwarf.symbol_address(str(name))
        if linked is not None:
            diffs.append(int(addr) - linked)
            if len(diffs) >= tries:
                break
    if not diffs:
        raise DwarfError(f"{dwarf.path}: none of the symbols matches kallsyms (another kernel's vmlinux?)")
    return Counter(diffs).most_common(1)[0][0]


def symbol_rows(
    kallsyms: Kallsyms,
    addresses: np.ndarray | Sequence[int],
    vmlinux: Path | None = None,
    modules: Mapping[str, Path] | None = None,
) -> dict[str, list | np.ndarray]:
    """Columns of the trace's ``symbols`` table for the symbols covering ``addresses``.

    ``addr`` is a uint64 array (kernel addresses overflow Arrow's int64
    inference), the other columns are lists; TraceWriter.write takes the dict.

    With ``vmlinux`` (an ELF with DWARF matching the running kernel), vmlinux
    symbols get the file:line of their first instruction; module symbols and
    symbols the DWARF does not cover keep file/line null. ``modules`` maps a
    module name to its ``.ko`` with DWARF; its symbols get the file:line where
    the function is defined (DwarfFunctions).
    """
    idx, _ = kallsyms.lookup_many(np.asarray(addresses, dtype=np.uint64))
    used = np.unique(idx[idx >= 0])
    rows: dict[str, list | np.ndarray] = {
        "addr": kallsyms.addrs[used].copy(),
        "name": [str(n) for n in kallsyms.names[used]],
        "module": [str(m) for m in kallsyms.modules[used]],
        "file": [None] * len(used),
        "line": [None] * len(used),
    }
    if vmlinux is not None and len(used):
        with DwarfLines(vmlinux) as dwarf:
            slide = kaslr_slide(kallsyms, dwarf)
            core = [k for k, m in enumerate(rows["module"]) if m == ""]
            linked = [int(rows["addr"][k]) - slide for k in core]
            files, lines = dwarf.lookup_many(linked)
            for k, f, ln in zip(core, files, lines, strict=True):
                if f is not None:
                    rows["file"][k] = f
                    rows["line"][k] = int(ln)
    for mod, ko in (modules or {}).items():
        ks = [k for k, m in enumerate(rows["module"]) if m == mod]
        if not ks:
            continue
        funcs = DwarfFunctions(ko)
        for k in ks:
            hit = funcs.lookup(rows["name"][k])
            if hit is not None:
                rows["file"][k], rows["line"][k] = hit
    return rows


class Symbolizer:
    """Offline symbolization from a trace's ``symbols`` table (or any Kallsyms)."""

    def __init__(self, kallsyms: Kallsyms):
        self.kallsyms = kallsyms

    @classmethod
    def from_trace(cls, trace) -> Symbolizer:  # trace: replay.trace.reader.Trace
        """Build from the trace's ``symbols`` table (MissingTableError if it has none)."""
        trace.require("symbols", "symbolizing kernel stacks")
        df = trace.read("symbols")
        return cls(
            Kallsyms.from_arrays(
                df["addr"].to_numpy().astype(np.uint64),
                df["name"].to_list(),
                df["module"].to_list(),
            )
        )

    def name(self, ip: int) -> str | None:
        """Bare function name covering ``ip`` (what lock classification matches on)."""
        hit = self.kallsyms.lookup(ip)
        return hit[0] if hit else None

    def symbolize(self, ip: int) -> str:
        """"func+0xoff" (with " [module]" for modules), or the hex address if unknown."""
        return self.symbolize_many([ip])[0]

    def call_sites(self, ips: np.ndarray | Sequence[int], vmlinux: Path) -> list[tuple[str, int] | None]:
        """file:line of the call each return address in a stack comes back to (vmlinux frames only).

        Looks up ``ip - 1``, inside the call instruction, as addr2line users do
        for return addresses; the KASLR slide comes from the symbols both know.
        """
        q = np.asarray(ips, dtype=np.uint64)
        idx, _ = self.kallsyms.lookup_many(q)
        core = [k for k, i in enumerate(idx) if i >= 0 and not self.kallsyms.modules[i]]
        out: list[tuple[str, int] | None] = [None] * len(q)
        if not core:
            return out
        with DwarfLines(vmlinux) as dwarf:
            slide = kaslr_slide(self.kallsyms, dwarf)
            files, lines = dwarf.lookup_many(int(q[k]) - 1 - slide for k in core)
        for k, f, ln in zip(core, files, lines, strict=True):
            if f is not None:
                out[k] = (f, int(ln))
        return out

    def symbolize_many(self, ips: np.ndarray | Sequence[int]) -> list[str]:
        q = np.asarray(ips, dtype=np.uint64)
        idx, off = self.kallsyms.lookup_many(q)
        out = []
        for a, i, o in zip(q, idx, off, strict=True):
            if i < 0:
                out.append(f"0x{int(a):x}")
                continue
            mod = self.kallsyms.modules[i]
            out.append(f"{self.kallsyms.names[i]}+0x{int(o):x}" + (f" [{mod}]" if mod else ""))
        return out
