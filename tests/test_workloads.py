"""The workload programs build, run briefly, stop cleanly and do what their names say."""

from __future__ import annotations

import importlib.util
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
import tracer.workloads as wl

from replay.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]



SMALL = 1 << 20  # 256 pages: below a 2 MiB huge page, so every page faults on its own

WILL_IT_SCALE = ("page_fault1", "page_fault2", "page_fault3", "mmap1", "mmap2", "tlb_flush1", "tlb_flush2",
                 "tlb_flush3")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Build into a fresh cache, so the tests also prove that building works."""
    old = os.environ.get("MMREPLAY_WORKLOAD_CACHE")
    os.environ["MMREPLAY_WORKLOAD_CACHE"] = str(tmp_path_factory.mktemp("wl-cache"))
    yield
    if old is None:
        del os.environ["MMREPLAY_WORKLOAD_CACHE"]
    else:
        os.environ["MMREPLAY_WORKLOAD_CACHE"] = old


def small_params(name: str) -> dict:
    w = wl.spec(name)
    if hasattr(w, "region_bytes"):
        return {"region_bytes": SMALL}
    if name == "take-all-locks":
        return {"files": 64}
    if name == "kbuild":
        return {"files": 4}
    return {}


def run(name: str, tasks: int = 2, seconds: float = 0.3, tmp: Path | None = None, **params):
    argv = wl.command(name, tasks, seconds, **params, **({"workdir": tmp} if tmp else {}))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    minflt = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
    return proc, minflt


def test_names_cover_every_will_it_scale_pattern_in_both_modes_and_the_review_workloads():
    expected = {f"{t}_{m}" for t in WILL_IT_SCALE for m in ("processes", "threads")}
    expected |= {"mmap-file", "mmap-merge", "mprotect-split", "take-all-locks", "fork-exit", "kbuild"}
    assert set(wl.names()) == expected
    assert wl.names() == sorted(wl.names())


def test_unknown_name_is_a_usage_error_that_lists_the_names():
    with pytest.raises(UsageError) as e:
        wl.command("page_fault9", 2, 0.1)
    assert "page_fault9" in str(e.value) and "page_fault1_processes" in str(e.value) and "kbuild" in str(e.value)


@pytest.mark.parametrize(
    "name, tasks, seconds, params",
    [
        ("page_fault1_threads", 0, 1, {}),
        ("page_fault1_threads", 2, -1, {}),
        ("page_fault1_threads", 2, 1, {"region_bytes": 0}),
        ("page_fault1_threads", 2, 1, {"files": 3}),
        ("mmap-merge", 2, 1, {"mode": "threads"}),
        ("mprotect-split", 2, 1, {"mode": "threads"}),
        ("kbuild", 2, 1, {"mode": "fibers"}),
    ],
)
def test_nonsense_parameters_are_usage_errors(name, tasks, seconds, params):
    with pytest.raises(UsageError):
        wl.command(name, tasks, seconds, **params)


def test_describe_names_the_source_and_the_parameters():
    text = wl.describe("page_fault2_threads")
    assert "page_fault2" in text and "region_bytes=134217728" in text and "mode='threads'" in text


@pytest.mark.parametrize("name", wl.names())
def test_every_workload_builds_runs_briefly_and_exits_zero_with_a_summary(name, tmp_path):
    proc, _ = run(name, 2, 0.25, tmp_path, **small_params(name))
    if name == "take-all-locks" and not Path("/dev/kvm").exists():
        pytest.skip("/dev/kvm is absent on this host")
    assert proc.returncode == 0, proc.stderr
    s = wl.parse_summary(proc.stdout.strip().splitlines()[-1])
    assert s.name == name.split("_processes")[0].split("_threads")[0]
    assert s.fields["tasks"] == "2" and s.fields["failed"] == "0" and s.fields["stopped_by"] == "time"
    assert s.iterations > 0
    assert 0.2 <= s.seconds < 10
    assert list(tmp_path.iterdir()) == []  # temporary files are unlinked or removed


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_page_fault1_with_a_small_region_faults_once_per_page_written(mode):
    proc, minflt = run(f"page_fault1_{mode}", 2, 0.3, region_bytes=SMALL)
    assert proc.returncode == 0, proc.stderr
    s = wl.parse_summary(proc.stdout)
    # The kernel's own count (getrusage of the reaped child), not the program's claim.
    assert minflt >= 0.95 * s.iterations
    assert minflt <= s.iterations + 2000  # plus start-up faults, nothing else


def test_mmap1_does_not_touch_what_it_maps():
    proc, minflt = run("mmap1_processes", 2, 0.3, region_bytes=SMALL)
    s = wl.parse_summary(proc.stdout)
    assert s.iterations > 1000
    assert minflt < 0.05 * s.iterations * (SMALL // os.sysconf("SC_PAGE_SIZE"))


def test_take_all_locks_creates_vms_on_dev_kvm_while_the_others_fault():
    if not Path("/dev/kvm").exists():
        pytest.skip("/dev/kvm is absent on this host")
    proc = subprocess.Popen(wl.command("take-all-locks", 2, 0, files=64), stdout=subprocess.PIPE, text=True)
    try:
        opened: set[str] = set()
        deadline = time.monotonic() + 10
        while "/dev/kvm" not in opened and time.monotonic() < deadline:
            time.sleep(0.05)
            for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
                try:
                    opened.add(os.readlink(fd))
                except OSError:
                    pass
        assert "/dev/kvm" in opened  # the kernel's view: the program holds /dev/kvm open
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and int(wl.parse_summary(out).fields["vms_created"]) > 0
    proc, _ = run("take-all-locks", 3, 0.4, files=64)
    assert proc.returncode == 0, proc.stderr
    s = wl.parse_summary(proc.stdout)
    assert int(s.fields["vms_created"]) > 0  # every KVM_CREATE_VM succeeded on /dev/kvm (else exit 1)
    assert int(s.fields["vmas"]) == 128
    assert int(s.fields["faulter_iterations"]) > 0


def test_a_run_without_a_time_limit_stops_on_sigterm_and_exits_zero():
    argv = wl.command("mmap-file", 2, 0)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    s = wl.parse_summary(out)
    assert s.fields["stopped_by"] == "signal" and s.iterations > 0


def test_a_binary_older_than_its_source_is_rebuilt():
    binary = wl.build("mmap1_processes")
    os.utime(binary, (1, 1))
    rebuilt = wl.build("mmap1_processes")
    assert rebuilt == binary and binary.stat().st_mtime > 1
    again = binary.stat().st_mtime_ns
    assert wl.build("mmap1_threads").stat().st_mtime_ns == again  # up to date: left alone


def test_the_module_cli_lists_describes_and_prints_a_runnable_command(capsys):
    cli = importlib.import_module("tracer.workloads.__main__")
    assert cli.main(["list"]) == 0
    assert "take-all-locks" in capsys.readouterr().out
    assert cli.main(["command", "mmap2_threads", "2", "0.2", "region_bytes=65536"]) == 0
    argv = capsys.readouterr().out.split()
    assert argv[1:] == ["-t", "2", "-d", "0.2", "-m", "threads", "-s", "65536"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and wl.parse_summary(proc.stdout).iterations > 0
    assert cli.main(["command", "nope", "1", "1"]) == 2
    assert "unknown workload" in capsys.readouterr().err
