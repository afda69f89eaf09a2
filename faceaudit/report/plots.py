"""Figures: score distributions (Gaussian KDE, Scott's rule), threshold lines, CMC curves.

Matplotlib runs with the non-interactive Agg backend, so figures render headless.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import gaussian_kde  # noqa: E402

_GRID_POINTS = 512
_KDE_MAX_POINTS = 200_000  # a KDE on more points looks the same and costs O(n) per grid point


def kde_curve(scores: np.ndarray, cut: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x, density of a Gaussian KDE with Scott's bandwidth, as seaborn's kdeplot draws it.

    The grid spans the data +- ``cut`` bandwidths. Above ``_KDE_MAX_POINTS`` scores a
    seeded subsample is used: the curve is indistinguishable and the cost bounded.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size > _KDE_MAX_POINTS:
        scores = np.random.default_rng(seed).choice(scores, _KDE_MAX_POINTS, replace=False)
    if scores.size < 2 or np.ptp(scores) == 0:
        x = np.array([scores.min() - 1e-3, scores.min(), scores.min() + 1e-3])
        return x, np.array([0.0, 1.0, 0.0])
    kde = gaussian_kde(scores, bw_method="scott")
    bandwidth = float(np.sqrt(kde.covariance[0, 0]))
    x = np.linspace(scores.min() - cut * bandwidth, scores.max() + cut * bandwidth, _GRID_POINTS)
    return x, kde(x)


def plot_distributions(series: Mapping[str, np.ndarray], title: str, xlabel: str = "Cosine similarity",
                       thresholds: Sequence[tuple[str, float]] = (), colors: Sequence[str] | None = None, *,
                       curves: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                       threshold_styles: Sequence[tuple[str, object]] | None = None,
                       xlim: tuple[float, float] | None = None, figsize: tuple[float, float] = (8, 5),
                       fill_alpha: float = 0.25, fontsize: float | None = None):
    """A KDE figure of several score distributions, with optional vertical threshold lines.

    ``curves`` (one (x, y) per series, from :func:`kde_curve`) skips the KDE evaluation;
    ``threshold_styles`` gives (colour, line style) per threshold (default black, varied styles).
    """
    fig, ax = plt.subplots(figsize=figsize)
    colors = list(colors or plt.rcParams["axes.prop_cycle"].by_key()["color"])
    curves = list(curves) if curves is not None else [kde_curve(scores) for scores in series.values()]
    for (label, scores), color, (x, y) in zip(series.items(), colors, curves):
        ax.plot(x, y, label=f"{label} (n={len(scores):,})", color=color)
        ax.fill_between(x, y, alpha=fill_alpha, color=color)
    styles = threshold_styles or [("black", s) for s in ("--", "-.", ":", (0, (5, 1)))]
    for (label, value), (color, style) in zip(thresholds, styles):
        ax.axvline(value, color=color, linestyle=style, linewidth=1 if threshold_styles is None else 2,
                   label=f"{label} = {value:.4f}")
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel, fontsize=fontsize)
    ax.set_ylabel("Density", fontsize=fontsize)
    if fontsize:
        ax.tick_params(labelsize=fontsize * 0.8)
    ax.set_title(title, fontsize=fontsize * 0.8 if fontsize else None)
    ax.legend(fontsize=fontsize * 0.6 if fontsize else None)
    fig.tight_layout()
    return fig


_FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg")


def save_figure(fig, path: str | Path, formats: Sequence[str] = ("png",), dpi: int = 150,
                **savefig_kwargs) -> list[Path]:
    """Save ``fig`` once per format as ``<path>.<format>``, atomically; returns the written paths.

    A figure suffix on ``path`` is replaced; any other dot stays part of the name, so
    ``sd_v1.5_BestMatches_100`` becomes ``sd_v1.5_BestMatches_100.png``.
    """
    from faceaudit.io.files import atomic_write

    path = Path(path)
    if path.suffix.lower() in _FIGURE_SUFFIXES:
        path = path.with_suffix("")
    written = []
    try:
        for fmt in formats:
            target = path.with_name(f"{path.name}.{fmt}")
            with atomic_write(target, "wb") as out:
                fig.savefig(out, format=fmt, dpi=dpi, **savefig_kwargs)
            written.append(target)
    finally:
        plt.close(fig)
    return written


#: threshold lines of the paper's with-metrics figure: EER red solid, FMR100 green dashed, FMR1000 blue dotted
_PAPER_THRESHOLDS = (("EER threshold", "red", "-"), ("FMR100 threshold", "green", "--"),
                     ("FMR1000 threshold", "blue", ":"))


def plot_mated_vs_non_mated(mated: np.ndarray, non_mated: np.ndarray, thresholds: Sequence[float] = (),
                            title: str = "", curves=None, fontsize: float = 18):
    """The paper's figure: filled KDEs of mated (genuine) and non-mated (impostor) scores.

    ``thresholds`` (EER, FMR100, FMR1000) are drawn in the paper's colours and styles.
    Cosine scores get the paper's x range [-0.5, 1].
    """
    mated = np.asarray(mated, dtype=np.float64)
    non_mated = np.asarray(non_mated, dtype=np.float64)
    cosine = -1.0 <= min(mated.min(), non_mated.min()) and max(mated.max(), non_mated.max()) <= 1.0
    fig = plot_distributions(
        {"Mated (Genuine)": mated, "Non-mated (Impostor)": non_mated}, title, "Cosine Similarity",
        [(label, value) for value, (label, _, _) in zip(thresholds, _PAPER_THRESHOLDS)],
        curves=curves, threshold_styles=[(color, style) for _, color, style in _PAPER_THRESHOLDS],
        xlim=(-0.5, 1) if cosine else None, figsize=(12, 7), fill_alpha=0.5, fontsize=fontsize)
    ax = fig.axes[0]
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    return fig


def plot_cmc(curves: Mapping[str, np.ndarray], title: str = "Cumulative match characteristic"):
    """CMC curves: identification rate at rank 1..R (one curve per label), rank on a log axis
    when R > 20; the rank-1 rate is printed in the legend."""
    fig, ax = plt.subplots(figsize=(7, 5))
    longest = 1
    for label, rates in curves.items():
        ranks = np.arange(1, len(rates) + 1)
        longest = max(longest, len(rates))
        ax.step(ranks, rates, where="post", marker="o" if len(rates) <= 20 else None, markersize=3,
                label=f"{label} (rank 1: {rates[0]:.4f})")
    if longest > 20:
        ax.set_xscale("log")
    ax.set_xlim(1, longest)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("Rank")
    ax.set_ylabel("Identification rate")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
