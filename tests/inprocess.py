"""Running the CLI in-process for the fuzz tests: main(argv) under an alarm, its stderr captured."""

from __future__ import annotations

import contextlib
import io
import signal

from replay.cli.main import main


class Hang(Exception):
    """A command ran past its alarm."""


def run_main(argv: list[str], seconds: int) -> tuple[int, str]:
    """(exit status, stderr) of main(argv); Hang after ``seconds``."""
    def alarm(signum, frame):
        raise Hang(f"a command ran for more than {seconds} s")

    err = io.StringIO()
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(argv)
            except SystemExit as e:  # argparse
                rc = e.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return rc, err.getvalue()
