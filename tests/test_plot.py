"""Tests for spectra.plot: PNGs are written, figures hold the expected artists, bad input is refused.

One file for the whole package: the figures share the table builders below, and each section names the
module it covers (esd, bars, steps, overlap; figure and selection are exercised through them).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from spectra import plot
from spectra import Record, Results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- data builders
def _pareto_with_bulk(seed: int = 0, alpha: float = 3.0, n_bulk: int = 1500, n_tail: int = 500):
    """Eigenvalues: a uniform bulk in [0.05, 1) plus a Pareto(alpha) tail from xmin = 1."""
    rng = np.random.default_rng(seed)
    bulk = rng.uniform(0.05, 1.0, n_bulk)
    tail = (1.0 - rng.random(n_tail)) ** (-1.0 / (alpha - 1.0))  # inverse CDF of p(x) ∝ x^-alpha, x ≥ 1
    return np.concatenate([bulk, tail]), tail


def _mle_fit(lam: np.ndarray, xmin: float, method: str = "test-mle"):
    """Continuous power-law MLE at a fixed xmin (the CSN formula), as a duck-typed TailFit."""
    tail = lam[lam >= xmin]
    alpha = 1.0 + tail.size / np.sum(np.log(tail / xmin))
    return SimpleNamespace(alpha=alpha, xmin=xmin, xmax=float(lam.max()), D=0.031, n_tail=tail.size,
                           method=method, status="ok", message="")


def _rec(step, layer, metric, value, *, view="weight", matrix="weight", index=None, status="ok", run="r"):
    return Record(run=run, step=step, layer=layer, view=view, matrix=matrix, analyzer="tail", metric=metric,
                  value=value, index=index, status=status)


LAYERS = ("fc1", "fc2", "fc3", "head")
ALPHAS = {0: (7.5, 6.8, 5.9, 9.1), 10: (3.1, 1.7, float("nan"), 4.4)}  # fc3 fails at step 10


def _results() -> Results:
    recs = []
    for step, alphas in ALPHAS.items():
        for layer, a in zip(LAYERS, alphas):
            status = "failed" if np.isnan(a) else "ok"
            recs.append(_rec(step, layer, "alpha", a, status=status))
            recs.append(_rec(step, layer, "stable_rank", 10.0 + step + len(layer)))
    return Results(recs)


def _overlap_results(k: int = 4, seed: int = 1):
    rng = np.random.default_rng(seed)
    block = rng.random((k, k)) ** 3
    recs = [
        _rec(5, "fc1", "overlap_left_before", float(block[i, j]), matrix="update", index=i * k + j)
        for i in range(k)
        for j in range(k)
    ]
    recs.append(_rec(5, "fc1", "alpha", 3.0))
    return Results(recs), block


def _assert_png(path, min_bytes: int = 5000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes"


# ---------------------------------------------------------------------------- plot_esd (spectra/plot/esd.py)
def test_plot_esd_png_and_fit_line(tmp_path):
    lam, _ = _pareto_with_bulk()
    fit = _mle_fit(lam, xmin=1.0)
    out = tmp_path / "sub" / "esd.png"
    fig = plot.plot_esd(lam, fit=fit, path=out, title="fc1")
    _assert_png(out)
    ax_pdf, ax_ccdf = fig.axes
    assert ax_pdf.get_xscale() == ax_pdf.get_yscale() == "log"
    line = next(l for l in ax_pdf.get_lines() if l.get_gid() == "powerlaw_fit")
    x, y = line.get_xdata(), line.get_ydata()
    assert x[0] == pytest.approx(fit.xmin) and x[-1] == pytest.approx(fit.xmax)
    slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    assert slope == pytest.approx(-fit.alpha, rel=1e-9)
    # xmin marked on both panels; legend reports alpha, D and tail size
    for ax in (ax_pdf, ax_ccdf):
        assert any(l.get_gid() == "xmin" and l.get_xdata()[0] == pytest.approx(1.0) for l in ax.get_lines())
    text = " ".join(t.get_text() for t in ax_pdf.get_legend().get_texts())
    assert f"α = {fit.alpha:.3g}" in text and "D = 0.031" in text and f"n = {fit.n_tail}" in text


def test_plot_esd_fit_line_sits_on_histogram():
    """The drawn density is scaled by the tail fraction, so it matches the histogram inside the tail."""
    lam, tail = _pareto_with_bulk(seed=3, n_bulk=4000, n_tail=4000)
    fit = _mle_fit(lam, xmin=1.0)
    fig = plot.plot_esd(lam, fit=fit, bins=60)
    line = next(l for l in fig.axes[0].get_lines() if l.get_gid() == "powerlaw_fit")
    edges = np.logspace(np.log10(lam.min()), np.log10(lam.max()), 61)
    dens, _ = np.histogram(lam, bins=edges, density=True)
    centres = np.sqrt(edges[:-1] * edges[1:])
    pick = (centres > 1.5) & (centres < 6.0)
    model = np.interp(np.log(centres[pick]), np.log(line.get_xdata()), line.get_ydata())
    ratio = dens[pick] / model
    assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio
    # the empirical CCDF panel starts at 1 and is non-increasing
    ccdf = next(l for l in fig.axes[1].get_lines() if l.get_gid() is None)
    y = ccdf.get_ydata()
    assert y[0] == pytest.approx(1.0) and np.all(np.diff(y) <= 0)


def test_plot_esd_failed_fit_and_given_ax():
    from matplotlib.figure import Figure

    lam, _ = _pareto_with_bulk()
    failed = SimpleNamespace(alpha=float("nan"), xmin=float("nan"), xmax=float("nan"), D=float("nan"), n_tail=0,
                             method="csn", status="failed", message="tail too short")
    host = Figure()
    ax = host.add_subplot()
    fig = plot.plot_esd(lam, fit=failed, ax=ax)
    assert fig is host and len(fig.axes) == 1
    assert not any(l.get_gid() == "powerlaw_fit" for l in ax.get_lines())
    assert "fit failed: tail too short" in " ".join(t.get_text() for t in ax.get_legend().get_texts())


def test_plot_esd_bad_input():
    with pytest.raises(ValueError, match="empty"):
        plot.plot_esd([])
    with pytest.raises(ValueError, match="no positive"):
        plot.plot_esd([0.0, -1.0, np.nan])
    with pytest.raises(TypeError, match="alpha"):
        plot.plot_esd([1.0, 2.0], fit=object())
    with pytest.raises(ValueError, match="bins"):
        plot.plot_esd([1.0, 2.0], bins=0)


# -------------------------------------------------------------------- plot_alpha_bars (spectra/plot/bars.py)
def _bars(fig):
    (ax,) = fig.axes
    (container,) = [c for c in ax.containers if c.get_label() == "_metric_bars"]
    return ax, list(container)


@pytest.mark.parametrize("as_frame", [False, True])
def test_alpha_bars_latest_step(tmp_path, as_frame):
    res = _results()
    src = res.to_pandas() if as_frame else res
    out = tmp_path / "alpha.png"
    fig = plot.plot_alpha_bars(src, path=out)
    _assert_png(out)
    ax, bars = _bars(fig)
    assert len(bars) == len(LAYERS)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(LAYERS)
    expected = ALPHAS[10]
    for bar, a in zip(bars, expected):
        if np.isnan(a):
            assert bar.get_hatch() == "//"
        else:
            assert bar.get_height() == pytest.approx(a) and not bar.get_hatch()
    assert sum(t.get_text() == "failed" for t in ax.texts) == 1
    band_labels = [h.get_label() for h in ax.get_legend().legend_handles]
    assert any("over-trained" in b for b in band_labels) and any("under-trained" in b for b in band_labels)
    assert "step 10" in ax.get_title()


def test_alpha_bars_explicit_step_and_other_metric():
    fig = plot.plot_alpha_bars(_results(), step=0)
    _, bars = _bars(fig)
    assert [b.get_height() for b in bars] == pytest.approx(ALPHAS[0])
    fig = plot.plot_alpha_bars(_results(), step=0, metric="stable_rank")
    ax, bars = _bars(fig)
    assert [b.get_height() for b in bars] == pytest.approx([10.0 + len(l) for l in LAYERS])
    assert ax.get_legend() is None  # no alpha bands for other metrics


def test_alpha_bars_bad_input():
    with pytest.raises(ValueError, match=r"unknown metric 'alfa'.*available metrics: \['alpha', 'stable_rank'\]"):
        plot.plot_alpha_bars(_results(), metric="alfa")
    with pytest.raises(ValueError, match=r"available steps: \[0, 10\]"):
        plot.plot_alpha_bars(_results(), step=3)
    with pytest.raises(TypeError, match="Results or a tidy"):
        plot.plot_alpha_bars([1, 2, 3])
    two_runs = Results.concat([_results(), Results([_rec(0, "fc1", "alpha", 3.0, run="other")])])
    with pytest.raises(ValueError, match="several runs"):
        plot.plot_alpha_bars(two_runs)
    assert len(_bars(plot.plot_alpha_bars(two_runs, run="other", step=0))[1]) == 1


# --------------------------------------------------------------- plot_metric_vs_step (spectra/plot/steps.py)
def test_metric_vs_step_lines(tmp_path):
    out = tmp_path / "alpha_vs_step.png"
    fig = plot.plot_metric_vs_step(_results(), "alpha", path=out)
    _assert_png(out)
    (ax,) = fig.axes
    lines = {l.get_label(): l for l in ax.get_lines() if not l.get_label().startswith("_")}
    for i, layer in enumerate(LAYERS):
        assert list(lines[layer].get_xdata()) == [0, 10]
        ys = np.asarray(lines[layer].get_ydata(), float)
        np.testing.assert_allclose(ys, [ALPHAS[0][i], ALPHAS[10][i]])  # the failed point is NaN (a gap)
    assert "failed (on the axis)" in lines
    assert ax.get_xlabel().startswith("step")


def test_metric_vs_step_layer_filter_and_errors():
    fig = plot.plot_metric_vs_step(_results(), "stable_rank", layers=["fc2", "head"])
    labels = [l.get_label() for l in fig.axes[0].get_lines()]
    assert labels == ["fc2", "head"]
    with pytest.raises(ValueError, match=r"\['nope'\].*available layers: \['fc1', 'fc2', 'fc3', 'head'\]"):
        plot.plot_metric_vs_step(_results(), "alpha", layers=["fc1", "nope"])
    with pytest.raises(ValueError, match="available metrics"):
        plot.plot_metric_vs_step(_results(), "nope")
    res, _ = _overlap_results()
    with pytest.raises(ValueError, match="vector-valued"):
        plot.plot_metric_vs_step(res, "overlap_left_before")


# ------------------------------------------------------------ plot_overlap_heatmap (spectra/plot/overlap.py)
def test_overlap_heatmap_layout(tmp_path):
    res, block = _overlap_results(k=4)
    out = tmp_path / "overlap.png"
    fig = plot.plot_overlap_heatmap(res, layer="fc1", step=5, path=out)
    _assert_png(out)
    ax, cbar_ax = fig.axes
    (im,) = ax.get_images()
    np.testing.assert_allclose(np.asarray(im.get_array()), block)  # row i = W vector, column j = ΔW vector
    assert im.get_clim() == (0.0, 1.0)
    assert ax.get_ylabel().startswith("W singular vector i")
    assert ax.get_xlabel().startswith("ΔW singular vector j")
    assert len(ax.texts) == 16  # annotated cells for small k


def test_overlap_heatmap_errors():
    res, _ = _overlap_results(k=3)
    with pytest.raises(ValueError, match=r"available layers: \['fc1'\]"):
        plot.plot_overlap_heatmap(res, layer="fc9", step=5)
    with pytest.raises(ValueError, match=r"available steps: \[5\]"):
        plot.plot_overlap_heatmap(res, layer="fc1", step=6)
    with pytest.raises(ValueError, match="scalar"):
        plot.plot_overlap_heatmap(res, layer="fc1", step=5, metric="alpha")
    with pytest.raises(ValueError, match="available metrics"):
        plot.plot_overlap_heatmap(res, layer="fc1", step=5, metric="overlap_sideways")
    ragged = Results([r for r in res.records if r.index != 8])
    with pytest.raises(ValueError, match="8 entries, not a k×k block"):
        plot.plot_overlap_heatmap(ragged, layer="fc1", step=5)


# ------------------------------------------------------------------ plot_esd_snapshots (spectra/plot/esd.py)
def test_esd_snapshots(tmp_path):
    rng = np.random.default_rng(4)
    mats = {s: rng.standard_normal((80, 40)) * (1 + s / 50) for s in (0, 50, 100)}
    snaps = {s: np.linalg.eigvalsh(m.T @ m) for s, m in mats.items()}
    out = tmp_path / "snap.png"
    fig = plot.plot_esd_snapshots(snaps, path=out, title="fc1 ESD")
    _assert_png(out)
    ax = fig.axes[0]
    lines = {l.get_gid(): l for l in ax.get_lines() if l.get_gid()}
    curves = [lines[f"esd_step_{s}"] for s in (0, 50, 100)]
    assert len({tuple(c.get_color()) for c in curves}) == 3
    for s, curve in zip((0, 50, 100), curves):
        # each curve is a density of log10 λ: it integrates to 1 over the shared bins
        x, y = curve.get_xdata(), curve.get_ydata()
        assert np.sum(y) * (x[1] - x[0]) == pytest.approx(1.0)
        assert lines[f"lambda_max_step_{s}"].get_xdata()[0] == pytest.approx(np.log10(snaps[s].max()))
    assert len(fig.axes) == 2  # colour bar
    with pytest.raises(ValueError, match="non-empty"):
        plot.plot_esd_snapshots({})
    with pytest.raises(ValueError, match="step 7"):
        plot.plot_esd_snapshots({7: [0.0, -1.0]})


# -------------------------------------------------------------------- no global matplotlib state (figure.py)
def test_no_pyplot_and_backend_untouched(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        import spectra.plot as p
        assert "matplotlib" not in sys.modules, "import spectra.plot must not import matplotlib"
        import matplotlib
        matplotlib.use("svg")
        p.plot_esd([1.0, 2.0, 3.0, 5.0, 8.0], path={str(tmp_path / 'x.png')!r})
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG_MAGIC
