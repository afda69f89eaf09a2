"""Figures: score distributions (Gaussian KDE, Scott's rule), threshold lines, pair grids.

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
                       thresholds: Sequence[tuple[str, float]] = (), colors: Sequence[str] | None = None):
    """A KDE figure of several score distributions, with optional vertical threshold lines."""
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = list(colors or plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for (label, scores), color in zip(series.items(), colors):
        x, y = kde_curve(scores)
        ax.plot(x, y, label=f"{label} (n={len(scores):,})", color=color)
        ax.fill_between(x, y, alpha=0.25, color=color)
    for (label, value), style in zip(thresholds, ("--", "-.", ":", (0, (5, 1)))):
        ax.axvline(value, color="black", linestyle=style, linewidth=1, label=f"{label} = {value:.4f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Density")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, formats: Sequence[str] = ("png",), dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix in ``formats``; returns the written paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        fig.savefig(target, dpi=dpi)
        written.append(target)
    plt.close(fig)
    return written
