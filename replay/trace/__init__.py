"""The trace format: schema (the contract), writer, reader and repair."""

from replay.trace.manifest import Host, Manifest, Probe, TableEntry
from replay.trace.schema import TABLES, TABLES_BY_NAME, Column, Table
from replay.trace.writer import TraceWriter, conform, write_trace

__all__ = [
    "Column",
    "Host",
    "Manifest",
    "Probe",
    "TABLES",
    "TABLES_BY_NAME",
    "Table",
    "TableEntry",
    "TableInfo",
    "Trace",
    "TraceWriter",
    "conform",
    "write_trace",
]


def __getattr__(name: str):
    """The reader (and polars with it) is imported when first asked for: `mmreplay record` never reads a trace."""
    if name in ("TableInfo", "Trace"):
        from replay.trace import reader

        return getattr(reader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
