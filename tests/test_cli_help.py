"""Every subcommand's --help ends with real examples, and record takes perf's short options."""

from __future__ import annotations

import shlex

import pytest

from replay.cli.main import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", COMMANDS)
def test_help_ends_with_two_or_three_examples_that_parse(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    examples = text[text.index("\nexamples:\n") + len("\nexamples:\n"):].strip().splitlines()
    assert 2 <= len(examples) <= 3
    parser = build_parser()
    for line in examples:
        argv = shlex.split(line.split("  #")[0])
        argv = argv[argv.index("mmreplay") + 1:]
        assert argv[0] in COMMANDS
        parser.parse_args(argv)  # every example is a valid command line (SystemExit would fail the test)


def test_record_takes_short_options_like_perf_and_bcc() -> None:
    args = build_parser().parse_args(["record", "-o", "t", "-d", "2.5", "-p", "12,13", "-t", "14",
                                      "--probes", "mmap_lock,sched_switch"])
    assert (args.duration, args.pid, args.tid, args.probes) == (2.5, [12, 13], [14], "mmap_lock,sched_switch")
