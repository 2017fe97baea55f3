"""Entry point: dispatches to one module per subcommand and turns user errors into one line."""

from __future__ import annotations

import argparse
import errno
import functools
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from replay.errors import MmreplayError

#: Set (to anything) to let unexpected exceptions through with their traceback (tests, bug reports).
DEBUG_ENV = "MMREPLAY_DEBUG"


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (``mmreplay replay: error: argument --cpus: ...``), exit 2."""

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> object:
        # `--opt=--` would reach the option as an empty list (argparse drops the '--'): not a value
        if action.nargs is None and action.option_strings and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value, not '--'")
        return super()._get_values(action, arg_strings)

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}{hint}\n")

#: Subcommand modules under replay.cli, in the order `--help` lists them. Each
#: defines ``add_parser(subparsers)`` and ``run(args) -> int``; they import
#: their heavy dependencies (bcc, the simulator) inside ``run``.
COMMANDS = ("record", "doctor", "info", "replay", "sweep", "synth", "query", "report", "export", "repair")


@functools.lru_cache(maxsize=1)
def build_parser() -> argparse.ArgumentParser:
    """The whole command line (built once per process: tests and tools call main() many times)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("mmreplay")
    except PackageNotFoundError:
        ver = "unknown (not installed)"
    parser = Parser(
        prog="mmreplay",
        description="Record mm lock and mmu_gather activity, replay it under other policies, query the results.",
    )
    parser.add_argument("--version", action="version", version=f"mmreplay {ver}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"replay.cli.{name}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def no_hugepages() -> None:
    """Stop numpy asking for transparent huge pages for its large arrays (it does by default, madvise), unless
    NUMPY_MADVISE_HUGEPAGE says otherwise. A replay makes gigabytes of short-lived arrays; each fresh huge
    page is zeroed whole by the kernel: measured on the 10-s recording of docs/SCALING.md, reconstruction
    took 1.8-2.0 s of system time with them and 1.1 s without, the same peak RSS."""
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:  # numpy read it at import
        return
    import numpy as np

    setter = getattr(getattr(getattr(np, "_core", None), "multiarray", None), "_set_madvise_hugepage", None)
    if setter is None:  # numpy 1.x
        setter = getattr(getattr(getattr(np, "core", None), "multiarray", None), "_set_madvise_hugepage", None)
    if setter is not None:
        setter(False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    no_hugepages()  # forked workers inherit it
    from replay.trace.safeio import forget_inputs

    forget_inputs()  # --force protects this command's inputs, not those of an earlier call in this process
    try:
        return int(args._run(args) or 0)
    except MmreplayError as e:
        print(f"mmreplay: error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt as e:  # SIGINT; the recorder raises a subclass for SIGTERM during set-up too
        print(f"mmreplay: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return int(getattr(e, "exit_status", 130))
    except BrokenPipeError:
        # `mmreplay query ... | head`: the reader went away; not an error.
        sys.stderr.close()
        return 0
    except OSError as e:  # the environment: disk full, permission, I/O error
        if e.errno is None and os.environ.get(DEBUG_ENV):
            raise  # not from a system call (e.g. pyarrow's ArrowIOError): a reader should have said what
        where = f"{e.filename}: " if e.filename else ""
        what = e.strerror or (str(e).strip().splitlines() or [type(e).__name__])[0]
        hint = " (the trace written so far is kept; 'mmreplay repair' recovers it)" if e.errno == errno.ENOSPC else ""
        print(f"mmreplay: error: {where}{what}{hint}", file=sys.stderr)
        return 2
    except MemoryError:
        print("mmreplay: error: out of memory (the input is larger than this machine can hold, or corrupt)",
              file=sys.stderr)
        return 2
    except RecursionError:
        print("mmreplay: error: input nested too deeply", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line for the user, the traceback with MMREPLAY_DEBUG=1
        if os.environ.get(DEBUG_ENV):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:200]
        print(f"mmreplay: internal error: {type(e).__name__}: {first} (a bug in mmreplay; run with "
              f"{DEBUG_ENV}=1 for the traceback and report it)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
