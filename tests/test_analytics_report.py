"""`mmreplay report` writes one offline HTML page that a browser renders with its figures and numbers.

The page is rendered by headless Chromium (Debian package ``chromium``); the
DOM it builds is what these tests read.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from replay.cli.main import main
from tests import analytics_fixtures as fx

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# On a developer machine without Chromium these tests skip; in CI (CI=true) a missing browser fails them.
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                    reason="headless Chromium not installed (apt-get install chromium)")


def render_dom(page: Path) -> str:
    """The DOM after Chromium has loaded the page (no network, throwaway profile)."""
    assert CHROMIUM is not None, "CI must install Chromium (apt-get install -y chromium)"
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120, check=True,
        )
    return out.stdout


def table_row(dom: str, caption: str, first_cell: str) -> list[str]:
    """The cells of the first row starting with ``first_cell`` in the table captioned ``caption``."""
    start = dom.index(f"<caption>{caption}</caption>")
    table = dom[start:dom.index("</table>", start)]
    m = re.search(rf"<tr><td>{re.escape(first_cell)}</td>(.*?)</tr>", table)
    assert m, f"no table row starting with {first_cell}"
    return [first_cell, *re.findall(r"<td[^>]*>(.*?)</td>", m.group(1))]


def report(tmp_path: Path, src: Path, capsys: pytest.CaptureFixture, *extra: str) -> Path:
    out = tmp_path / "report.html"
    assert main(["report", str(src), "-o", str(out), *extra]) == 0
    capsys.readouterr()
    return out


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_recorded(tmp_path_factory.mktemp("r") / "trace")


@needs_chromium
def test_trace_report_renders_titles_figures_and_the_lock_numbers(
        tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture) -> None:
    dom = render_dom(report(tmp_path, trace, capsys))
    assert "<title>mmreplay report: trace</title>" in dom
    for h in ("Lock waits and holds", "Scheduling latency", "TLB flushes", "Page-freeing batches",
              "Preemption-off sections"):
        assert f"<h2>{h}</h2>" in dom
    figures = re.findall(r'<figure id="(\w+)"><img alt="([^"]+)" src="data:image/png;base64,', dom)
    assert [f for f, _ in figures] == ["wait_cdf", "sched_cdf", "delay_cdf", "flush_hist", "gather_hist",
                                       "preempt_timeline"]
    assert "Lock wait CDF per lock class" in dict(figures)["wait_cdf"]
    # mmap_lock: 100 waits, total 5050 µs, p50 50 µs, p99 99 µs, max 100 µs; 10 holds, total 550 µs
    assert table_row(dom, "Contended lock waits by class", "mmap_lock")[:6] == [
        "mmap_lock", "100", "5,050.00", "50.00", "99.00", "100.00"]
    assert table_row(dom, "Lock holds by class", "mmap_lock")[:6] == [
        "mmap_lock", "10", "550.00", "50.00", "100.00", "100.00"]
    assert table_row(dom, "TLB flushes by reason", "TLB_LOCAL_SHOOTDOWN")[:3] == ["TLB_LOCAL_SHOOTDOWN", "4", "0"]
    assert "Not shown" not in dom


@needs_chromium
def test_results_report_has_one_curve_per_policy_set_and_the_comparison(
        tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture) -> None:
    results = fx.write_results(tmp_path / "res", trace=trace)
    dom = render_dom(report(tmp_path, results, capsys))
    assert "Lock wait CDF per policy set" in dom and "<h2>Recorded versus simulated</h2>" in dom
    assert "Run delay CDF (per policy set)" in dom  # from sim_sched
    # the simulator writes no TLB or page-free tables: no sections (and no "not shown" notes) for them
    assert "<h2>TLB flushes</h2>" not in dom and "Not shown" not in dom
    # sched latency: 3 probes, 600 ns in total
    assert table_row(dom, "Scheduling latency", "spinlock")[:3] == ["spinlock", "3", "0.60"]
    # the simulator's differences as a chart with intervals; the table lists only those excluding 0
    assert '<figure id="policy_diff">' in dom
    caption = next(c for c in re.findall(r"<caption>([^<]*)</caption>", dom) if c.startswith("Differences"))
    start = dom.index(caption)
    rows = re.findall(r"<tr><td>(\w+)</td>", dom[start:dom.index("</table>", start)])
    assert rows == ["wait_p99_ns"]  # makespan's interval [-5, +7] µs includes 0


def test_page_is_self_contained_and_the_pngs_beside_it_match_the_embedded_ones(
        tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture) -> None:
    page = report(tmp_path, trace, capsys)
    text = page.read_text()
    assert not re.search(r'(src|href)="(?!data:)', text), "the page must not load anything"
    embedded = dict(re.findall(r'<figure id="(\w+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', text))
    for key, data in embedded.items():
        png = base64.b64decode(data)
        assert (tmp_path / f"report-{key}.png").read_bytes() == png
        image = mpimg.imread(io.BytesIO(png), format="png")
        assert image.shape[0] > 200 and image.shape[1] > 400


def test_report_refuses_to_overwrite_without_force(tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "report.html").write_text("mine")
    assert main(["report", str(trace), "-o", str(tmp_path / "report.html")]) == 2
    assert "--force" in capsys.readouterr().err


def test_results_whose_trace_moved_still_get_a_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = fx.write_results(tmp_path / "res", trace=tmp_path / "gone")
    out = tmp_path / "report.html"
    assert main(["report", str(results), "-o", str(out)]) == 0
    assert "give --against TRACE" in capsys.readouterr().err
    assert "Recorded versus simulated" not in out.read_text()


#: Injected into a copy of the page: records script errors, failed images and tables wider than their box.
PROBE = """<script>
window.addEventListener('load', () => {
  const bad = [];
  document.querySelectorAll('img').forEach(i => {
    if (!i.complete || i.naturalWidth === 0) bad.push('image ' + i.alt);
  });
  document.querySelectorAll('div.wide').forEach(d => {
    if (d.scrollWidth > d.clientWidth + 1) bad.push('table cut: ' + d.querySelector('caption').textContent);
  });
  const out = document.createElement('pre'); out.id = 'probe'; out.textContent = JSON.stringify(bad);
  document.body.appendChild(out);
});
</script>"""


def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: $MMREPLAY_ARTIFACTS, .ci/artifacts in CI (kept by the CI run), else tmp_path."""
    where = os.environ.get("MMREPLAY_ARTIFACTS") or (
        str(Path(__file__).resolve().parent.parent / ".ci" / "artifacts") if os.environ.get("CI") else None)
    out = Path(where) if where else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None, "CI must install Chromium (apt-get install -y chromium)"
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", *args,
             page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=True)


@needs_chromium
@pytest.mark.parametrize("which", ["take-all-locks", "results"])
def test_report_opens_without_console_errors_nothing_cut_at_1400px_and_is_screenshot(
        which: str, tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture) -> None:
    src = (Path(__file__).parent.parent / "sample_traces" / which if which != "results"
           else fx.write_results(tmp_path / "res", trace=trace))
    page = report(tmp_path, src, capsys)
    # the page itself runs no script: any console message is an error (a failed load, a CSP report...)
    shot = artifacts(tmp_path) / f"report-{which}.png"
    run = chromium(page, "--window-size=1400,6000", f"--screenshot={shot}")
    assert ":CONSOLE" not in run.stderr, run.stderr
    assert shot.stat().st_size > 50_000
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(probed, "--window-size=1400,6000", "--dump-dom").stdout
    assert re.search(r'<pre id="probe">\[\]</pre>', dom), re.search(r'<pre id="probe">(.*?)</pre>', dom)
    # times in tables are seconds from the start of the recording, not absolute nanoseconds
    assert "ts (ns)" not in dom


def test_metrics_that_stay_0_are_not_listed_as_excluding_0_and_zero_delays_are_counted(tmp_path: Path) -> None:
    from replay.analytics import report as rep
    from replay.analytics.source import Source
    from replay.trace.writer import write_trace

    tables = fx.results_tables()
    cmp = tables["sim_comparison"]
    row = ("atomic_sleeps", None, None, "spinlock", "mutex", 0.0, 0.0, 0.0, 0.0, 0.0, 2, False)
    for col, v in zip(("metric", "lock_class", "kind", "base", "other", "base_mean", "other_mean", "diff_mean",
                       "ci_low", "ci_high", "seeds", "derived"), row, strict=True):
        cmp[col] = [*cmp[col], v]
    # every simulated switch-in ran at once: the run-delay CDF has nothing to draw on a log axis
    tables["sim_sched"]["wait"] = [0] * len(tables["sim_sched"]["wait"])
    write_trace(tmp_path / "r", {k: fx._fill_missing(k, v) for k, v in tables.items()}, kind="results",
                source="simulated", host=fx.HOST)
    sections = {s.title: s for s in rep.build(Source.open(tmp_path / "r"))}
    policy = sections["Policy sets compared (differences over seeds)"]
    assert [f.key for f in policy.figures] == ["policy_diff"]
    (caption, table), = policy.tables
    assert table["metric"].to_list() == ["wait_p99_ns"]
    assert any("atomic_sleeps" in n and "0 under every policy set" in n for n in policy.notes)
    sched = sections["Scheduling latency"]
    assert "delay_cdf" not in [f.key for f in sched.figures]
    assert any(n.startswith("All 4 run delays are 0 ns") for n in sched.notes)
    assert not any(n.startswith("Not shown") for s in sections.values() for n in s.notes)
