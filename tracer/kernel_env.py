"""Make the running kernel traceable by bcc: import bcc, find kernel headers, mount tracefs.

Each step fixes what it can (and says so on stderr) and otherwise raises
EnvironmentProblem with the reason and the fix, which `mmreplay doctor`
prints and `mmreplay record` turns into a one-line error.
"""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from replay.errors import MmreplayError

#: Where Debian/Ubuntu's python3-bpfcc puts the module; the default python3 may be another build.
DIST_PACKAGES = ("/usr/lib/python3/dist-packages",)
TRACEFS = Path("/sys/kernel/tracing")


class EnvironmentProblem(MmreplayError):
    """The host cannot record (yet): carries the reason and the fix."""

    def __init__(self, what: str, reason: str, fix: str):
        self.what, self.reason, self.fix = what, reason, fix
        super().__init__(f"{what}: {reason} (fix: {fix})")


@dataclass
class Notes:
    """What preparing the environment changed on the host, to be told to the user."""

    changes: list[str]

    def say(self, msg: str) -> None:
        self.changes.append(msg)
        print(f"mmreplay: {msg}", file=sys.stderr)


def import_bcc() -> ModuleType:
    """Import bcc, also from the system dist-packages when this Python is a separate build."""
    try:
        import bcc  # noqa: F401
    except ImportError:
        for d in DIST_PACKAGES:
            if os.path.isdir(os.path.join(d, "bcc")) and d not in sys.path:
                sys.path.append(d)
        try:
            import bcc  # noqa: F401
        except ImportError as e:
            raise EnvironmentProblem(
                "bcc", f"the bcc Python module cannot be imported ({e})", "apt-get install python3-bpfcc"
            ) from None
    return sys.modules["bcc"]


def require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("privileges", "loading BPF programs needs root (CAP_BPF+CAP_PERFMON)",
                                 "run with sudo")


def ensure_tracefs(notes: Notes) -> Path:
    """Mount tracefs at /sys/kernel/tracing when it is not mounted."""
    if (TRACEFS / "events").is_dir():
        return TRACEFS
    require_root()
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True)
    if r.returncode != 0 or not (TRACEFS / "events").is_dir():
        raise EnvironmentProblem("tracefs", f"not mounted and mounting failed: {r.stderr.strip()}",
                                 f"mount -t tracefs nodev {TRACEFS}")
    notes.say(f"mounted tracefs at {TRACEFS}")
    return TRACEFS


def _pick_headers(release: str) -> tuple[str, str | None] | None:
    """The installed header tree closest to the running kernel: (arch dir, common dir)."""
    trees = sorted(p for p in glob.glob("/usr/src/linux-headers-*") if not p.endswith("-common"))
    if not trees:
        return None
    major_minor = ".".join(release.split(".")[:2])
    arch = [t for t in trees if os.path.isdir(os.path.join(t, "include"))]
    same = [t for t in arch if os.path.basename(t).removeprefix("linux-headers-").startswith(major_minor)]
    tree = (same or arch or trees)[-1]
    base = os.path.basename(tree).removeprefix("linux-headers-")
    # Debian: linux-headers-6.1.0-56-amd64 pairs with linux-headers-6.1.0-56-common.
    common = None
    parts = base.rsplit("-", 1)
    if len(parts) == 2:
        cand = f"/usr/src/linux-headers-{parts[0]}-common"
        if os.path.isdir(cand):
            common = cand
    return tree, common


def ensure_kernel_headers(notes: Notes) -> Path:
    """bcc builds against /lib/modules/$(uname -r)/build: create it from installed headers if missing."""
    release = os.uname().release
    moddir = Path("/lib/modules") / release
    build = moddir / "build"
    if (build / "include").is_dir() or (build / "Makefile").exists():
        return build
    picked = _pick_headers(release)
    if picked is None:
        raise EnvironmentProblem(
            "kernel headers",
            f"{build} does not exist and no /usr/src/linux-headers-* is installed",
            "apt-get install linux-headers-$(uname -r) (or linux-headers-amd64)",
        )
    require_root()
    tree, common = picked
    moddir.mkdir(parents=True, exist_ok=True)
    if build.exists() and not build.is_symlink():
        raise EnvironmentProblem("kernel headers", f"{build} exists but holds no kernel headers",
                                 f"remove it, or install linux-headers-{release}")
    if build.is_symlink():
        build.unlink()
    build.symlink_to(tree)
    msg = f"linked {build} -> {tree}"
    source = moddir / "source"
    if common and not source.exists():
        if source.is_symlink():
            source.unlink()
        source.symlink_to(common)
        msg += f" and {source} -> {common}"
    if not os.path.basename(tree).removeprefix("linux-headers-").startswith(release.split("-")[0]):
        msg += f" (headers are for another kernel than {release}; tracepoint programs do not depend on them)"
    notes.say(msg)
    return build


def prepare(notes: Notes | None = None) -> tuple[ModuleType, Notes]:
    """Everything `record` needs before loading a program; returns (bcc module, notes)."""
    notes = notes or Notes([])
    bcc = import_bcc()
    require_root()
    ensure_tracefs(notes)
    ensure_kernel_headers(notes)
    return bcc, notes


def tracepoint_exists(category: str, event: str) -> bool:
    return (TRACEFS / "events" / category / event / "format").exists()


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture what C code (bcc, libbpf, the verifier log) writes to fd 2; yields its lines after the block."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())
