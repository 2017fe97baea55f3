"""The one kallsyms parser (replay.symbols.CompactKallsyms, which Kallsyms.parse also uses) answers every lookup
as Kallsyms.from_arrays does on the same symbols split line by line in Python (an independent oracle)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.symbols import CompactKallsyms, Kallsyms, KallsymsError, symbol_rows

TEXT = (
    "ffffffff81000000 T _stext\n"
    "ffffffff81000000 T srso_alias_untrain_ret\n"
    "ffffffff81000000 D _text\n"
    "ffffffff81000100 t helper\n"
    "ffffffff81000100 T helper_global\n"
    "ffffffff81000200 W weakling\n"
    "not a line\n"
    "zzzzzzzzzzzzzzzz T bad_hex\n"
    "0000000000000000 T zero\n"
    "ffffffffc0201000 t ftrace_trampoline\t[__builtin__ftrace]\n"
    "ffffffffc0a00000 t mod_fn\t[kvm]\n"
    "ffffffffc0a00040 d mod_data\t[kvm]"  # no trailing newline
)


def oracle(text: str) -> Kallsyms:
    """Kallsyms.from_arrays of the well-formed lines, split with str.split (not the parser under test)."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or any(ch not in "0123456789abcdef" for ch in parts[0]) or int(parts[0], 16) == 0:
            continue
        rows.append((int(parts[0], 16), parts[2], parts[3].strip("[]") if len(parts) > 3 else "", parts[1]))
    a, n, m, t = zip(*rows, strict=True)
    return Kallsyms.from_arrays(list(a), list(n), list(m), list(t))


def test_same_symbols_as_kallsyms() -> None:
    c, k = CompactKallsyms.parse(TEXT.encode()), oracle(TEXT)
    p = Kallsyms.parse(TEXT)  # the string form, built from the same parse
    assert list(p.names) == list(k.names) and list(p.types) == list(k.types) and (p.ends == k.ends).all()
    assert len(c) == len(k) == 6
    assert (c.addrs == k.addrs).all() and (c.ends == k.ends).all()
    assert list(c.names) == list(k.names) and list(c.modules) == list(k.modules)
    assert c.lookup(0xFFFFFFFF81000105) == ("helper_global", "", 5)
    assert c.lookup(0xFFFFFFFFC0A00041) == ("mod_data", "kvm", 1)
    assert c.lookup(0xFFFFFFFF80000000) is None
    assert c.address_of("weakling") == k.address_of("weakling") and c.address_of("nope") is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0xFFFFFFFF80FFFF00, 0xFFFFFFFFC0A20000), min_size=1, max_size=50))
def test_lookups_agree(addresses: list[int]) -> None:
    c, k = CompactKallsyms.parse(TEXT.encode()), oracle(TEXT)
    q = np.asarray(addresses, np.uint64)
    for got, want in zip(c.lookup_many(q), k.lookup_many(q), strict=True):
        assert (got == want).all()
    assert [c.lookup(a) for a in addresses] == [k.lookup(a) for a in addresses]
    assert symbol_rows(c, q)["name"] == symbol_rows(k, q)["name"]


def test_hidden_addresses_and_garbage_are_errors() -> None:
    with pytest.raises(KallsymsError, match="every address is 0"):
        CompactKallsyms.parse(b"0000000000000000 T a\n0000000000000000 t b\n")
    with pytest.raises(KallsymsError, match="no symbols"):
        CompactKallsyms.parse(b"hello world\n\n")
    with pytest.raises(KallsymsError, match="no symbols"):
        CompactKallsyms.parse(b"")
