"""The report's figures, drawn with matplotlib (Agg backend: no display, no network).

Each function takes the data it plots (small frames computed by the queries)
and returns PNG bytes; report.py embeds them and writes them next to the page.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

#: Points per CDF curve: curves are drawn from this many quantiles, not from every sample.
CDF_POINTS = 400


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": "mmreplay report"})
    plt.close(fig)
    return buf.getvalue()


def cdf_points(sorted_values: np.ndarray, points: int = CDF_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(value, fraction <= value) at up to ``points`` nearest ranks of a sorted sample."""
    n = len(sorted_values)
    ranks = np.unique(np.ceil(np.linspace(1 / points, 1, points) * n).astype(np.int64).clip(1, n))
    return sorted_values[ranks - 1], ranks / n


def cdf(curves: dict[str, np.ndarray], title: str, xlabel: str) -> bytes | None:
    """One CDF line per group; values in ns, plotted in µs on a log axis.

    A log axis cannot show zeros: each curve is the CDF of its positive values, and the
    legend says how many zeros it left out. None when no group has a positive value.
    """
    curves = {k: np.asarray(v) for k, v in curves.items()}
    if not any((v > 0).any() for v in curves.values()):
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, values in curves.items():
        positive = np.sort(values[values > 0])
        zeros = len(values) - len(positive)
        note = f"n={len(positive):,}" + (f", {zeros:,} zeros not shown" if zeros else "")
        if len(positive) == 0:
            ax.plot([], [], label=f"{label} (all {zeros:,} are 0)")
            continue
        x, y = cdf_points(positive)
        ax.step(x / 1000.0, y, where="post", label=f"{label} ({note})")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction ≤ x (of the positive values)")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize="small")
    return _png(fig)


def differences(df: pl.DataFrame, title: str) -> bytes | None:
    """Forest plot: per metric, (other − base) / base in % with its 95% interval as a bar.

    ``df`` has label, rel, lo, hi (percent) and excludes0; metrics whose base is 0 are left out
    by the caller (a relative change of 0 is undefined).
    """
    if df.height == 0:
        return None
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.28 * df.height))
    y = np.arange(df.height)[::-1]
    excludes = df["excludes0"].to_numpy().astype(bool)
    rel = df["rel"].to_numpy().astype(float)
    lo = df["lo"].fill_null(float("nan")).to_numpy().astype(float)
    hi = df["hi"].fill_null(float("nan")).to_numpy().astype(float)
    err = np.vstack([np.where(np.isnan(lo), 0, rel - lo), np.where(np.isnan(hi), 0, hi - rel)])
    for mask, color, label in ((excludes, "#cc3311", "interval excludes 0"), (~excludes, "#888888", "includes 0")):
        if mask.any():
            ax.errorbar(rel[mask], y[mask], xerr=err[:, mask], fmt="o", color=color, ecolor=color, elinewidth=2,
                        capsize=3, markersize=4, label=label)
    ax.legend(fontsize="small", loc="lower right")
    ax.axvline(0, color="#333333", linewidth=0.8)
    ax.set_yticks(y, df["label"].to_list(), fontsize="small")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("difference from the base policy set (%, symmetric log scale)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


def histogram(hist: pl.DataFrame, title: str, xlabel: str) -> bytes:
    """Bars of a log2 histogram frame (range, count), in bucket order."""
    fig, ax = plt.subplots(figsize=(8, 4))
    labels, counts = hist["range"].to_list(), hist["count"].to_list()
    bars = ax.bar(range(len(labels)), counts, color="#4477aa")
    ax.bar_label(bars, fontsize="small")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    return _png(fig)


def timeline(sections: pl.DataFrame, lanes: str, title: str, t0: int | None = None) -> bytes:
    """The longest sections as bars on a time axis, one lane per value of ``lanes``.

    Sections are short compared with a trace, so each bar is drawn at least
    0.4% of the axis wide and labelled with its true length.
    """
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.5 * max(1, sections[lanes].n_unique())))
    t0 = sections["ts"].min() if t0 is None else t0
    span = max((sections["ts"] + sections["dur"]).max() - t0, 1)
    lane_names = sorted(set(sections[lanes].cast(pl.String).to_list()))
    labelled: dict[int, list[float]] = {}
    for r in sections.sort("dur", descending=True).iter_rows(named=True):
        y = lane_names.index(str(r[lanes]))
        start = (r["ts"] - t0) / 1e9
        width = max(r["dur"], span * 0.004) / 1e9
        ax.broken_barh([(start, width)], (y - 0.35, 0.7), color="#cc6677", edgecolor="#882255", linewidth=0.5)
        # label the longest first and skip labels that would land on one already drawn in the lane
        end = start + width
        if all(abs(end - other) > span / 1e9 * 0.08 for other in labelled.setdefault(y, [])):
            labelled[y].append(end)
            ax.annotate(f"{r['dur'] / 1000:.1f} µs", (end, y), fontsize="x-small", va="center",
                        xytext=(2, 0), textcoords="offset points")
    ax.set_yticks(range(len(lane_names)), lane_names)
    ax.set_xlabel("time since the start of the recording (s)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)
