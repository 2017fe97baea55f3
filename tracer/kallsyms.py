"""The running kernel's symbols for the recorder, parsed in bulk and kept compact.

The recorder needs kallsyms all along (lock classes of waits, the probe's own frames at the top of a
stack) but looks up only a few hundred addresses. ``replay.symbols.Kallsyms`` keeps one Python string per
symbol (~120k of them here: ~20 MiB resident, ~40 MiB while parsing); this keeps the file's bytes and, per
symbol, the address, its end and where its name and module are in those bytes (~9 MiB), and parses with
numpy (no Python object per line). A name is decoded only when looked up. Same semantics as
``Kallsyms.from_arrays``: one symbol per address (functions before data, globals before locals, names
without a leading underscore first), each symbol ends where the next one starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from replay.symbols import _TYPE_RANK, LAST_SYMBOL_SPAN, Kallsyms, KallsymsError

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
                 mod_at: np.ndarray, mod_len: np.ndarray):
        self._data = data
        self.addrs = addrs
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
                raise KallsymsError(f"{source}: every address is 0 — kernel addresses are hidden (kernel.kptr_restrict,"
                                    " or not running as root); run as root with 'sysctl kernel.kptr_restrict=0'")
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
                   mod_len[pick].astype(np.uint16))

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
