"""The project's promises to a newcomer: README's commands and links hold."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def first_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block, "README.md must open with a shell block of two commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_main_job_and_the_test_command() -> None:
    main_job, tests = first_commands()[:2]
    assert main_job.startswith("pip install . && mmreplay ")
    assert "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert first_commands()[1] in ci


def test_the_main_job_runs_on_a_shipped_sample_trace() -> None:
    trace = re.search(r"mmreplay \w+ (sample_traces/\S+)", first_commands()[0]).group(1)
    assert (ROOT / trace / "manifest.json").is_file()


def test_every_document_the_readme_links_exists() -> None:
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link
