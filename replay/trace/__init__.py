"""The trace format: schema (the contract), writer, reader and repair."""

from replay.trace.manifest import Host, Manifest, Probe, TableEntry
from replay.trace.reader import TableInfo, Trace
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
