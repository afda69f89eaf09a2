"""``faceaudit paper``: the paper's figures and tables from its published results, and from our own
``leakage``, ``closest`` and ``variability`` outputs beside them, with cross-checks of the data.

Outputs, under ``out_dir``: ``leakage_table.csv/.md``, ``intervals.csv/.md``, ``checks.csv/.md``,
``figures/`` (per-dataset best-match KDEs, their overlay, forest plots; PNG and PDF) and one page,
``paper_results.md`` and ``.html``, naming the file behind every figure and table.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from faceaudit import checks as arguments
from faceaudit.errors import FaceauditError
from faceaudit.report.compare_plots import forest_plot, overlay_densities
from faceaudit.report.page import Page, write_table
from faceaudit.report.plots import kde_curve, save_figure
from faceaudit.stages.leakage import compare_embeddings_figure, summary
from faceaudit.stages.paper_checks import CHECK_COLUMNS, FAIL, run_checks, summary_lines
from faceaudit.stages.paper_data import INTERVAL_METRICS, Results, read_folders, source_name

DEFAULT_THRESHOLDS = (0.4, 0.5, 0.6)
FORMATS = ("png", "pdf")
PAGE_NAME = "paper_results"


def _percent(value: float) -> str:
    return f"{value:.2f}%"


#: forest plots: file name, title, metric keys, x label, scale to show, best first?, value format, log x
FOREST_PLOTS = (
    ("forest_eer", "Equal error rate", ("eer",), "EER (%)", 100.0, "low", _percent, False),
    ("forest_fnmr_fmr1", "FNMR at FMR = 1% (pyeer's FMR100)", ("fmr100",), "FNMR (%)", 100.0, "low", _percent,
     False),
    ("forest_fnmr_fmr01", "FNMR at FMR = 0.1% (pyeer's FMR1000)", ("fmr1000",), "FNMR (%)", 100.0, "low",
     _percent, False),
    ("forest_fdr", "Fisher discriminant ratio (higher separates better)", ("fdr",), "FDR (log scale)", 1.0,
     "high", "{:.3f}".format, True),
    ("forest_means", "Genuine and impostor mean similarity", ("gmean", "imean"), "Mean cosine similarity", 1.0,
     "high", None, False),
)
_METRIC_LABELS = {key: label for key, label, *_ in INTERVAL_METRICS}


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "dataset"


# ---------------------------------------------------------------- tables

def leakage_table(results: Results, thresholds: Sequence[float]) -> tuple[list[str], list[list], dict[str, dict]]:
    """Header, rows (sorted: highest 99th-percentile best match first) and, per dataset with best
    matches, its :func:`faceaudit.stages.leakage.summary`.

    Per dataset: the sampled best matches' median, 99th percentile (linear interpolation) and
    maximum, the share at or above each threshold, and from the Top-K file the top-1 and K-th
    scores, K, and the number of distinct reference identities among the K pairs.
    """
    header = ["dataset", "folder", "samples", "median", "p99", "max", *(f"share >= {t:g}" for t in thresholds),
              "top-1", "K-th", "K", "reference identities in top K"]
    entries = []
    for d in results.datasets.values():
        if d.best is None and d.closest is None:
            continue
        stats = summary(d.best.scores, list(thresholds), name=d.name) if d.best else None
        row = [d.name, d.folder]
        row += ([stats["n"], stats["median"], stats["q99"], stats["max"],
                 *(a["fraction"] for a in stats["above_threshold"])] if stats else [""] * (4 + len(thresholds)))
        row += ([float(d.closest.scores[0]), float(d.closest.scores[-1]), len(d.closest.scores),
                 len(d.closest.reference_identities)] if d.closest else ["", "", "", ""])
        key = (0, -stats["q99"], -stats["max"]) if stats else (1, -float(d.closest.scores[0]), 0.0)
        entries.append((key, row, stats))
    entries.sort(key=lambda e: e[0])
    return header, [row for _, row, _ in entries], {row[0]: stats for _, row, stats in entries if stats}


def interval_table(results: Results) -> tuple[list[str], list[list]]:
    """One row per dataset with intervals (sorted by name): value, lower, upper of each metric."""
    header = ["dataset", "folder"]
    for key, *_ in INTERVAL_METRICS:
        header += [key, f"{key} lower", f"{key} upper"]
    rows = []
    for d in sorted(results.datasets.values(), key=lambda d: d.name.lower()):
        if not d.intervals:
            continue
        row = [d.name, d.folder]
        for key, *_ in INTERVAL_METRICS:
            i = d.intervals.get(key)
            row += [i.point, i.lower, i.upper] if i else ["", "", ""]
        rows.append(row)
    return header, rows


# ---------------------------------------------------------------- figures

def _emphasised(results: Results) -> set[str]:
    """Datasets of the second and later folders (your own results beside the paper's)."""
    first = results.folders[0][0]
    return {d.name for d in results.datasets.values() if d.folder != first}


def best_match_figures(results: Results, stats: dict[str, dict], out: Path, formats: Sequence[str],
                       progress: bool) -> tuple[dict[str, list[Path]], list[Path]]:
    """Each dataset's best-match KDE as ``compare_embeddings.py`` draws it, and one overlay of all
    (in the order of ``stats``, the leakage table's)."""
    curves, per_dataset, used = {}, {}, set()
    for name in tqdm(stats, desc="best-match figures", unit="dataset", disable=not progress, file=sys.stderr):
        best = results.datasets[name].best
        curves[name] = kde_curve(best.scores)
        fig = compare_embeddings_figure(best.scores, name, best.path.name, curve=curves[name])
        stem = f"{_file_stem(name)}_BestMatches_{best.n_in_name}"
        while stem in used:  # two names that differ only in characters a file name cannot hold
            stem += "_"
        used.add(stem)
        per_dataset[name] = save_figure(fig, out / "best_matches" / stem, formats=formats)
    overlay = []
    if curves:
        notes = {name: f"p99 {stats[name]['q99']:.3f}, max {stats[name]['max']:.3f}" for name in curves}
        fig = overlay_densities(curves, notes=notes, emphasised=_emphasised(results),
                                title=f"Best match in the reference set, {len(curves)} datasets "
                                      "(legend: highest 99th percentile first)")
        overlay = save_figure(fig, out / "BestMatches_overlay", formats=formats)
    return per_dataset, overlay


def forest_figures(results: Results, out: Path, formats: Sequence[str]) -> list[tuple[str, list[Path], list[Path]]]:
    """(title, written files, source files) of each forest plot that has data."""
    drawn = []
    for stem, title, keys, xlabel, scale, best, value_format, log in FOREST_PLOTS:
        have = [d for d in results.datasets.values() if all(k in d.intervals for k in keys)]
        if not have:
            continue
        have.sort(key=lambda d: d.intervals[keys[0]].point, reverse=best == "high")
        series = {_METRIC_LABELS[k]: tuple(np.array([getattr(d.intervals[k], part) for d in have]) * scale
                                           for part in ("point", "lower", "upper")) for k in keys}
        fig = forest_plot([d.name for d in have], series, f"{title} with 95% confidence intervals", xlabel,
                          emphasised=_emphasised(results), value_format=value_format, log=log)
        sources = sorted({d.intervals[k].path for d in have for k in keys})
        drawn.append((title, save_figure(fig, out / stem, formats=formats), sources))
    return drawn


# ---------------------------------------------------------------- the page

def _sources(paths: Sequence[Path], results: Results) -> str:
    """Source files, grouped by folder and kind: 'paper/Best_Matches/{dataset}_BestMatches_{n}.csv
    (17 files)'; one or two files are named in full."""
    names = sorted(source_name(p, results) for p in paths)
    if len(names) <= 2:
        return ", ".join(names)
    groups: dict[str, int] = {}
    for name in names:
        folder, _, file = name.rpartition("/")
        pattern = re.sub(r"^.+?(_BestMatches_|_Top\d+Global_)\d+", r"{dataset}\1{n}", file)
        groups[f"{folder}/{pattern}"] = groups.get(f"{folder}/{pattern}", 0) + 1
    return ", ".join(f"{g} ({n} file{'s' if n > 1 else ''})" if n > 1 else g for g, n in groups.items())


def files_table(results: Results) -> tuple[list[str], list[list[str]]]:
    """Which file each dataset's numbers came from."""
    rows = []
    for d in sorted(results.datasets.values(), key=lambda d: d.name.lower()):
        intervals = sorted({i.path for i in d.intervals.values()})
        rows.append([d.name, *(source_name(f.path, results) if f else "" for f in (d.best, d.closest)),
                     ", ".join(source_name(p, results) for p in intervals),
                     source_name(d.mated, results) if d.mated else ""])
    return ["dataset", "best matches", "top-K pairs", "intervals", "mated scores"], rows


def _shown(files: Sequence[Path]) -> Path:
    """The file a page shows of one figure: PNG or SVG (browsers show them), else the first."""
    return next((f for f in files if f.suffix in (".png", ".svg")), files[0])


def build_page(results: Results, tables: dict, figures: dict, checks, check_lines: list[str]) -> Page:
    page = Page("Beyond Real Faces: figures and tables from published results")
    page.text("Read from: " + "; ".join(f"{label} ({folder})" for label, folder in results.folders)
              + f". {len(results.datasets)} datasets."
              + (" Datasets of the second and later folders are drawn thicker (overlay) and in orange "
                 "(interval plots)." if len(results.folders) > 1 else ""))
    page.heading("Leakage: best match of each sampled image in the reference set")
    page.text("median, p99 and max: the sampled images' best-match similarities (99th percentile by linear "
              "interpolation); share >= t: the fraction of sampled images whose best match scores at least t; "
              "top-1, K-th: the highest and the K-th score of the global top-K pairs over the whole dataset; "
              "reference identities in top K: distinct reference (CASIA-WebFace) identities among those K pairs. "
              "Sorted by p99, highest first.")
    header, rows, best_files, closest_files = tables["leakage"]
    page.table(header, rows, source=_sources(best_files + closest_files, results))
    if figures["overlay"]:
        page.figure(_shown(figures["overlay"]), caption="Best-match densities of all datasets",
                    source=_sources(best_files, results))
    header, rows, sources = tables["intervals"]
    if rows:
        page.heading("Verification metrics with 95% confidence intervals")
        page.text("fmr100 and fmr1000 are pyeer's names for the FNMR at FMR = 1% and 0.1%; gmean and imean "
                  "the genuine (mated) and impostor (non-mated) mean similarity; fdr the Fisher discriminant ratio.")
        for title, files, figure_sources in figures["forest"]:
            page.figure(_shown(files), caption=title, source=_sources(figure_sources, results))
        page.table(header, rows, source=_sources(sources, results))
    page.heading("Cross-checks of the data")
    page.text("\n\n".join(check_lines))
    page.table(CHECK_COLUMNS, [c.row() for c in checks], source="the files named in each row")
    page.heading("Files read, per dataset")
    page.table(*files_table(results))
    if figures["per_dataset"]:
        page.heading("Best-match density per dataset, as compare_embeddings.py draws it")
        for name, files in figures["per_dataset"].items():
            page.figure(_shown(files), caption=name, source=source_name(results.datasets[name].best.path, results))
    return page


# ---------------------------------------------------------------- the whole job

def run_paper(folders: Sequence[str | os.PathLike], out_dir: str | os.PathLike = "paper_out", *,
              thresholds: Sequence[float] = DEFAULT_THRESHOLDS, formats: Sequence[str] = FORMATS,
              progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Read every folder, check the data, write the tables, figures and page.

    ``formats=()`` draws no figure: tables, checks and page only, in seconds. Returns
    ``{"checks": [Check, ...], "failed": n, "leakage": (header, rows), "files": [...]}``.
    """
    thresholds = arguments.cosines(thresholds, "--threshold")
    if not thresholds:
        raise FaceauditError("at least one --threshold is needed")
    unknown = [f for f in formats if f not in ("png", "pdf", "svg")]
    if unknown:
        raise FaceauditError(f"figure formats must be png, pdf or svg, got {list(formats)}")
    out = Path(out_dir)
    results = read_folders(folders, skip={out.resolve()})
    echo(f"read {len(results.datasets)} datasets from {len(results.folders)} folder(s)")

    checks = run_checks(results)
    check_lines = summary_lines(checks)
    failed = sum(c.status == FAIL for c in checks)

    header, rows, stats = leakage_table(results, thresholds)
    best_files = [results.datasets[name].best.path for name in stats]
    closest_files = [d.closest.path for d in results.datasets.values() if d.closest]
    interval_header, interval_rows = interval_table(results)
    tables = {"leakage": (header, rows, best_files, closest_files),
              "intervals": (interval_header, interval_rows, [t.path for t in results.interval_files])}
    files = write_table(out / "leakage_table", header, rows)
    if interval_rows:
        files += write_table(out / "intervals", interval_header, interval_rows)
    files += write_table(out / "checks", CHECK_COLUMNS, [c.row() for c in checks])

    per_dataset, overlay, forest = {}, [], []
    if formats:
        per_dataset, overlay = best_match_figures(results, stats, out / "figures", formats, progress)
        forest = forest_figures(results, out / "figures", formats)
    files += overlay + [f for fs in per_dataset.values() for f in fs] + [f for _, fs, _ in forest for f in fs]
    page = build_page(results, tables, {"overlay": overlay, "forest": forest, "per_dataset": per_dataset},
                      checks, check_lines)
    files += page.write(out / PAGE_NAME)
    return {"checks": checks, "check_lines": check_lines, "failed": failed, "leakage": (header, rows),
            "files": files, "page": out / f"{PAGE_NAME}.html"}
