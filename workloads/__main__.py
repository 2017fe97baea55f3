"""`python3 -m tracer.workloads`: list, describe, build and run the workload programs."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from replay.errors import MmreplayError

from . import command, describe, names, spec


def _params(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise MmreplayError(f"parameter {pair!r} is not KEY=VALUE")
        value: object = text
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        else:
            try:
                value = int(text, 0)
            except ValueError:
                pass
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m tracer.workloads", description=__doc__)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="workload names, one a line, with what they do")
    d = sub.add_parser("describe", help="what a workload does and its parameters")
    d.add_argument("name")
    for action in ("command", "run"):
        c = sub.add_parser(action, help="print the argv (command) or run it (run)")
        c.add_argument("name")
        c.add_argument("tasks", type=int)
        c.add_argument("seconds", type=float, help="0: until SIGINT/SIGTERM")
        c.add_argument("param", nargs="*", help="KEY=VALUE overrides, e.g. region_bytes=4194304 mode=threads")
    args = p.parse_args(argv)
    try:
        if args.action == "list":
            for name in names():
                print(f"{name:<24} {' '.join(spec(name).description.split())}")
        elif args.action == "describe":
            print(describe(args.name))
        else:
            argv_ = command(args.name, args.tasks, args.seconds, **_params(args.param))
            if args.action == "command":
                print(shlex.join(argv_))
            else:
                return subprocess.run(argv_).returncode
    except MmreplayError as e:
        print(f"tracer.workloads: error: {e}", file=sys.stderr)
        return e.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
