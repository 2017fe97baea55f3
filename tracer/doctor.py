"""`mmreplay doctor`: which probes work on this host, found by actually loading each one.

Every tier-1 family is compiled, loaded and attached on its own (then
detached); the periodic flush program is attached to its perf event; tier 2
is asked through tracer.tier2.detect(). Each row says why a probe is not
available and how to fix it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tracer import kernel_env, programs


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    tier: int  # 0: the environment itself
    ok: bool
    reason: str = ""
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _first_error(exc: BaseException, log: list[str]) -> str:
    """The most telling line of a bcc failure: the verifier/libbpf line if any, else the exception."""
    for line in log:
        low = line.lower()
        if any(w in low for w in ("error", "invalid", "denied", "not permitted", "unknown", "failed")):
            return f"{str(exc).splitlines()[0]} ({line.strip()})"[:300]
    return str(exc).splitlines()[0][:300]


def _fix_for(reason: str) -> str:
    low = reason.lower()
    if "operation not permitted" in low or "permission denied" in low:
        return "run as root; if root already, the kernel's lockdown or LSM forbids it (no fix short of a reboot)"
    if "no such file" in low:
        return "the tracepoint is missing from this kernel (older or built without it)"
    return "see the reason; 'mmreplay record' skips this probe"


def environment() -> tuple[list[Check], object | None]:
    """bcc, privileges, tracefs and headers, fixing what can be fixed."""
    checks: list[Check] = []
    notes = kernel_env.Notes([])
    bcc = None
    steps = (
        ("bcc", kernel_env.import_bcc),
        ("root", kernel_env.require_root),
        ("tracefs", lambda: kernel_env.ensure_tracefs(notes)),
        ("kernel headers", lambda: kernel_env.ensure_kernel_headers(notes)),
    )
    for name, step in steps:
        before = len(notes.changes)
        try:
            out = step()
        except kernel_env.EnvironmentProblem as e:
            checks.append(Check(name, 0, False, e.reason, e.fix))
            return checks, None
        if name == "bcc":
            bcc = out
            checks.append(Check(name, 0, True, f"bcc {getattr(bcc, '__version__', '?')} from {bcc.__file__}"))
        else:
            did = notes.changes[before:]
            checks.append(Check(name, 0, True, "; ".join(did) if did else "ready"))
    return checks, bcc


def tier1(bcc: object) -> list[Check]:
    out = []
    plan = programs.plan(programs.FAMILIES, "auto", bcc)
    for fam in programs.FAMILIES:
        missing = fam.missing_tracepoints()
        if missing:
            out.append(Check(fam.name, 1, False, f"tracepoint {missing[0]} not in this kernel",
                             "needs a newer kernel or one built with it; the recorder skips this probe"))
            continue
        mode = plan.mode(fam.name)
        err = None
        for attempt in ([plan, programs.CLASSIC] if mode == "raw" else [plan]):
            with kernel_env.captured_stderr() as log:
                try:
                    programs.load(bcc, [fam], programs.Filter(), flush=False, attach=attempt).cleanup()
                    err = None
                    break
                except Exception as e:  # noqa: BLE001 - bcc raises bare Exception
                    err = e
                    if mode == "raw":
                        mode = f"classic (raw failed: {_first_error(e, log)})"
        if err is None:
            how = "raw tracepoint(s)" if mode == "raw" else \
                f"classic tracepoint(s), the costlier fallback: {plan.reason(fam.name) or mode}"
            out.append(Check(fam.name, 1, True, f"loaded and attached {len(fam.tracepoints)} {how}: {fam.doc}"))
        else:
            reason = _first_error(err, log)
            out.append(Check(fam.name, 1, False, reason, _fix_for(reason)))
    with kernel_env.captured_stderr() as log:
        try:
            b = programs.load(bcc, [], programs.Filter())
            b.attach_perf_event(ev_type=bcc.PerfType.SOFTWARE, ev_config=bcc.PerfSWConfig.CPU_CLOCK,
                                fn_name=b"mmr_flush", sample_period=100_000_000, cpu=-1)
            b.cleanup()
            err = None
        except Exception as e:  # noqa: BLE001
            err = e
    if err is None:
        out.append(Check("flush timer", 1, True, "cpu-clock perf event flushes partly filled batches"))
    else:
        reason = _first_error(err, log)
        out.append(Check("flush timer", 1, False, reason,
                         "events of quiet CPUs then arrive only at stop; recording still works"))
    return out


def tier2(bcc: object) -> list[Check]:
    try:
        from tracer.tier2 import detect
    except ImportError:
        return [Check("tier 2", 2, False, "tracer.tier2 is not installed", "")]
    with kernel_env.captured_stderr():
        try:
            rows = detect(bcc)
        except Exception as e:  # noqa: BLE001
            return [Check("tier 2", 2, False, f"detection failed: {e}", "")]
    return [Check(name, 2, ok, reason, fix) for name, ok, reason, fix in rows]


def run_checks() -> list[Check]:
    checks, bcc = environment()
    if bcc is None:
        return checks
    return checks + tier1(bcc) + tier2(bcc)
