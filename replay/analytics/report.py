"""`mmreplay report`: one self-contained HTML page of plots and tables, plus the plots as PNG files.

The page embeds its figures as base64 PNG and its style inline, so it opens
offline and can be mailed around. Sections whose tables the input lacks say
so (with the probe that would fill them) instead of failing the report.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from replay.analytics import plots, queries
from replay.analytics.preempt import sections as preempt_sections
from replay.analytics.sched import latencies
from replay.analytics.source import Source
from replay.errors import MmreplayError
from replay.trace import safeio

#: How many preempt-off sections the timeline shows.
TIMELINE_TOP = 20
#: How many metrics the comparison chart shows.
COMPARE_ROWS = 30
TABLE_ROWS = 15


@dataclass
class Figure:
    """One plot: embedded in the page and written beside it as <stem>-<key>.png."""

    key: str
    title: str
    caption: str
    png: bytes


@dataclass
class Section:
    """One heading of the page with its figures, tables and notes on what could not be shown."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, pl.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _group_label(src: Source) -> str:
    return "policy_set" if src.is_results else "lock_class"


def _curves(df: pl.DataFrame, key: str | None) -> dict[str, np.ndarray]:
    if key is None or key not in df.columns:
        return {"all": df["dur"].to_numpy()} if df.height else {}
    return {
        str(part[key][0]): part["dur"].to_numpy()
        for part in df.sort(key).partition_by(key, maintain_order=True)
    }


def _attempt(section: Section, what: Callable[[], None]) -> None:
    """Run one part of a section; a missing table or unreadable data becomes a note, not a failed report."""
    try:
        what()
    except MmreplayError as e:
        section.notes.append(f"Not shown: {e}")
    except pl.exceptions.PolarsError as e:
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        section.notes.append(f"Not shown: {section.title.lower()} could not be computed: {first}")


def _add(section: Section, key: str, title: str, caption: str, png: bytes | None, empty: str) -> None:
    """Adds the figure, or says in one sentence why there is none (``empty``)."""
    if png is None:
        section.notes.append(empty)
    else:
        section.figures.append(Figure(key, title, caption, png))


def lock_section(src: Source) -> Section:
    s = Section("Lock waits and holds")
    key = _group_label(src)

    def figure() -> None:
        waits = src.scan("lock_waits", "the wait CDF").select(pl.col(key).cast(pl.String), "dur").collect()
        per = "policy set" if src.is_results else "lock class"
        if waits.height == 0:
            s.notes.append(f"{src.name_of('lock_waits')} has no rows: there were no contended lock waits.")
            return
        _add(s, "wait_cdf", f"Lock wait CDF per {per}",
             f"How long contended lock acquisitions waited ({src.name_of('lock_waits')}), one curve per {per}.",
             plots.cdf(_curves(waits, key), f"Lock wait time per {per}", "wait (µs)"),
             "Every contended wait lasted 0 ns: no CDF to draw on a log axis.")

    def tables() -> None:
        for query, what in (("waits", "Contended lock waits"), ("holds", "Lock holds")):
            if not src.has("lock_waits" if query == "waits" else "lock_holds"):
                continue
            df = queries.run(src, query, ["class"])
            s.tables.append((f"{what} by class", df.drop(c for c in df.columns if c.startswith(("mean", "min")))))

    _attempt(s, figure)
    _attempt(s, tables)
    return s


def sched_section(src: Source) -> Section:
    s = Section("Scheduling latency")

    def figure() -> None:
        lat = latencies(src).collect()
        key = "policy_set" if src.is_results else None
        if lat.height == 0:
            s.notes.append("This input has no wakeup-to-run latencies.")
            return
        per = "per policy set" if src.is_results else "all woken tasks"
        _add(s, "sched_cdf", f"Scheduling latency CDF ({per})",
             "How long woken tasks waited from their wakeup to running on a CPU." if not src.is_results
             else "How long the simulator's injected high-priority probe waited from its wakeup to running "
             "(sim_probe).",
             plots.cdf(_curves(lat, key), f"Scheduling latency ({per})", "latency (µs)"),
             f"All {lat.height:,} wakeup-to-run latencies are 0 ns: no CDF to draw on a log axis.")
        s.tables.append(("Scheduling latency", queries.run(src, "sched_latency", [] if src.is_results else ["task"],
                                                           limit=TABLE_ROWS)))

    def delay() -> None:
        lat = latencies(src, preempted=True).collect()
        if lat.height == 0:
            return
        key = "policy_set" if src.is_results else None
        per = "per policy set" if src.is_results else "all tasks"
        what = ("every simulated switch-in of a workload task (sim_sched)" if src.is_results
                else "wakeup or preemption to switch-in, as perf sched latency measures it")
        _add(s, "delay_cdf", f"Run delay CDF ({per})",
             f"How long tasks were runnable before they ran ({what}); zero delays are counted in the legend.",
             plots.cdf(_curves(lat, key), f"Run delay ({per})", "delay (µs)"),
             f"All {lat.height:,} run delays are 0 ns (every task ran at once): no CDF to draw on a log axis.")

    _attempt(s, figure)
    _attempt(s, delay)
    return s


def tlb_section(src: Source) -> Section:
    s = Section("TLB flushes")

    def figure() -> None:
        hist = queries.run(src, "tlb_hist", [])
        s.figures.append(Figure("flush_hist", "TLB flush sizes", "How many pages each TLB flush covered, in log2 "
                                "buckets; 'full' is TLB_FLUSH_ALL; x86 flushes everything above 33 pages.",
                                plots.histogram(hist, "TLB flush size", "pages flushed")))
        s.tables.append(("TLB flushes by reason", queries.run(src, "tlb", ["reason"])))

    _attempt(s, figure)
    return s


def gather_section(src: Source) -> Section:
    s = Section("Page-freeing batches")

    def figure() -> None:
        hist = queries.run(src, "gather_hist", [])
        s.figures.append(Figure("gather_hist", "Gather batch sizes", "How many pages each mmu_gather window freed "
                                "(or each batched free burst, without tier 2).",
                                plots.histogram(hist, "Pages per batch", "pages")))
        s.tables.append(("Batch sizes", queries.run(src, "gathers", [])))

    _attempt(s, figure)
    return s


def preempt_section(src: Source) -> Section:
    s = Section("Preemption-off sections")

    def figure() -> None:
        secs = preempt_sections(src).collect()
        if secs.height == 0:
            s.notes.append("This input has no preempt-off sections.")
            return
        if src.is_results:
            secs = secs.with_columns(pl.format("{} seed {} cpu{}", "policy_set", "seed", "cpu").alias("lane"))
        else:
            secs = secs.with_columns(pl.format("cpu{}", "cpu").alias("lane"))
        top = secs.sort("dur", descending=True)
        per_set = TIMELINE_TOP
        if src.is_results:  # the longest of each policy set, so every set is on the timeline
            per_set = max(1, TIMELINE_TOP // secs["policy_set"].n_unique())
            top = top.filter(pl.int_range(pl.len()).over("policy_set") < per_set)
        else:
            top = top.head(TIMELINE_TOP)
        title = (f"The longest preempt-off sections, {per_set} of each policy set" if src.is_results
                 else f"The {top.height} longest preempt-off sections")
        s.figures.append(Figure("preempt_timeline", title,
                                "When the longest sections ran with preemption off: each bar is one section at its "
                                "time on its CPU, labelled with its length"
                                + ("" if src.is_results else " (recorded: spinning waits and spinlock holds, "
                                   "lower bounds of the true sections)") + ".",
                                plots.timeline(top, "lane", "Longest preempt-off sections",
                                               src.trace.manifest.start_ns)))
        limit = 5 if src.is_results else 10  # per policy set for results
        s.tables.append(("Longest preempt-off sections", queries.run(src, "preempt_off", [], limit=limit)))

    _attempt(s, figure)
    return s


def compare_section(src: Source, other: Source | None) -> Section | None:
    if other is None:
        return None
    s = Section("Recorded versus simulated")
    def table() -> None:
        df = queries.run(src, "compare", ["class"], other)
        keep = [c for c in df.columns if not (c.endswith("_mean_ns") or c.endswith("_ratio") or c == "seeds")]
        s.tables.append(("Lock waits and holds, recorded (rec) vs simulated (sim, per seed)", df.select(keep)))

    _attempt(s, table)
    return s


def policy_section(src: Source) -> Section | None:
    """The simulator's own between-policy differences with their 95% intervals (sim_comparison)."""
    if not (src.is_results and src.trace.has("sim_comparison")):
        return None
    s = Section("Policy sets compared (differences over seeds)")
    df = labels_text(src.trace.read("sim_comparison"))
    if df.height == 0:
        s.notes.append("sim_comparison has no rows: only one policy set was replayed.")
        return s
    # an interval excludes 0 only when it exists and lies wholly on one side of it
    significant = ((pl.col("ci_low") > 0) | (pl.col("ci_high") < 0)).fill_null(False)
    base = pl.col("base_mean")
    defined = base.is_not_null() & (base != 0)
    df = df.with_columns(
        significant.alias("ci_excludes_0"),
        pl.when(defined).then(100 * pl.col("diff_mean") / base.abs()).alias("rel"),
        pl.when(defined).then(100 * pl.col("ci_low") / base.abs()).alias("lo"),
        pl.when(defined).then(100 * pl.col("ci_high") / base.abs()).alias("hi"),
        pl.concat_str([pl.col("metric"), pl.lit(" "), pl.col("lock_class").fill_null(""), pl.lit(" "),
                       pl.col("kind").fill_null(""), pl.lit(" ("), pl.col("other"), pl.lit(" vs "), pl.col("base"),
                       pl.lit(")")]).str.replace_all(r"\s+", " ").alias("label"),
    )
    unchanged = df.filter(pl.col("rel").is_null() & (pl.col("diff_mean") == 0))
    shown = df.filter(pl.col("rel").is_not_null()).sort(
        [pl.col("ci_excludes_0"), pl.col("rel").abs()], descending=True).head(COMPARE_ROWS)
    _add(s, "policy_diff", "Differences between policy sets, with 95% intervals",
         "How much each metric changes from the base policy set (mean of the per-seed differences, in % of the "
         "base, with its 95% t-interval); red where the interval excludes 0"
         + (f"; the {COMPARE_ROWS} largest shown" if df.height > COMPARE_ROWS else "") + ".",
         plots.differences(shown.select("label", "rel", "lo", "hi", pl.col("ci_excludes_0").alias("excludes0")),
                           "Other − base (% of base)"),
         "No metric has a non-zero base value: no relative differences to draw.")
    if unchanged.height:
        s.notes.append("0 under every policy set (left out): "
                       + ", ".join(sorted(set(unchanged["label"].str.replace(r" \(.*", "").to_list()))) + ".")
    table = df.filter(pl.col("ci_excludes_0")).sort(pl.col("rel").abs(), descending=True, nulls_last=True)
    s.tables.append(("Differences whose 95% interval excludes 0 (other − base, mean over paired seeds)",
                     table.drop("label", "lo", "hi", "ci_excludes_0").rename({"rel": "diff_%"})))
    return s


def labels_text(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col(c).cast(pl.String) for c, t in df.schema.items()
                           if isinstance(t, (pl.Enum, pl.Categorical)))


def build(src: Source, other: Source | None = None) -> list[Section]:
    out = [lock_section(src), sched_section(src)]
    if not src.is_results:  # the simulator counts flushes and frees (in the comparison) but writes no such tables
        out += [tlb_section(src), gather_section(src)]
    out.append(preempt_section(src))
    extra = [policy_section(src), compare_section(src, other)]
    return out + [s for s in extra if s is not None]


# -- HTML --------------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .8em; margin: .8em 0; }
th, td { border: 1px solid #ddd; padding: .25em .5em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; } div.wide { overflow-x: auto; }
figure { margin: 1em 0; } figcaption { font-size: .9em; color: #555; }
img { max-width: 100%; } .note { color: #8a4b00; } dl { display: grid; grid-template-columns: max-content auto; }
dt { font-weight: bold; margin-right: 1em; }
"""


def _fmt(v: object, col: str) -> str:
    if v is None:
        return "–"
    if (col.endswith("_ns") or col == "dur") and isinstance(v, (int, float)):
        return f"{v / 1000:,.2f}"
    if col == "ts" and isinstance(v, float):
        return f"{v:.6f}"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, int) and col in ("lock_addr", "mm", "address"):
        return hex(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def html_table(caption: str, df: pl.DataFrame, t0: int = 0) -> str:
    """The first TABLE_ROWS rows; durations in µs, ``ts`` as seconds since the start of the recording (t0)."""
    if "ts" in df.columns and df.schema["ts"].is_integer():
        df = df.with_columns(((pl.col("ts") - t0) / 1e9).alias("ts"))
    heads = [c[:-3] + " (µs)" if c.endswith("_ns") else "dur (µs)" if c == "dur" else "t (s)" if c == "ts" else c
             for c in df.columns]
    numeric = [dt.is_numeric() for dt in df.dtypes]
    rows = []
    for r in df.head(TABLE_ROWS).iter_rows():
        cells = (f'<td{" class=num" if n else ""}>{html.escape(_fmt(v, c))}</td>'
                 for v, c, n in zip(r, df.columns, numeric, strict=True))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p>({df.height - TABLE_ROWS} more rows: see <code>mmreplay query</code>)</p>" if df.height > TABLE_ROWS \
        else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    return (f'<div class="wide"><table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{"".join(rows)}'
            f"</table></div>{more}")


def render(src: Source, sections: list[Section]) -> str:
    m = src.trace.manifest
    kind = "replay results" if src.is_results else "recorded trace"
    facts = {
        "input": f"{src.path} ({kind}, {m.source})",
        "host": f"Linux {m.host.kernel_release} {m.host.arch}, {m.host.cpus} CPUs, preempt {m.host.preempt_model}",
        "span": f"{(m.end_ns - m.start_ns) / 1e9:.3f} s",
        "tables": ", ".join(f"{t} ({src.trace.rows(t):,})" for t in src.trace.tables),
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>mmreplay report: {html.escape(Path(src.path).name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>mmreplay report: {html.escape(Path(src.path).name)}</h1>",
        "<dl>" + "".join(f"<dt>{k}</dt><dd>{html.escape(v)}</dd>" for k, v in facts.items()) + "</dl>",
    ]
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        for f in s.figures:
            data = base64.b64encode(f.png).decode()
            parts.append(f'<figure id="{f.key}"><img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
                         f"<figcaption><b>{html.escape(f.title)}.</b> {html.escape(f.caption)}</figcaption></figure>")
        for caption, df in s.tables:
            parts.append(html_table(caption, df, m.start_ns))
        for note in s.notes:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(src: Source, out: str | os.PathLike[str], other: Source | None = None, *, force: bool = False) -> list[Path]:
    """Write the page and its PNGs (``<stem>-<figure>.png`` beside it); returns the files written.

    Every file is checked before any is written (replay.trace.safeio): an existing one is replaced only
    with ``force`` and only if this report wrote it; none is written through a link.
    """
    out = Path(out)
    sections = build(src, other)
    files = [(out.with_name(f"{out.stem}-{f.key}.png"), f.png) for s in sections for f in s.figures]
    page = render(src, sections).encode()
    for path, _ in [(out, page), *files]:
        safeio.check_file(path, force=force, ours=_ours)
    for path, data in files:
        safeio.write_file(path, data, force=force, ours=_ours)
    safeio.write_file(out, page, force=force, ours=_ours)
    return [out, *(path for path, _ in files)]


def _ours(head: bytes) -> bool:
    """Whether a file's first bytes are a page or a PNG that mmreplay report wrote."""
    if head.startswith(b"<!DOCTYPE html>"):
        return b"<title>mmreplay report:" in head
    return head.startswith(b"\x89PNG") and b"mmreplay report" in head
