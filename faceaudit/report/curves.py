"""ROC and DET figures, for one dataset or many overlaid (the ROC with a logarithmic false-accept axis
as pyeer draws it, the DET on normal-deviate axes as bob.measure and NIST draw it), and a grid of
mated / non-mated score densities, one panel per dataset.

Curves take the colours and line styles of :func:`faceaudit.report.compare_plots.overlay_style`, so
16 or more datasets stay apart. A ROC of millions of pairs is thinned to a few thousand points (:func:`curve_points`) that keep its
shape on both kinds of axes and every chosen operating point.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from faceaudit.report.compare_plots import overlay_style
from faceaudit.report.plots import plt

MAX_POINTS = 2000
#: DET axis ticks (rates), shown where they fall inside the data
DET_TICKS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95, 0.99)


def curve_points(far: np.ndarray, frr: np.ndarray, max_points: int = MAX_POINTS, keep: Sequence[int] = ()) -> np.ndarray:
    """Indices (ascending) of at most about ``max_points`` ROC points, plus ``keep`` and both ends.

    ``far`` and ``frr`` are the rates at ascending thresholds (``far`` falls, ``frr`` rises). Half the
    points are spread evenly in log FAR, half evenly in FRR; each level takes the first point at or
    past it.
    """
    far, frr = np.asarray(far, dtype=np.float64), np.asarray(frr, dtype=np.float64)
    n = far.size
    if n <= max_points:
        return np.arange(n)
    positive = far[far > 0]
    low = np.log10(positive.min()) if positive.size else -6.0
    far_levels = np.logspace(0, low, max_points // 2)
    frr_levels = np.linspace(0, 1, max_points // 2)
    picks = [np.searchsorted(-far, -far_levels, side="left"), np.searchsorted(frr, frr_levels, side="left"),
             np.asarray(keep, dtype=np.int64), np.array([0, n - 1])]
    chosen = np.unique(np.concatenate(picks))
    return chosen[chosen < n]


def _finish(ax, fig, title: str, n_curves: int):
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small" if n_curves > 6 else None, loc="best")
    fig.tight_layout()
    return fig


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "ROC",
             points: Mapping[str, Sequence[tuple[float, float, str]]] | None = None, figsize=(7, 5.5)):
    """TAR against FAR (log scale) for each ``label -> (far, tar)``; ``points`` marks operating points
    ``(far, tar, text)`` per label. Points with FAR = 0 cannot be drawn on a log axis and are left out."""
    fig, ax = plt.subplots(figsize=figsize)
    lowest = 1.0
    for rank, (label, (far, tar)) in enumerate(curves.items()):
        far, tar = np.asarray(far, dtype=np.float64), np.asarray(tar, dtype=np.float64)
        shown = far > 0
        if shown.any():
            lowest = min(lowest, float(far[shown].min()))
        color, style = overlay_style(rank)
        line, = ax.plot(far[shown], tar[shown], label=label, color=color, linestyle=style)
        for x, y, text in (points or {}).get(label, ()):
            if x > 0:
                ax.plot([x], [y], "o", color=line.get_color(), markersize=4)
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(max(lowest / 2, 1e-7), 1.0)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False accept rate (FAR = FMR), log scale")
    ax.set_ylabel("True accept rate (TAR = 1 - FNMR)")
    return _finish(ax, fig, title, len(curves))


def plot_det(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "DET", figsize=(6.5, 6)):
    """FRR against FAR for each ``label -> (far, frr)`` on normal-deviate axes (probit); rates of 0 or 1
    have no deviate and are left out."""
    from scipy.stats import norm

    fig, ax = plt.subplots(figsize=figsize)
    low, high = 0.5, 0.5
    for rank, (label, (far, frr)) in enumerate(curves.items()):
        far, frr = np.asarray(far, dtype=np.float64), np.asarray(frr, dtype=np.float64)
        shown = (far > 0) & (far < 1) & (frr > 0) & (frr < 1)
        if shown.any():
            low = min(low, float(far[shown].min()), float(frr[shown].min()))
            high = max(high, float(far[shown].max()), float(frr[shown].max()))
        note = "" if shown.any() else " (no point: the two rates are never both > 0)"
        color, style = overlay_style(rank)
        ax.plot(norm.ppf(far[shown]), norm.ppf(frr[shown]), label=label + note, color=color, linestyle=style)
    ticks = [t for t in DET_TICKS if low / 2 <= t <= min(high * 1.5, 0.99)] or [0.5]
    limits = norm.ppf([max(low / 2, 1e-7), min(high * 1.5, 0.995)])
    for axis_ticks, axis_limits in ((ax.set_xticks, ax.set_xlim), (ax.set_yticks, ax.set_ylim)):
        axis_ticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
        axis_limits(*limits)
    ax.set_xlabel("False accept rate (FMR, %), normal-deviate scale")
    ax.set_ylabel("False reject rate (FNMR, %), normal-deviate scale")
    return _finish(ax, fig, title, len(curves))


def plot_kde_grid(series: Mapping[str, tuple[np.ndarray, np.ndarray]], columns: int = 4,
                  title: str = "Mated vs non-mated similarity"):
    """One panel per dataset, ``label -> (mated, non_mated)`` scores as Gaussian KDEs on a shared x axis."""
    from faceaudit.report.plots import kde_curve

    n = len(series)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.8 * rows), sharex=True, squeeze=False)
    for ax, (label, (mated, non_mated)) in zip(axes.flat, series.items()):
        for scores, name, color in ((mated, "mated", "tab:blue"), (non_mated, "non-mated", "tab:orange")):
            x, y = kde_curve(np.asarray(scores, dtype=np.float64))
            ax.plot(x, y, color=color, label=f"{name} (n={len(scores):,})")
            ax.fill_between(x, y, alpha=0.3, color=color)
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("Cosine similarity")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
