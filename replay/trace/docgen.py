"""Regenerate the column reference in docs/TRACE_FORMAT.md from replay.trace.schema.

``python -m replay.trace.docgen`` rewrites the generated blocks in place;
``--check`` exits 1 if the document is stale (the test suite runs it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from replay.trace.schema import TABLES_BY_NAME, describe

DOC = Path(__file__).resolve().parents[2] / "docs" / "TRACE_FORMAT.md"
_BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (\w+) tables -->\n)(.*?)(<!-- END GENERATED -->)", re.S)


def markdown(kind: str) -> str:
    """The column tables of every table of one kind ("trace" or "results")."""
    out: list[str] = []
    for t in TABLES_BY_NAME.values():
        if t.kind != kind:
            continue
        out += [f"### `{t.name}`", "", t.doc, "", f"Filled by: {t.source}.", ""]
        out += ["| column | type | unit | meaning |", "|---|---|---|---|"]
        for c in t.columns:
            null = " (nullable)" if c.nullable else ""
            meaning = c.meaning + (": " + ", ".join(f"`{v}`" for v in c.values) if c.values else "")
            out.append(f"| `{c.name}` | {describe(c.type)}{null} | {c.unit} | {meaning} |")
        out.append("")
    return "\n".join(out)


def regenerate(text: str) -> str:
    return _BLOCK.sub(lambda m: m.group(1) + markdown(m.group(2)) + m.group(4), text)


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    new = regenerate(text)
    if "--check" in argv:
        if new != text:
            print(f"{DOC} is stale: run python -m replay.trace.docgen", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
