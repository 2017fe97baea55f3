"""The input of every query: a recorded trace or replay results, opened once.

Replay results are trace-format directories (manifest kind "results") whose
tables are the simulated twins of the recorded ones, named ``sim_<name>``, with
the leading columns ``policy_set`` and ``seed``. A query asks for the recorded
name; :meth:`Source.scan` hands back the twin when the input is results, and
:attr:`Source.keys` says which grouping columns that adds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import polars as pl

from replay.errors import MissingTableError
from replay.trace.reader import Trace

#: Recorded table -> its simulated twin in replay results.
SIM_TWINS: dict[str, str] = {
    "lock_waits": "sim_lock_waits",
    "lock_holds": "sim_lock_holds",
    "syscalls": "sim_ops",
    "preempt_off": "sim_preempt_off",
    "sched_latency": "sim_probe",
    "sched_delay": "sim_sched",
}

#: Columns that are low-cardinality labels: cast to Utf8 on output, so that recorded
#: (pl.Enum) and simulated (Utf8 or Categorical) frames join and print alike.
LABELS = ("lock_class", "mode", "reason", "name", "kind", "op", "policy_set", "type", "source", "comm", "caller",
          "caller_site", "cause")


@dataclass
class Source:
    """A trace or results directory, with the table-name mapping queries need."""

    trace: Trace
    _schemas: dict[str, pl.Schema] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Source:
        return cls(Trace.open(path))

    @property
    def path(self) -> str:
        return str(self.trace.path)

    @property
    def is_results(self) -> bool:
        m = self.trace.manifest
        return m.kind == "results" or any(t.startswith("sim_") for t in self.trace.tables)

    @property
    def keys(self) -> list[str]:
        """Grouping columns every query adds: the policy set for results, none for traces."""
        return ["policy_set"] if self.is_results else []

    def name_of(self, table: str) -> str:
        """The table a query reads for the recorded table ``table`` in this input."""
        if self.is_results and table in SIM_TWINS:
            return SIM_TWINS[table]
        return table

    def has(self, table: str) -> bool:
        return self.trace.has(self.name_of(table))

    def require(self, table: str, needed_for: str) -> str:
        """The name of the table to read; MissingTableError (one line, exit 2) when absent."""
        name = self.name_of(table)
        if name.startswith("sim_"):
            if not self.trace.has(name):
                raise MissingTableError(self.trace.path, name, needed_for, "mmreplay replay")
        else:
            self.trace.require(name, needed_for)
        return name

    def scan(self, table: str, needed_for: str) -> pl.LazyFrame:
        """The table (or its simulated twin) as a memory-mapped LazyFrame."""
        return self.trace.scan(self.require(table, needed_for))

    def schema(self, table: str) -> pl.Schema:
        """Column names and types of a table without reading its data."""
        name = self.name_of(table)
        if name not in self._schemas:
            self._schemas[name] = self.trace.scan(name).collect_schema()
        return self._schemas[name]

    def runs(self) -> pl.DataFrame:
        """The (policy_set, seed) runs of replay results, from every table that has both columns.

        Read from all tables because a run may leave some of them without rows (no contention).
        """
        frames = []
        for name in self.trace.tables:
            lf = self.trace.scan(name)
            if {"policy_set", "seed"} <= set(lf.collect_schema().names()):
                frames.append(lf.select(pl.col("policy_set").cast(pl.String), pl.col("seed").cast(pl.Int32)))
        if not frames:
            return pl.DataFrame(schema={"policy_set": pl.String, "seed": pl.Int32})
        return pl.concat(frames).unique().sort("policy_set", "seed").collect()

    def tasks(self) -> pl.LazyFrame | None:
        """tid -> comm (first name seen), or None when the input has no tasks table."""
        if not self.trace.has("tasks"):
            return None
        return self.trace.scan("tasks").group_by("tid").agg(pl.col("comm").first(), pl.col("pid").first())


def labels_to_text(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Cast label columns (enums, categoricals) to Utf8 so outputs from traces and results agree."""
    schema = lf.collect_schema()
    casts = [
        pl.col(c).cast(pl.String)
        for c in LABELS
        if c in schema and isinstance(schema[c], (pl.Enum, pl.Categorical))
    ]
    if schema.get("mode") == pl.Boolean:  # a mode derived from contention flags (grouping._mode)
        casts.append(pl.when(pl.col("mode")).then(pl.lit("read")).otherwise(pl.lit("write")).alias("mode"))
    return lf.with_columns(casts) if casts else lf
