"""Figures that compare many datasets at once: a density overlay that stays readable with 16+
curves, and forest plots of point values with their confidence intervals.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from faceaudit.report.plots import plt

#: ten well-separated hues (Okabe-Ito and Tableau, no two alike); with the line styles below,
#: 30 curves stay distinguishable, and neighbours in the sort order never share a hue
OVERLAY_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
                  "#8C564B", "#7F7F7F", "#BCBD22")
OVERLAY_STYLES = ("-", "--", ":")
EMPHASIS_COLOR = "#D55E00"
BASE_COLOR = "#0072B2"


def overlay_style(rank: int) -> tuple[str, str]:
    """(colour, line style) of the ``rank``-th curve (0-based): hues first, then line styles."""
    return OVERLAY_COLORS[rank % len(OVERLAY_COLORS)], OVERLAY_STYLES[(rank // len(OVERLAY_COLORS))
                                                                      % len(OVERLAY_STYLES)]


def overlay_densities(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str,
                      xlabel: str = "Cosine similarity (best match)", notes: Mapping[str, str] | None = None,
                      emphasised: Sequence[str] = (), xlim: tuple[float, float] = (0.0, 1.0),
                      tail_from: float | None = 0.5, tail_floor: float = 1e-3):
    """All density curves on one axes, in the order given (the caller sorts them), and beside it
    their upper tail (x >= ``tail_from``) on a log scale, where the datasets differ most.

    No fills (16 filled curves are mud); each curve gets its own hue/line-style pair, the legend
    sits outside the plot in the same order, with ``notes[name]`` after each name. Datasets in
    ``emphasised`` (e.g. the user's own, beside the paper's) are drawn thicker.
    """
    notes = notes or {}
    emphasised = set(emphasised)
    if tail_from is None:
        fig, ax = plt.subplots(figsize=(12, 6.5))
        axes = [ax]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(16, 6.5), gridspec_kw={"width_ratios": (3, 2)})
    for rank, (name, (x, y)) in enumerate(curves.items()):
        color, style = overlay_style(rank)
        width = 3.0 if name in emphasised else 1.6
        label = f"{name}  {notes[name]}" if name in notes else name
        for ax in axes:
            ax.plot(x, y, color=color, linestyle=style, linewidth=width, label=label if ax is axes[-1] else None)
    axes[0].set_xlim(*xlim)
    axes[0].set_ylim(bottom=0)
    axes[0].set_ylabel("Density")
    axes[0].set_title(title, loc="left")
    if tail_from is not None:
        axes[1].set_xlim(tail_from, xlim[1])
        axes[1].set_yscale("log")
        top = max((float(y[x >= tail_from].max()) for x, y in curves.values() if np.any(x >= tail_from)),
                  default=1.0)
        axes[1].set_ylim(tail_floor, max(top, tail_floor) * 2)
        axes[1].set_title(f"Upper tail, x >= {tail_from:g} (log density)")
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8.5, handlelength=3.0)
    fig.tight_layout()
    return fig


def forest_plot(labels: Sequence[str], series: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                title: str, xlabel: str, emphasised: Sequence[str] = (),
                value_format: Callable[[float], str] | None = None, log: bool = False):
    """Point values with horizontal interval bars, one row per label, the first label on top.

    ``series``: name -> (points, lower, upper) arrays aligned with ``labels``; NaN bounds draw a
    point alone, a non-finite point (or one <= 0 on a ``log`` axis) only its text. One series is
    drawn in blue, its labels in ``emphasised`` in orange, and each row is annotated with
    "value [lower, upper]" (``value_format``); several series (e.g. genuine and impostor means)
    get a marker each and a legend.
    """
    labels = list(labels)
    emphasised = set(emphasised)
    rows = np.arange(len(labels))[::-1]  # first label on top
    fig, ax = plt.subplots(figsize=(9, 0.38 * len(labels) + 1.6))
    markers = ("o", "s", "D", "^")
    single = len(series) == 1
    drawn = False
    for index, (name, (points, lower, upper)) in enumerate(series.items()):
        points, lower, upper = (np.asarray(v, dtype=np.float64) for v in (points, lower, upper))
        offset = 0.0 if single else (index - (len(series) - 1) / 2) * 0.22
        colors = np.array([EMPHASIS_COLOR if single and label in emphasised else
                           BASE_COLOR if single else OVERLAY_COLORS[index % len(OVERLAY_COLORS)] for label in labels])
        error = np.vstack([points - lower, upper - points])
        error = np.where(np.isfinite(error), np.maximum(error, 0.0), 0.0)
        drawable = np.isfinite(points) & ((points > 0) if log else True)  # e.g. FDR = inf: text only
        drawn |= drawable.any()
        for color in dict.fromkeys(colors):
            rows_of = (colors == color) & drawable
            ax.errorbar(points[rows_of], rows[rows_of] + offset, xerr=error[:, rows_of],
                        fmt=markers[index % len(markers)], color=color, markersize=5, capsize=3, linewidth=1.4,
                        linestyle="none", label=None if single else name)
        if single and value_format is not None:
            for row, point, lo, hi in zip(rows, points, lower, upper):
                bounds = f" [{value_format(lo)}, {value_format(hi)}]" if np.isfinite([lo, hi]).all() else ""
                ax.annotate(f"{value_format(point)}{bounds}", xy=(1.01, row), xycoords=("axes fraction", "data"),
                            va="center", fontsize=8)
    ax.set_yticks(rows)
    ax.set_yticklabels(labels)
    for tick, label in zip(ax.get_yticklabels(), labels):
        if label in emphasised:
            tick.set_fontweight("bold")
    ax.set_ylim(-0.7, len(labels) - 0.3)
    if log and drawn:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if not single:
        ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    return fig
