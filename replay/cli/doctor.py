"""`mmreplay doctor`: can this host record, and with which probes? (Loads each probe for real.)
And is the compiled simulator installed, built from this version's sources (replay/sim/cbuild.py)?"""

from __future__ import annotations

import argparse
import json
from typing import Any

from replay.cli import ExamplesFormatter

EXAMPLES = """\
examples:
  sudo mmreplay doctor          # which probes load here, and why the others do not
  sudo mmreplay doctor --json   # the same checks for scripts
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("doctor",
                       help="check which recording probes work on this host, and how to fix the others",
                       epilog=EXAMPLES, formatter_class=ExamplesFormatter)
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    return p


def render(checks: list) -> str:
    lines = [f"{'check':<22} {'tier':>4}  {'':<4} reason"]
    for c in checks:
        tier = "-" if c.tier == 0 else str(c.tier)
        lines.append(f"{c.name:<22} {tier:>4}  {'ok' if c.ok else 'NO':<4} {c.reason}")
        if not c.ok and c.fix:
            lines.append(f"{'':<33}fix: {c.fix}")
    usable = [c.name for c in checks if c.tier == 1 and c.ok and c.name != "flush timer"]
    lines.append("")
    lines.append(f"record can use: {', '.join(usable) if usable else 'nothing (see above)'}")
    return "\n".join(lines)


def simulator_checks() -> list:
    """One line per compiled part of the simulator: installed (where), or why not and what runs instead."""
    from replay.sim import cbuild, cengine, cflatten
    from tracer.doctor import Check

    fix = ("reinstall with a C compiler and this Python's headers (Debian: apt install gcc python3-dev; "
           "then pip install .)")
    out = []
    for name, load, where in (("compiled engine", cengine.load, cengine.library_path),
                              ("compiled flattening", cflatten.load, lambda: cflatten.load().__file__)):
        try:
            load()
            out.append(Check(name, 0, True, f"installed: {where()}"))
        except cbuild.EngineUnavailable as e:
            out.append(Check(name, 0, False, f"{e}; replays run the Python code instead (same results, slower)",
                             fix))
    return out


def run(args: argparse.Namespace) -> int:
    from tracer.doctor import run_checks

    checks = run_checks() + simulator_checks()
    print(json.dumps([c.as_dict() for c in checks], indent=2) if args.json else render(checks))
    return 0 if any(c.tier == 1 and c.ok for c in checks) else 1
