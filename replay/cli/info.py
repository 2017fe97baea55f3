"""`mmreplay info TRACE`: what a trace holds, from its manifest and file footers only."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from replay.cli import ExamplesFormatter
from replay.trace.repair import describe as repair_lines
from replay.trace.repair import loss as repair_loss

EXAMPLES = """\
examples:
  mmreplay info sample_traces/page_fault1_threads
  mmreplay info results          # replay results: policy sets, seeds, options
  mmreplay info mytrace --json
"""


if TYPE_CHECKING:  # the reader imports polars: not loaded by the other commands (`record` keeps its RSS down)
    from replay.trace.reader import Trace


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("info",
                       help="summarize a trace or replay results (manifest, rows per table, lost events)",
                       epilog=EXAMPLES, formatter_class=ExamplesFormatter)
    p.add_argument("trace", help="trace or results directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def summary(trace: Trace) -> dict[str, Any]:
    """The facts `info` prints, as a JSON-ready dict. ``lost_events`` is null when it is unknown (a
    recording killed before the recorder counted, then repaired); ``repair_lost_bytes`` is what repair
    dropped (null: never repaired)."""
    m = trace.manifest
    repaired = repair_loss(m.extra)
    return {
        "path": str(trace.path),
        "format": m.format,
        "version": f"{m.version}.{m.minor}",
        "kind": m.kind,
        "source": m.source,
        "created": m.created,
        "host": vars(m.host),
        "clock": m.clock,
        "start_ns": m.start_ns,
        "end_ns": m.end_ns,
        "duration_s": (m.end_ns - m.start_ns) / 1e9,
        "command": m.command,
        "tools": m.tools,
        "probes": [vars(p) for p in m.probes],
        "lost_events": m.lost_events if repaired is None or repaired[0] else None,
        "repair_lost_bytes": None if repaired is None else repaired[1],
        "tables": {
            name: {"rows": trace.rows(name), "bytes": trace.info(name).bytes, "file": trace.info(name).path.name}
            for name in trace.tables
        },
        "extra": m.extra,
    }


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render(s: dict[str, Any]) -> str:
    h = s["host"]
    lines = [
        f"trace      {s['path']}",
        f"format     {s['format']} {s['version']} ({s['kind']}, {s['source']}), created {s['created']}",
        f"host       {h['hostname'] or '?'}: Linux {h['kernel_release']} {h['arch']}, {h['cpus']} CPUs, "
        f"page {h['page_size']} B, preempt {h['preempt_model']}",
        f"clock      {s['clock']}",
        f"span       {s['start_ns']} .. {s['end_ns']} ns ({s['duration_s']:.3f} s)",
    ]
    if s["command"]:
        lines.append(f"command    {' '.join(s['command'])}")
    lines.append(_lost_headline(s))
    lines += _not_emitted(s["extra"])
    lines += repair_lines(s["extra"])  # a repaired trace: what was lost, which tables are missing and why
    if s["probes"]:
        lines += ["", *_probe_table(s["probes"])]
    breakdown = _breakdown(s["extra"])
    if breakdown:
        lines += ["", *breakdown]
    cost = _probe_cost(s["extra"])
    if cost:
        lines += ["", f"{'probe cost (--probe-cost)':<28} {'runs':>12} {'total':>10} {'per run':>10}"]
        for tp, runs, ns in cost:
            lines.append(f"{tp:<28} {runs:>12} {ns / 1e6:>8.3f} ms {ns / runs:>7.0f} ns")
    lines += ["", f"{'table':<20} {'rows':>12} {'size':>10}"]
    for name, t in s["tables"].items():
        lines.append(f"{name:<20} {t['rows']:>12} {_size(t['bytes']):>10}")
    total = sum(t["rows"] for t in s["tables"].values())
    lines.append(f"{'total':<20} {total:>12} {_size(sum(t['bytes'] for t in s['tables'].values())):>10}")
    return "\n".join(lines)


def _lost_headline(s: dict[str, Any]) -> str:
    """The `lost` line: real loss only; for a repaired trace never a bare count that omits what repair
    dropped, and "unknown" when the recorder was killed before it counted."""
    caused = sum(p.get("recorder", 0) for p in s["probes"])
    by_recorder = f"; {caused} more caused by the recorder itself, dropped on purpose (not lost)" if caused else ""
    dropped = s.get("repair_lost_bytes")
    if dropped is None:
        return f"lost       {s['lost_events']} events of the recorded tasks{by_recorder}"
    repair = (f"repair dropped {dropped} bytes of torn or corrupt chunks (their rows unknown)" if dropped
              else "repair found no torn or corrupt chunk")
    if s["lost_events"] is None:
        return (f"lost       unknown: the recording was stopped before the recorder counted its events and "
                f"losses; {repair}")
    return f"lost       {s['lost_events']} events of the recorded tasks as the recorder counted them, and {repair}" \
           f"{by_recorder}"


def _not_emitted(extra: Any) -> list[str]:
    """The recorded tasks' switches the kernel made without emitting sched_switch (extra.not_emitted_by_kernel,
    format minor 2): apart from `lost`, which counts what the recorder failed to write, with what it means
    for replay. Nothing when there were none."""
    ne = extra.get("not_emitted_by_kernel") if isinstance(extra, dict) else None
    n = ne.get("sched_switch") if isinstance(ne, dict) else None
    if not isinstance(n, int) or n <= 0:
        return []
    after = ne.get("after_switch_to")
    who = ""
    if isinstance(after, dict) and after:
        who = " (each after a switch to " + ", ".join(f"{k} x{v}" for k, v in after.items()
                                                      if isinstance(v, int)) + ")"
    return [f"unemitted  {n} switches of the recorded tasks the kernel made without a sched_switch event{who}: "
            "not lost by the recorder, no tracer sees them; in replay the time the task was switched out "
            "stays inside the hold or system call it interrupted"]


#: A probe's reason longer than this is printed once, below the table, and referred to by number.
REASON_WIDTH = 40


def _probe_table(probes: list[dict[str, Any]]) -> list[str]:
    """One row per probe; long reasons (e.g. the same tier-2 refusal for every family) once, as notes."""
    notes: dict[str, int] = {}
    rows = [f"{'probe':<28} {'tier':>4} {'status':<9} {'events':>12} {'lost':>8} {'recorder':>8} {'unmatched':>9}"
            "  reason"]
    for p in probes:
        reason = str(p.get("reason", ""))
        if len(reason) > REASON_WIDTH:
            reason = f"[{notes.setdefault(reason, len(notes) + 1)}]"
        rows.append(f"{p['name']:<28} {p['tier']:>4} {p['status']:<9} {p['events']:>12} {p['lost']:>8} "
                    f"{p.get('recorder', 0):>8} {p['unmatched']:>9}  {reason}".rstrip())
    for text, n in notes.items():
        rows.append(f"  [{n}] {text}")
    return rows


#: The columns of the loss breakdown: lost (a recorded task's event not written), then caused by the recorder.
BREAKDOWN = (("ring_buffer_refused", "rb full", "lost"), ("bpf_recursion_skipped", "recursion", "lost"),
             ("switch_unreported", "unreported", "lost"),
             ("recorder_in_kernel", "rec:bpf", "recorder"), ("recorder_bpf_recursion", "rec:nest", "recorder"),
             ("recorder_wakeups", "rec:wake", "recorder"))


def _breakdown(extra: Any) -> list[str]:
    """The manifest's extra.lost_breakdown ({reason: {probe: n}}) as a table, probes with anything to say only."""
    bd = extra.get("lost_breakdown") if isinstance(extra, dict) else None
    if not isinstance(bd, dict):
        return []
    cols = [(key, head) for key, head, _ in BREAKDOWN if isinstance(bd.get(key), dict)]
    if not cols:
        return []
    names = list(dict.fromkeys(n for key, _ in cols for n in bd[key]))
    out = [f"{'loss by reason':<28}" + "".join(f" {head:>10}" for _, head in cols)]
    for n in names:
        vals = [bd[key].get(n, 0) if isinstance(bd[key].get(n, 0), int) else 0 for key, _ in cols]
        if any(vals):
            out.append(f"{n:<28}" + "".join(f" {v:>10}" for v in vals))
    if len(out) == 1:
        return []
    if isinstance(bd.get("nesting_overflow"), int) and bd["nesting_overflow"]:
        out.append(f"{'(no probe: nesting overflow)':<28} {bd['nesting_overflow']:>10}")
    refused = bd.get("ring_buffer_refused") if isinstance(bd.get("ring_buffer_refused"), dict) else {}
    if any(isinstance(v, int) and v > 0 for v in refused.values()):
        size = extra.get("ring_buffer_bytes")
        now = f" than {size >> 20} MiB" if isinstance(size, int) and size >= 1 << 20 else ""
        out.append(f"  rb full: the reader fell behind (starved of CPU); record with a larger --buffer-size{now}")
    out.append("  lost: rb full = the ring buffer refused a batch; recursion = a hit skipped while the same "
               "program ran on its CPU and not recorded by its backup (any task: an upper bound)"
               + ("; unreported = a switch of a recorded task the kernel made without a sched_switch event "
                  "(traces before format 1.2 counted it as lost)" if "switch_unreported" in bd else ""))
    out.append("  recorder (dropped, not lost): rec:bpf = hits on its programs' own locks or of its own process; "
               "rec:nest = contention inside its programs; rec:wake = wake-ups of its reader")
    return out


def _probe_cost(extra: Any) -> list[tuple[str, int, int]]:
    """(tracepoint, runs, run ns) from the manifest's ``probe_cost`` (record --probe-cost: the kernel's
    BPF run statistics of each program), busiest first; entries of another shape are skipped."""
    cost = extra.get("probe_cost") if isinstance(extra, dict) else None
    if not isinstance(cost, dict):
        return []
    rows = []
    for tp, v in cost.items():
        if isinstance(v, dict) and isinstance(v.get("runs"), int) and isinstance(v.get("run_ns"), int) \
                and v["runs"] > 0 and v["run_ns"] >= 0:
            rows.append((str(tp), v["runs"], v["run_ns"]))
    return sorted(rows, key=lambda r: -r[2])


def run(args: argparse.Namespace) -> int:
    from replay.trace.reader import Trace

    s = summary(Trace.open(args.trace))
    print(json.dumps(s, indent=2) if args.json else render(s))
    return 0
