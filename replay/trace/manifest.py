"""manifest.json: a trace's provenance, probes, lost-event counts and table index."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from replay.errors import TraceError
from replay.trace.schema import FORMAT_MINOR, FORMAT_NAME, FORMAT_VERSION

MANIFEST = "manifest.json"

#: Limits checked on load, before anything is sized by them (a corrupt or hostile manifest must not make
#: the reader allocate or loop without end). CONFIG_NR_CPUS is at most 8192 on every architecture.
MAX_CPUS = 8192
MAX_ROWS = 1 << 40
MAX_MANIFEST_BYTES = 64 << 20


@dataclass
class Host:
    """The machine and kernel the events come from (or that a synthetic trace models)."""

    kernel_release: str = ""
    arch: str = ""
    page_size: int = 4096
    cpus: int = 0
    preempt_model: str = "unknown"  # none | voluntary | full | lazy | rt | unknown
    hostname: str = ""

    @classmethod
    def this_machine(cls) -> Host:
        u = os.uname()
        return cls(
            kernel_release=u.release,
            arch=u.machine,
            page_size=os.sysconf("SC_PAGE_SIZE"),
            cpus=os.cpu_count() or 0,
            preempt_model=preempt_model(),
            hostname=u.nodename,
        )


def preempt_model() -> str:
    """The running kernel's preemption model, from /sys/kernel/debug/sched/preempt or uname -v."""
    try:
        text = Path("/sys/kernel/debug/sched/preempt").read_text()
        # e.g. "none voluntary (full) lazy": the active one is parenthesised.
        for word in text.split():
            if word.startswith("(") and word.endswith(")"):
                return word[1:-1]
    except OSError:
        pass
    version = os.uname().version
    if "PREEMPT_RT" in version:
        return "rt"
    if "PREEMPT_DYNAMIC" in version:
        return "dynamic"  # chosen at boot; /sys/kernel/debug/sched/preempt tells which
    if re.search(r"\bPREEMPT\b", version):
        return "full"
    return "unknown"  # none or voluntary: uname -v does not distinguish them


@dataclass
class Probe:
    """One probe (or probe family) and what became of it during recording."""

    name: str
    tier: int
    status: str = "recorded"  # recorded | skipped | failed
    reason: str = ""
    events: int = 0
    lost: int = 0  # failed ring-buffer reservations / dropped events
    unmatched: int = 0  # end events with no start, or starts never ended


@dataclass
class TableEntry:
    """Where a table lives and how many rows it holds."""

    file: str
    rows: int
    compression: str | None = None


@dataclass
class Manifest:
    """Everything about a trace except its events. Serialized as manifest.json."""

    kind: str = "trace"  # trace | results
    source: str = "recorded"  # recorded | synthetic | simulated
    host: Host = field(default_factory=Host)
    clock: str = "CLOCK_MONOTONIC (bpf_ktime_get_ns)"
    start_ns: int = 0
    end_ns: int = 0
    command: list[str] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    tables: dict[str, TableEntry] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    created: str = ""
    complete: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION
    minor: int = FORMAT_MINOR

    @property
    def lost_events(self) -> int:
        return sum(p.lost for p in self.probes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Path) -> Manifest:
        """Build from parsed JSON, checking format, version and field types."""
        if not isinstance(d, dict):
            raise TraceError(path, "manifest is not a JSON object")
        if d.get("format") != FORMAT_NAME:
            raise TraceError(path, f"not an mmreplay manifest (format is {d.get('format')!r})")
        version = d.get("version")
        if version != FORMAT_VERSION:
            raise TraceError(
                path,
                f"trace format version {version!r} is not supported "
                f"(this mmreplay reads version {FORMAT_VERSION})",
            )
        try:
            host = Host(**_fields(Host, d.get("host", {}), "host"))
            probes = [Probe(**_fields(Probe, p, "probes[]")) for p in _typed(d.get("probes", []), list, "probes")]
            tables = {k: TableEntry(**_fields(TableEntry, v, f"tables.{k}"))
                      for k, v in _typed(d["tables"], dict, "tables").items()}
            fields = {k: d[k] for k in (
                "kind", "source", "clock", "start_ns", "end_ns", "command", "tools",
                "created", "complete", "extra", "minor",
            ) if k in d}
            m = cls(host=host, probes=probes, tables=tables, **_fields(cls, fields, "manifest"))
        except KeyError as e:
            raise TraceError(path, f"manifest lacks the field {e.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise TraceError(path, f"manifest has a malformed field ({e})") from None
        if m.kind not in ("trace", "results"):
            raise TraceError(path, f"manifest kind {m.kind!r} is neither 'trace' nor 'results'")
        if not 0 <= m.host.cpus <= MAX_CPUS:
            raise TraceError(path, f"manifest host.cpus is {m.host.cpus}, not from 0 to {MAX_CPUS}")
        if not 0 < m.host.page_size <= 1 << 30 or m.host.page_size & (m.host.page_size - 1):
            raise TraceError(path, f"manifest host.page_size {m.host.page_size} is not a power of two")
        for name, t in m.tables.items():
            if not 0 <= t.rows <= MAX_ROWS:
                raise TraceError(path, f"manifest tables.{name}.rows is {t.rows}, not from 0 to {MAX_ROWS}")
        for p in m.probes:
            if min(p.events, p.lost, p.unmatched) < 0:
                raise TraceError(path, f"manifest probe {p.name!r} has a negative count")
        if any(not isinstance(c, str) for c in m.command):
            raise TraceError(path, "manifest command holds a non-string")
        return m

    @classmethod
    def load(cls, path: Path) -> Manifest:
        from replay.trace.safeio import open_regular

        try:
            fd = open_regular(path)
        except FileNotFoundError:
            raise TraceError(path, "no manifest.json: not a trace directory") from None
        try:
            with os.fdopen(fd, "rb") as f:
                data = f.read(MAX_MANIFEST_BYTES + 1)
        except OSError as e:
            raise TraceError(path, f"cannot read manifest ({e.strerror})") from None
        if len(data) > MAX_MANIFEST_BYTES:
            raise TraceError(path, f"manifest is larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a manifest")
        try:
            d = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise TraceError(path, f"corrupt manifest: {_first_line(e)}") from None
        except RecursionError:
            raise TraceError(path, "corrupt manifest: nested too deeply") from None
        return cls.from_dict(d, path)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _typed(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, not {type(value).__name__}")
    return value


#: What each annotated field type admits (bool is refused where an int is wanted).
_ADMITS = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str | None": lambda v: v is None or isinstance(v, str),
    "list[str]": lambda v: isinstance(v, list),
    "dict[str, str]": lambda v: isinstance(v, dict),
    "dict[str, Any]": lambda v: isinstance(v, dict),
}


def _fields(cls: type, d: Any, name: str) -> dict[str, Any]:
    """``d``'s entries for dataclass ``cls``, each checked against the field's annotation; unknown keys
    and wrong types are TypeErrors naming the field."""
    _typed(d, dict, name)
    known = {f.name: f.type for f in dataclasses.fields(cls)}
    out = {}
    for k, v in d.items():
        if k not in known:
            raise TypeError(f"{name} has an unknown field {k!r}")
        check = _ADMITS.get(str(known[k]))
        if check is not None and not check(v):
            raise TypeError(f"{name}.{k} has the wrong type ({type(v).__name__}: {str(v)[:40]!r})")
        out[k] = v
    return out


def tool_versions() -> dict[str, str]:
    """Versions of mmreplay and the libraries that shaped the trace."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("mmreplay", "pyarrow", "polars"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    if "bcc" in sys.modules:
        out["bcc"] = getattr(sys.modules["bcc"], "__version__", "unknown")
    return out
