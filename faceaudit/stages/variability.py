"""Stage 2, mated vs non-mated: pair sampling -> cosine scores -> metrics (+CI) -> figures.

Outputs, under ``out_dir`` (the working directory for the paper's scripts), named as the
replication package names them (``<stem>`` is the input file name up to its first dot):

- ``SimilarityScores/<stem>_mated_similarities.txt`` and ``..._non_mated_similarities.txt``
  (one full-precision score a line);
- ``Figures/<stem>_MatedVsNonmated_<n>.png`` (KDE of both distributions);
- ``Figures_with_metrics/big_<stem>_MatedVsNonmated.pdf`` and ``.png`` (with EER, FMR100
  and FMR1000 threshold lines);
- ``Metrics/All_Datasets_metrics.csv`` (the paper's columns, then AUC, d', FDR and 95%
  bootstrap CI bounds) and, from :func:`run`, ``Metrics/<stem>_metrics.json``.
"""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from faceaudit import checks
from faceaudit.version import __version__
from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.io.embeddings import EmbeddingSet, load_embeddings
from faceaudit.io.files import jsonable, read_csv_columns, read_scores, write_csv, write_json, write_scores
from faceaudit.evaluate.metrics import bootstrap_ci, verification_metrics
from faceaudit.evaluate.pairs import DEFAULT_SEED, PairSample, sample_pairs

SCORES_DIR = "SimilarityScores"
FIGURES_DIR = "Figures"
FIGURES_METRICS_DIR = "Figures_with_metrics"
METRICS_DIR = "Metrics"
CSV_NAME = "All_Datasets_metrics.csv"
MATED_SUFFIX = "_mated_similarities.txt"
NON_MATED_SUFFIX = "_non_mated_similarities.txt"
DEFAULT_N_COMPARISONS = 10000  # the replication package's default
SCORE_BLOCK_ROWS = 8192  # pairs scored at a time: two 8192 x D float32 gathers

#: the replication package's CSV columns, in its order, with the metric each holds
PAPER_COLUMNS = (("Dataset", None), ("Genuine Mean", "gmean"), ("Genuine Std", "gstd"),
                 ("Impostor Mean", "imean"), ("Impostor Std", "istd"), ("EER", "eer"),
                 ("EER Threshold", "eer_th"), ("FMR100", "fmr100"), ("FMR100 Threshold", "fmr100_th"),
                 ("FMR1000", "fmr1000"), ("FMR1000 Threshold", "fmr1000_th"), ("Total Comparisons", None))
EXTRA_COLUMNS = (("AUC", "auc"), ("d'", "decidability"), ("FDR", "fdr"))
CI_COLUMNS = tuple((name, key) for name, key in PAPER_COLUMNS + EXTRA_COLUMNS if key)
CSV_COLUMNS = ([name for name, _ in PAPER_COLUMNS + EXTRA_COLUMNS]
               + [f"{name} CI {side}" for name, _ in CI_COLUMNS for side in ("Lower", "Upper")]
               + ["Bootstrap Resamples", "Seed"])

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def dataset_stem(path: str | os.PathLike) -> str:
    """The input's name up to its first dot, as the replication package names its outputs."""
    name = Path(path).name
    return name.split(".")[0] or Path(path).stem


def score_paths(out_dir: str | os.PathLike, stem: str) -> tuple[Path, Path]:
    folder = Path(out_dir) / SCORES_DIR
    return folder / f"{stem}{MATED_SUFFIX}", folder / f"{stem}{NON_MATED_SUFFIX}"


# ---------------------------------------------------------------- scores

def pair_scores(vectors: np.ndarray, pairs: np.ndarray, block: int = SCORE_BLOCK_ROWS) -> np.ndarray:
    """Cosine similarity of each row pair: float64 dot products of the (unit) float32 rows, in blocks,
    clamped to [-1, 1] (a unit float32 row can score 1.0000001 with itself)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), block):
        chunk = pairs[start:start + block]
        out[start:start + len(chunk)] = np.einsum("ij,ij->i", vectors[chunk[:, 0]], vectors[chunk[:, 1]],
                                                  dtype=np.float64)
    return np.clip(out, -1.0, 1.0, out=out)


def load(source, skip_invalid: bool = False) -> tuple[EmbeddingSet, str]:
    """(EmbeddingSet, stem) from a path or an EmbeddingSet (stem from its ``source_file`` or 'embeddings')."""
    if isinstance(source, EmbeddingSet):
        return source, dataset_stem(source.metadata.get("source_file", "embeddings"))
    return load_embeddings(source, skip_invalid=skip_invalid), dataset_stem(source)


def compute_scores(eset: EmbeddingSet, n_comparisons: int | None, seed: int | None = DEFAULT_SEED, *,
                   exhaustive: bool = False) -> tuple[np.ndarray, np.ndarray, PairSample]:
    """(mated scores, non-mated scores, the pairs) for ``n_comparisons`` pairs of each kind."""
    pairs = sample_pairs(eset.identities, n_comparisons, seed, exhaustive=exhaustive)
    return pair_scores(eset.vectors, pairs.mated), pair_scores(eset.vectors, pairs.non_mated), pairs


def write_score_files(out_dir, stem: str, mated: np.ndarray, non_mated: np.ndarray) -> tuple[Path, Path]:
    mated_path, non_mated_path = score_paths(out_dir, stem)
    return write_scores(mated_path, mated), write_scores(non_mated_path, non_mated)


# ---------------------------------------------------------------- figures

def _curves(mated, non_mated):
    from faceaudit.report.plots import kde_curve
    return kde_curve(mated), kde_curve(non_mated)


def distribution_figure(out_dir, stem: str, mated, non_mated, n_label, curves=None) -> Path:
    """``Figures/<stem>_MatedVsNonmated_<n>.png``."""
    from faceaudit.report.plots import plot_mated_vs_non_mated, save_figure
    fig = plot_mated_vs_non_mated(mated, non_mated, curves=curves,
                                  title=f"{stem}: {len(mated):,} mated, {len(non_mated):,} non-mated")
    return save_figure(fig, Path(out_dir) / FIGURES_DIR / f"{stem}_MatedVsNonmated_{n_label}.png")[0]


def metrics_figure(out_dir, stem: str, mated, non_mated, metrics: dict, curves=None) -> list[Path]:
    """``Figures_with_metrics/big_<stem>_MatedVsNonmated.pdf`` and ``.png``, with threshold lines."""
    from faceaudit.report.plots import plot_mated_vs_non_mated, save_figure
    fig = plot_mated_vs_non_mated(mated, non_mated, curves=curves,
                                  thresholds=(metrics["eer_th"], metrics["fmr100_th"], metrics["fmr1000_th"]))
    return save_figure(fig, Path(out_dir) / FIGURES_METRICS_DIR / f"big_{stem}_MatedVsNonmated.pdf",
                       formats=("pdf", "png"))


# ---------------------------------------------------------------- metrics

def analyze_scores(mated, non_mated, bootstrap: int | None = None, seed: int | None = DEFAULT_SEED) -> dict:
    """``{"metrics": verification_metrics, "ci": bootstrap_ci or None}``; ``bootstrap=0`` skips the CIs."""
    metrics = verification_metrics(mated, non_mated)
    ci = None
    if bootstrap is None or bootstrap > 0:
        ci = bootstrap_ci(mated, non_mated, bootstrap, seed=DEFAULT_SEED if seed is None else seed)
    return {"metrics": metrics, "ci": ci}


def report_lines(stem: str, analysis: dict) -> list[str]:
    """The console summary, the replication package's lines first."""
    m, ci = analysis["metrics"], analysis["ci"]
    lines = [f"Dataset: {stem}",
             f"Genuine mean/std: {m['gmean']:.4f} / {m['gstd']:.4f}",
             f"Impostor mean/std: {m['imean']:.4f} / {m['istd']:.4f}",
             f"EER: {m['eer'] * 100:.2f}% at threshold {m['eer_th']:.4f}",
             f"FMR100: {m['fmr100'] * 100:.2f}% at threshold {m['fmr100_th']:.4f}",
             f"FMR1000: {m['fmr1000'] * 100:.2f}% at threshold {m['fmr1000_th']:.4f}",
             f"AUC: {m['auc']:.6f}  d': {m['decidability']:.4f}  FDR: {m['fdr']:.4f}"]
    if ci:
        pct = f"{ci['level'] * 100:g}%"
        lines.append(f"{pct} bootstrap CIs ({ci['n_boot']} resamples, seed {ci['seed']}): "
                     f"EER [{ci['eer'][0] * 100:.2f}%, {ci['eer'][1] * 100:.2f}%], "
                     f"FMR100 [{ci['fmr100'][0] * 100:.2f}%, {ci['fmr100'][1] * 100:.2f}%], "
                     f"FMR1000 [{ci['fmr1000'][0] * 100:.2f}%, {ci['fmr1000'][1] * 100:.2f}%], "
                     f"FDR [{ci['fdr'][0]:.4f}, {ci['fdr'][1]:.4f}]")
    return lines


def metrics_row(stem: str, analysis: dict) -> list:
    """One CSV row in :data:`CSV_COLUMNS` order, full precision (blank CI cells without a bootstrap)."""
    m, ci = analysis["metrics"], analysis["ci"]
    row = [stem] + [m[key] for _, key in PAPER_COLUMNS[1:-1]] + [m["n_genuine"] + m["n_impostor"]]
    row += [m[key] for _, key in EXTRA_COLUMNS]
    for _, key in CI_COLUMNS:
        row += list(ci[key]) if ci else ["", ""]
    row += [ci["n_boot"], ci["seed"]] if ci else [0, ""]
    return row


def write_metrics_csv(path, rows: list[list], merge: bool = False) -> Path:
    """Write the metrics table; with ``merge`` keep rows of other datasets already in ``path``."""
    path = Path(path)
    if merge and path.is_file():
        keep_it = "not overwritten, so other datasets' rows are not lost: fix it or move it aside"
        try:
            old = read_csv_columns(path, CSV_COLUMNS[:1])
        except FaceauditError as exc:
            raise FaceauditError(f"{exc}; {keep_it}") from None
        except (UnicodeDecodeError, csv.Error, OSError) as exc:
            raise FaceauditError(f"{path}: unreadable CSV ({exc}); {keep_it}") from None
        mine = {str(row[0]) for row in rows}
        kept = [[record.get(column, "") for column in CSV_COLUMNS] for record in old
                if record.get("Dataset") not in mine]
        rows = kept + rows
    return write_csv(path, CSV_COLUMNS, rows)


# ---------------------------------------------------------------- the paper's scripts

def find_score_pairs(scores_dir) -> list[tuple[str, Path, Path]]:
    """(stem, mated file, non-mated file) for every complete pair; a file without its partner is warned about."""
    scores_dir = Path(scores_dir)
    if not scores_dir.is_dir():
        raise FaceauditError(f"{scores_dir}: score folder not found (run compute_similarities.py first)")
    names = {p.name for p in scores_dir.iterdir() if p.is_file()}
    stems_non = {n[:-len(NON_MATED_SUFFIX)] for n in names if n.endswith(NON_MATED_SUFFIX)}
    stems_mated = {n[:-len(MATED_SUFFIX)] for n in names
                   if n.endswith(MATED_SUFFIX) and not n.endswith(NON_MATED_SUFFIX)}
    for stem in sorted(stems_non - stems_mated):
        warnings.warn(f"{scores_dir / (stem + NON_MATED_SUFFIX)}: no {stem}{MATED_SUFFIX} beside it; skipped",
                      FaceauditWarning, stacklevel=2)
    for stem in sorted(stems_mated - stems_non):
        warnings.warn(f"{scores_dir / (stem + MATED_SUFFIX)}: no {stem}{NON_MATED_SUFFIX} beside it; skipped",
                      FaceauditWarning, stacklevel=2)
    return [(stem, scores_dir / f"{stem}{MATED_SUFFIX}", scores_dir / f"{stem}{NON_MATED_SUFFIX}")
            for stem in sorted(stems_mated & stems_non)]


def analyze_score_dir(out_dir=".", scores_dir=None, bootstrap: int | None = None,
                      seed: int | None = DEFAULT_SEED, echo: Echo = print) -> dict:
    """``analyze_embeddings_with_metrics.py``: every score-file pair -> metrics, figures, one CSV.

    Returns ``{stem: analysis}`` and writes ``Metrics/All_Datasets_metrics.csv`` afresh.
    """
    out_dir = Path(out_dir)
    pairs = find_score_pairs(out_dir / SCORES_DIR if scores_dir is None else scores_dir)
    if not pairs:
        raise FaceauditError(f"no *{MATED_SUFFIX} / *{NON_MATED_SUFFIX} pairs in "
                             f"{out_dir / SCORES_DIR if scores_dir is None else scores_dir}")
    results, rows = {}, []
    for stem, mated_path, non_mated_path in pairs:
        mated, non_mated = read_scores(mated_path), read_scores(non_mated_path)
        analysis = analyze_scores(mated, non_mated, bootstrap, seed)
        echo("\n" + "\n".join(report_lines(stem, analysis)))
        for path in metrics_figure(out_dir, stem, mated, non_mated, analysis["metrics"]):
            echo(f"Plot saved to: {path}")
        results[stem] = analysis
        rows.append(metrics_row(stem, analysis))
    csv_path = write_metrics_csv(out_dir / METRICS_DIR / CSV_NAME, rows)
    echo(f"\nMaster metrics file saved to: {csv_path}")
    return results


def compute_similarities(source, n_comparisons: int = DEFAULT_N_COMPARISONS, out_dir=".",
                         seed: int | None = DEFAULT_SEED, *, exhaustive: bool = False,
                         skip_invalid: bool = False, echo: Echo = print) -> tuple[Path, Path]:
    """``compute_similarities.py``: the two score files."""
    eset, stem = load(source, skip_invalid)
    echo(f"Loaded {len(np.unique(eset.identities))} identities, {len(eset)} samples")
    mated, non_mated, pairs = compute_scores(eset, n_comparisons, seed, exhaustive=exhaustive)
    echo(f"Total possible mated pairs: {pairs.total_mated}; non-mated pairs: {pairs.total_non_mated}")
    echo(f"Generated {len(mated)} mated and {len(non_mated)} non-mated comparisons (seed {seed})")
    paths = write_score_files(out_dir, stem, mated, non_mated)
    echo(f"Mated similarities saved to: {paths[0]}\nNon-mated similarities saved to: {paths[1]}")
    return paths


def analyze_embeddings(source, n_comparisons: int = DEFAULT_N_COMPARISONS, out_dir=".",
                       seed: int | None = DEFAULT_SEED, *, exhaustive: bool = False,
                       skip_invalid: bool = False, echo: Echo = print) -> Path:
    """``analyze_embeddings.py``: the distribution figure, and summary statistics on the console."""
    eset, stem = load(source, skip_invalid)
    mated, non_mated, _ = compute_scores(eset, n_comparisons, seed, exhaustive=exhaustive)
    for label, scores in (("Mated", mated), ("Non-mated", non_mated)):
        echo(f"{label} scores: n={len(scores)} mean={scores.mean():.4f} std={scores.std():.4f} "
             f"min={scores.min():.4f} max={scores.max():.4f}")
    path = distribution_figure(out_dir, stem, mated, non_mated, "all" if exhaustive else n_comparisons)
    echo(f"Plot saved to: {path}")
    return path


# ---------------------------------------------------------------- one command

def run(source, n_comparisons: int | None = DEFAULT_N_COMPARISONS, out_dir=".", *,
        seed: int | None = DEFAULT_SEED, bootstrap: int | None = None, exhaustive: bool = False,
        skip_invalid: bool = False, stem: str | None = None, figures: bool = True,
        echo: Echo = _quiet) -> dict:
    """The whole stage in one pass: scores, both figures, metrics CSV (merged) and JSON.

    ``source`` is an embedding file or an :class:`EmbeddingSet`. ``bootstrap`` resamples
    (None: :func:`faceaudit.evaluate.metrics.default_bootstrap`; 0: no CIs). Returns a dict with
    ``metrics``, ``ci``, the pair counts, the settings and the written ``paths``.
    ``figures=False`` skips the two figures (the slowest part on small inputs).
    """
    if seed is not None:
        checks.seed(seed)
    eset, default_stem = load(source, skip_invalid)
    stem = stem or default_stem
    out_dir = Path(out_dir)
    mated, non_mated, pairs = compute_scores(eset, n_comparisons, seed, exhaustive=exhaustive)
    mated_path, non_mated_path = write_score_files(out_dir, stem, mated, non_mated)
    analysis = analyze_scores(mated, non_mated, bootstrap, seed)
    figure, with_metrics = None, []
    if figures:
        curves = _curves(mated, non_mated)
        figure = distribution_figure(out_dir, stem, mated, non_mated, "all" if exhaustive else n_comparisons,
                                     curves)
        with_metrics = metrics_figure(out_dir, stem, mated, non_mated, analysis["metrics"], curves)
    csv_path = write_metrics_csv(out_dir / METRICS_DIR / CSV_NAME, [metrics_row(stem, analysis)], merge=True)
    result = {
        "dataset": stem,
        "input": eset.metadata.get("source_file"),
        "n_embeddings": len(eset),
        "n_identities": int(len(np.unique(eset.identities))),
        "n_comparisons": None if exhaustive else n_comparisons,
        "exhaustive": exhaustive,
        "seed": seed,
        "total_mated_pairs": pairs.total_mated,
        "total_non_mated_pairs": pairs.total_non_mated,
        "metrics": analysis["metrics"],
        "ci": analysis["ci"],
        "faceaudit_version": __version__,
    }
    json_path = out_dir / METRICS_DIR / f"{stem}_metrics.json"
    result["paths"] = {"mated_scores": str(mated_path), "non_mated_scores": str(non_mated_path),
                       "figure": figure and str(figure), "figures_with_metrics": [str(p) for p in with_metrics],
                       "metrics_csv": str(csv_path), "metrics_json": str(json_path)}
    write_json(json_path, jsonable(result))
    echo("\n".join(report_lines(stem, analysis)))
    return result
