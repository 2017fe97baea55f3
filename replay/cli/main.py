"""Entry point: dispatches to one module per subcommand and turns user errors into one line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from replay.errors import MmreplayError

#: Subcommand modules under replay.cli, in the order `--help` lists them. Each
#: defines ``add_parser(subparsers)`` and ``run(args) -> int``; they import
#: their heavy dependencies (bcc, the simulator) inside ``run``.
COMMANDS = ("record", "doctor", "info", "replay", "sweep", "synth", "query", "report", "export", "repair")


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("mmreplay")
    except PackageNotFoundError:
        ver = "unknown (not installed)"
    parser = argparse.ArgumentParser(
        prog="mmreplay",
        description="Record mm lock and mmu_gather activity, replay it under other policies, query the results.",
    )
    parser.add_argument("--version", action="version", version=f"mmreplay {ver}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"replay.cli.{name}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except MmreplayError as e:
        print(f"mmreplay: error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("mmreplay: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `mmreplay query ... | head`: the reader went away; not an error.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
