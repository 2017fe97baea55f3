"""manifest.json: a trace's provenance, probes, lost-event counts and table index."""

from __future__ import annotations

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
    lost: int = 0  # recorded tasks' events the recorder failed to write (extra.lost_breakdown says why)
    unmatched: int = 0  # end events with no start, or starts never ended
    recorder: int = 0  # events the recorder itself caused, dropped on purpose (never counted as lost)


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
            host = Host(**d.get("host", {}))
            probes = [Probe(**p) for p in d.get("probes", [])]
            tables = {k: TableEntry(**v) for k, v in d["tables"].items()}
            fields = {k: d[k] for k in (
                "kind", "source", "clock", "start_ns", "end_ns", "command", "tools",
                "created", "complete", "extra", "minor",
            ) if k in d}
            m = cls(host=host, probes=probes, tables=tables, **fields)
        except KeyError as e:
            raise TraceError(path, f"manifest lacks the field {e.args[0]!r}") from None
        except (TypeError, AttributeError) as e:
            raise TraceError(path, f"manifest has a malformed field ({e})") from None
        if not isinstance(m.start_ns, int) or not isinstance(m.end_ns, int):
            raise TraceError(path, "manifest start_ns/end_ns must be integers")
        for p in m.probes:
            counts = (p.events, p.lost, p.unmatched, p.recorder)
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                raise TraceError(path, f"manifest probe {p.name!r}: events, lost, unmatched and recorder must be "
                                 "non-negative integers")
        if m.kind not in ("trace", "results"):
            raise TraceError(path, f"manifest kind {m.kind!r} is neither 'trace' nor 'results'")
        return m

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise TraceError(path, "no manifest.json: not a trace directory") from None
        except OSError as e:
            raise TraceError(path, f"cannot read manifest ({e.strerror})") from None
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TraceError(path, f"corrupt manifest: {e}") from None
        return cls.from_dict(d, path)


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
