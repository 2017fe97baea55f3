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
from typing import Any

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


# -- the running kernel's types (BTF), read through libbpf ----------------------------------------------
# Raw tracepoint programs get the tracepoint's C arguments (TP_PROTO), not the classic event record: the
# argument order and the offsets of the struct fields read through them (task_struct.pid, ...) are those
# of the RUNNING kernel, which the installed headers may not describe (here: 6.1 headers, a 6.18 kernel).
# Both come from the kernel's own BTF (/sys/kernel/btf/vmlinux) through libbpf, which bcc links.

LIBBPF_NAMES = ("libbpf.so.1", "libbpf.so.0", "libbpf.so")
_BTF_KIND_INT, _BTF_KIND_PTR, _BTF_KIND_STRUCT, _BTF_KIND_UNION = 1, 2, 4, 5
_BTF_KIND_TYPEDEF, _BTF_KIND_VOLATILE, _BTF_KIND_CONST, _BTF_KIND_RESTRICT = 8, 9, 10, 11
_BTF_KIND_FUNC_PROTO, _BTF_KIND_TYPE_TAG, _BTF_KIND_ENUM, _BTF_KIND_ENUM64 = 13, 18, 6, 19
_MODIFIERS = (_BTF_KIND_TYPEDEF, _BTF_KIND_VOLATILE, _BTF_KIND_CONST, _BTF_KIND_RESTRICT, _BTF_KIND_TYPE_TAG)


def libbpf() -> Any:
    """libbpf as a ctypes library (the one bcc's libbcc links), or None."""
    import ctypes
    import ctypes.util

    global _LIBBPF
    if _LIBBPF is None:
        names = list(LIBBPF_NAMES)
        found = ctypes.util.find_library("bpf")
        if found:
            names.append(found)
        for name in names:
            try:
                _LIBBPF = ctypes.CDLL(name, use_errno=True)
                break
            except OSError:
                continue
        else:
            _LIBBPF = False
    return _LIBBPF or None


_LIBBPF: Any = None


class KernelTypes:
    """The running kernel's BTF: tracepoint prototypes and struct member offsets."""

    def __init__(self) -> None:
        import ctypes

        lib = libbpf()
        if lib is None:
            raise EnvironmentProblem("BTF", "libbpf (libbpf.so.1) cannot be loaded", "apt-get install libbpf1")
        lib.btf__load_vmlinux_btf.restype = ctypes.c_void_p
        lib.btf__find_by_name_kind.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
        lib.btf__find_by_name_kind.restype = ctypes.c_int32
        lib.btf__type_by_id.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.btf__type_by_id.restype = ctypes.c_void_p
        lib.btf__name_by_offset.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.btf__name_by_offset.restype = ctypes.c_char_p
        lib.btf__free.argtypes = [ctypes.c_void_p]
        self._lib, self._ct = lib, ctypes
        self._btf = lib.btf__load_vmlinux_btf()
        if not self._btf or self._btf > (1 << 64) - 4096:  # libbpf returns NULL (or an ERR_PTR in old modes)
            raise EnvironmentProblem("BTF", "the kernel's BTF (/sys/kernel/btf/vmlinux) cannot be read",
                                     "a kernel built with CONFIG_DEBUG_INFO_BTF=y")

    def close(self) -> None:
        if self._btf:
            self._lib.btf__free(self._btf)
            self._btf = None

    def _type(self, tid: int) -> tuple[int, int, int, int, int]:
        """(kind, vlen, size_or_type, name_off, address) of type id tid."""
        p = self._lib.btf__type_by_id(self._btf, tid)
        if not p:
            raise KeyError(tid)
        name_off, info, st = (self._ct.c_uint32 * 3).from_address(p)
        return (info >> 24) & 0x1F, info & 0xFFFF, st, name_off, p

    def _name(self, off: int) -> str:
        return (self._lib.btf__name_by_offset(self._btf, off) or b"").decode()

    def _find(self, name: str, kind: int) -> int:
        tid = self._lib.btf__find_by_name_kind(self._btf, name.encode(), kind)
        if tid < 0:
            raise KeyError(name)
        return tid

    def _strip(self, tid: int) -> int:
        while tid:
            kind, _, st, _, _ = self._type(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = st
        return tid

    def shape(self, tid: int) -> str:
        """A type as a short string: 'int', 'ptr:task_struct', 'ptr:void', 'ptr'."""
        tid = self._strip(tid)
        if tid == 0:
            return "void"
        kind, _, st, name_off, _ = self._type(tid)
        if kind == _BTF_KIND_PTR:
            target = self._strip(st)
            if target == 0:
                return "ptr:void"
            tkind, _, _, tname, _ = self._type(target)
            if tkind in (_BTF_KIND_STRUCT, _BTF_KIND_UNION):
                return f"ptr:{self._name(tname)}"
            return "ptr"
        if kind in (_BTF_KIND_INT, _BTF_KIND_ENUM, _BTF_KIND_ENUM64):
            return "int"
        return f"kind{kind}"

    def tracepoint_args(self, event: str) -> list[str]:
        """The shapes of a tracepoint's TP_PROTO arguments (raw tracepoint ctx->args[i]), from btf_trace_<event>."""
        tid = self._strip(self._find(f"btf_trace_{event}", _BTF_KIND_TYPEDEF))
        kind, _, st, _, _ = self._type(tid)
        if kind == _BTF_KIND_PTR:
            tid = self._strip(st)
            kind, _, st, _, _ = self._type(tid)
        if kind != _BTF_KIND_FUNC_PROTO:
            raise KeyError(event)
        _, vlen, _, _, addr = self._type(tid)
        params = (self._ct.c_uint32 * (2 * vlen)).from_address(addr + 12)
        shapes = [self.shape(params[2 * i + 1]) for i in range(vlen)]
        return shapes[1:]  # the first is the probe's void *__data

    def member_offset(self, struct: str, member: str) -> int:
        """Byte offset of struct.member (looking into anonymous members); KeyError if absent."""
        def walk(tid: int, base: int) -> int | None:
            kind, vlen, _, _, addr = self._type(tid)
            kflag = bool(self._ct.c_uint32.from_address(addr + 4).value >> 31)
            m = (self._ct.c_uint32 * (3 * vlen)).from_address(addr + 12)
            for i in range(vlen):
                name_off, mtype, off = m[3 * i], m[3 * i + 1], m[3 * i + 2]
                bits = off & 0xFFFFFF if kflag else off
                name = self._name(name_off)
                if name == member:
                    return base + bits // 8
                if not name:
                    inner = self._strip(mtype)
                    if self._type(inner)[0] in (_BTF_KIND_STRUCT, _BTF_KIND_UNION):
                        hit = walk(inner, base + bits // 8)
                        if hit is not None:
                            return hit
            return None

        hit = walk(self._find(struct, _BTF_KIND_STRUCT), 0)
        if hit is None:
            raise KeyError(f"{struct}.{member}")
        return hit
