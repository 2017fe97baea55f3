"""The mmreplay command line: one module per subcommand (see main.COMMANDS)."""

from __future__ import annotations

import argparse


class ExamplesFormatter(argparse.HelpFormatter):
    """Wraps the description as usual but keeps an ``examples:`` epilog exactly as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)
