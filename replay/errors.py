"""Errors the user can act on: the CLI prints them as one line and exits 2."""

from __future__ import annotations


class MmreplayError(Exception):
    """A problem with the user's input or environment, not a bug.

    The message is a single line that names the file or option at fault.
    """

    exit_status = 2


class TraceError(MmreplayError):
    """A trace directory or one of its files is missing, corrupt or of the wrong version."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingTableError(TraceError):
    """The trace lacks a table some analysis or policy needs."""

    def __init__(self, path: object, table: str, needed_for: str, filled_by: str):
        self.table = table
        super().__init__(
            path,
            f"no '{table}' table, needed for {needed_for}; it is filled by {filled_by}",
        )


class UsageError(MmreplayError):
    """A nonsensical combination of options or an invalid option value."""


class InconsistencyError(MmreplayError):
    """mmreplay contradicted itself (a bug, not bad input): one line naming the trace, the thread and the
    simulated time, so the failure can be reported and reproduced."""

    exit_status = 3
