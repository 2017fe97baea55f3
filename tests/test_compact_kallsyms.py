"""The recorder's compact kallsyms answers every lookup exactly as replay.symbols.Kallsyms does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.symbols import Kallsyms, KallsymsError, symbol_rows
from tracer.kallsyms import CompactKallsyms

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


def test_same_symbols_as_kallsyms() -> None:
    c, k = CompactKallsyms.parse(TEXT.encode()), Kallsyms.parse(TEXT)
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
    c, k = CompactKallsyms.parse(TEXT.encode()), Kallsyms.parse(TEXT)
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
