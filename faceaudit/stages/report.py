"""``faceaudit report DIR...``: many datasets on one page. Every dataset's results found under the given
output folders (variability, verification, leakage) become one table (CSV, Markdown and one static
HTML page) and four overlay figures: ROC, DET, a grid of mated / non-mated densities, best matches.

What is read, under each folder at any depth (``<stem>`` names the dataset):

- variability: ``Metrics/<stem>_metrics.json`` and ``SimilarityScores/<stem>_{mated,non_mated}_similarities.txt``;
- verification: ``Verification/<stem>_verification.json``, ``_roc.csv`` and ``_pairs.csv``;
- leakage: ``<stem>_leakage_summary.json`` and ``<stem>_BestMatches_<n>.txt`` (the largest ``n``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.evaluate.verification import FAR_TARGETS
from faceaudit.io.files import read_csv_table, read_json, read_scores
from faceaudit.report.page import Page, write_table
from faceaudit.stages.variability import MATED_SUFFIX, METRICS_DIR, NON_MATED_SUFFIX, SCORES_DIR
from faceaudit.stages.verification import VERIFICATION_DIR

DEFAULT_OUT = "report"
FORMATS = ("png", "pdf")
_BEST_MATCHES = re.compile(r"^(?P<stem>.+)_BestMatches_(?P<n>\d+)\.txt$")


@dataclass
class Dataset:
    """What one output folder holds about one dataset (``None``: that stage's results are absent)."""

    stem: str
    folder: Path
    where: str = "."           # the results' subfolder, relative to ``folder``
    label: str = ""
    variability: dict | None = None
    scores: tuple[Path, Path] | None = None
    verification: dict | None = None
    verification_files: dict[str, Path] = field(default_factory=dict)
    leakage: dict | None = None
    best_matches: Path | None = None


def _read_json(path: Path) -> dict:
    value = read_json(path)
    if not isinstance(value, dict):
        raise FaceauditError(f"{path}: expected a JSON object")
    return value


def gather(folders: Sequence[str | os.PathLike], skip: Path | None = None) -> list[Dataset]:
    """Every dataset found under ``folders`` (in folder order, then by path), labelled by its stem, or by
    ``stem (folder/subfolder)`` when the stem occurs more than once. Results of one stem in one folder are
    one dataset, unless a stage's result is found twice (say two verification runs in subfolders): the
    second makes a dataset of its own. ``skip``: a folder not to look in."""
    datasets: list[Dataset] = []

    def entry(folder: Path, stem: str, slot: str, root: Path) -> Dataset:
        for item in datasets:
            if item.folder == folder and item.stem == stem and getattr(item, slot) in (None, {}):
                return item
        datasets.append(Dataset(stem, folder, where=root.relative_to(folder).as_posix()))
        return datasets[-1]

    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FaceauditError(f"{folder}: results folder not found")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not (skip and skip in p.resolve().parents))
        before = len(datasets)
        for path in files:
            name, parent, root = path.name, path.parent.name, path.parent.parent
            if parent == METRICS_DIR and name.endswith("_metrics.json"):
                record = _read_json(path)
                if "metrics" in record:
                    entry(folder, name[:-len("_metrics.json")], "variability", root).variability = record
            elif parent == SCORES_DIR and name.endswith(MATED_SUFFIX) and not name.endswith(NON_MATED_SUFFIX):
                partner = path.with_name(name[:-len(MATED_SUFFIX)] + NON_MATED_SUFFIX)
                if partner.is_file():
                    entry(folder, name[:-len(MATED_SUFFIX)], "scores", root).scores = (path, partner)
            elif parent == VERIFICATION_DIR and name.endswith("_verification.json"):
                stem = name[:-len("_verification.json")]
                item = entry(folder, stem, "verification", root)
                item.verification = _read_json(path)
                item.verification_files = {kind: path.with_name(f"{stem}_{kind}.csv") for kind in ("roc", "pairs")
                                           if path.with_name(f"{stem}_{kind}.csv").is_file()}
            elif name.endswith("_leakage_summary.json"):
                entry(folder, name[:-len("_leakage_summary.json")], "leakage", path.parent).leakage = _read_json(path)
            elif _BEST_MATCHES.match(name):
                stem = _BEST_MATCHES.match(name)["stem"]
                known = [d for d in datasets if d.folder == folder and d.stem == stem and d.best_matches]
                if known and _n_of(path) > _n_of(known[0].best_matches):
                    known[0].best_matches = path
                elif not known:
                    entry(folder, stem, "best_matches", path.parent).best_matches = path
        if len(datasets) == before:
            raise FaceauditError(f"{folder}: no faceaudit results found (Metrics/*_metrics.json, SimilarityScores/, "
                                 f"{VERIFICATION_DIR}/*_verification.json, *_leakage_summary.json, *_BestMatches_*.txt)")
    stems = [d.stem for d in datasets]
    for d in datasets:
        place = d.folder.name + ("" if d.where == "." else f"/{d.where}")
        d.label = d.stem if stems.count(d.stem) == 1 else f"{d.stem} ({place})"
    return datasets


def _n_of(path: Path) -> int:
    return int(_BEST_MATCHES.match(path.name)["n"])


# ---------------------------------------------------------------- the table

def _tar(verification: dict, target: float):
    for point in verification["tar_at_far"]:
        if point["far_target"] == target:
            return point["tar"] if point["reachable"] else None
    return None


def _above(leakage: dict) -> tuple[float | None, float | None]:
    above = leakage.get("above_threshold") or []
    return (above[-1]["threshold"], above[-1]["fraction"]) if above else (None, None)


VARIABILITY_COLUMNS = ("mated pairs", "non-mated pairs", "EER", "EER CI lower", "EER CI upper", "FMR100",
                       "FMR1000", "AUC", "d'", "FDR")
VERIFICATION_COLUMNS = ("pairs", "folds", "k-fold accuracy", "accuracy std", "F1 (held out)",
                        *(f"TAR@FAR={t:g}" for t in FAR_TARGETS), "TAR@FAR rule", "ROC AUC", "verification EER")
LEAKAGE_COLUMNS = ("queries", "best match mean", "best match median", "best match q99", "best match max",
                   "leak threshold", "share at or above", "flagged identities")


def table_rows(datasets: Sequence[Dataset]) -> tuple[list[str], list[list]]:
    """The one wide table: a row per dataset, blank cells where a stage's results are absent."""
    header = ["dataset", "folder", *VARIABILITY_COLUMNS, *VERIFICATION_COLUMNS, *LEAKAGE_COLUMNS]
    rows = []
    for d in datasets:
        row = [d.label, str(d.folder)]
        if d.variability:
            m, ci = d.variability["metrics"], d.variability.get("ci") or {}
            row += [m["n_genuine"], m["n_impostor"], m["eer"], *(ci.get("eer") or (None, None)), m["fmr100"],
                    m["fmr1000"], m["auc"], m["decidability"], m["fdr"]]
        else:
            row += [None] * len(VARIABILITY_COLUMNS)
        if d.verification:
            v = d.verification
            row += [v["n_pairs"], v["n_folds"], v["accuracy"]["mean"]["accuracy"], v["accuracy"]["std"]["accuracy"],
                    v["f1"]["mean"]["f1"], *(_tar(v, t) for t in FAR_TARGETS), v["rule"], v["roc_auc"], v["eer"]["value"]]
        else:
            row += [None] * len(VERIFICATION_COLUMNS)
        if d.leakage:
            leak = d.leakage
            flagged = leak.get("flagged_identities")
            row += [leak["n"], leak["mean"], leak["median"], leak.get("q99"), leak["max"], *_above(leak),
                    None if flagged is None else len(flagged)]
        else:
            row += [None] * len(LEAKAGE_COLUMNS)
        rows.append(row)
    return header, rows


# ---------------------------------------------------------------- figures

def _csv_numbers(path, columns: Sequence[str]) -> list[np.ndarray]:
    """Number columns of a CSV; a cell that is not a number is a one-line error naming the file and column."""
    _, table = read_csv_table(path, columns)
    out = []
    for column in columns:
        try:
            out.append(np.array(table[column], dtype=np.float64))
        except ValueError as exc:
            raise FaceauditError(f"{path}: column {column!r} holds a value that is not a number ({exc})") from None
    return out


def _roc_of(d: Dataset, scores: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(FAR, FRR) of a dataset: the verification ROC, else one computed from its variability scores."""
    if "roc" in d.verification_files:
        far, frr = _csv_numbers(d.verification_files["roc"], ("far", "frr"))
        return far, frr
    if d.scores:
        from faceaudit.evaluate.verification import roc, sweep
        from faceaudit.report.curves import curve_points

        mated, non_mated = scores
        _, fm, fnm = roc(sweep(np.concatenate([mated, non_mated]), np.arange(mated.size + non_mated.size) < mated.size))
        far, frr = fm / non_mated.size, fnm / mated.size
        keep = curve_points(far, frr)
        return far[keep], frr[keep]
    return None


def _mated_non_mated(d: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    if d.scores:
        return read_scores(d.scores[0]), read_scores(d.scores[1])
    if "pairs" in d.verification_files:
        same, scores = _csv_numbers(d.verification_files["pairs"], ("same_person", "score"))
        return scores[same == 1], scores[same != 1]
    return None


def figures(datasets: Sequence[Dataset], out: Path, formats: Sequence[str] = FORMATS) -> list[tuple[Path, str, str]]:
    """The overlay figures (``formats``, PNG first, under ``out/figures``): ``(png path, caption, sources)`` each."""
    from faceaudit.report.compare_plots import overlay_densities
    from faceaudit.report.curves import plot_det, plot_kde_grid, plot_roc
    from faceaudit.report.plots import kde_curve, save_figure

    densities = {d.label: s for d in datasets if (s := _mated_non_mated(d)) is not None}  # read all, then write
    rocs = {d.label: r for d in datasets if (r := _roc_of(d, densities.get(d.label))) is not None}
    best = {d.label: read_scores(d.best_matches) for d in datasets if d.best_matches}
    folder, made = out / "figures", []
    if rocs:
        sources = "verification ROC where present, else the variability score files"
        paths = save_figure(plot_roc({k: (far, 1 - frr) for k, (far, frr) in rocs.items()}, "ROC, every dataset"),
                            folder / "ROC_all", formats=formats)
        made.append((paths[0], "ROC of every dataset (log FAR)", sources))
        paths = save_figure(plot_det(rocs, "DET, every dataset"), folder / "DET_all", formats=formats)
        made.append((paths[0], "DET of every dataset (normal-deviate axes)", sources))
    if densities:
        paths = save_figure(plot_kde_grid(densities), folder / "MatedVsNonmated_grid", formats=formats)
        made.append((paths[0], "Mated vs non-mated similarity, one panel per dataset",
                     "SimilarityScores/ where present, else the verification pairs"))
    if best:
        fig = overlay_densities({label: kde_curve(scores) for label, scores in best.items()},
                                "Best match in the reference set", notes={k: f"(n={len(v):,})" for k, v in best.items()})
        paths = save_figure(fig, folder / "BestMatches_all", formats=formats)
        made.append((paths[0], "Best-match similarity of every dataset's queries",
                     ", ".join(str(d.best_matches) for d in datasets if d.best_matches)))
    return made


# ---------------------------------------------------------------- the page

def _section(page: Page, header: list[str], rows: list[list], columns: Sequence[str], title: str, source: str) -> None:
    keep = [0] + [header.index(c) for c in columns]
    shown = [[row[i] for i in keep] for row in rows if any(row[i] is not None for i in keep[1:])]
    if shown:
        page.heading(title).table([header[i] for i in keep], shown, source=source)


def run_report(folders: Sequence[str | os.PathLike], out_dir: str | os.PathLike = DEFAULT_OUT,
               title: str = "faceaudit report", formats: Sequence[str] = FORMATS,
               echo: Callable[[str], None] = lambda _: None) -> dict:
    """Gather, tabulate and draw; writes ``out/report.md``, ``out/report.html``, ``out/datasets.csv/.md`` and
    ``out/figures/`` (each figure in ``formats``: PNG for the page, PDF for papers). Returns the datasets'
    labels and the written paths."""
    if not formats or formats[0] != "png":
        raise FaceauditError(f"the page shows PNG figures: formats must start with 'png', got {list(formats)}")
    out = Path(out_dir)
    datasets = gather(folders, skip=out.resolve() if out.exists() else None)
    header, rows = table_rows(datasets)
    made = figures(datasets, out, formats)
    tables = write_table(out / "datasets", header, rows)
    page = Page(title).text(f"{len(datasets)} dataset(s) from {', '.join(str(f) for f in folders)}. "
                            f"The full table (every column): datasets.csv.")
    _section(page, header, rows, VARIABILITY_COLUMNS, "Mated vs non-mated (variability)", f"{METRICS_DIR}/*_metrics.json")
    _section(page, header, rows, VERIFICATION_COLUMNS, "Verification",
             f"{VERIFICATION_DIR}/*_verification.json (TAR blank: out of reach for the pair count)")
    _section(page, header, rows, LEAKAGE_COLUMNS, "Identity leakage (best match in the reference set)",
             "*_leakage_summary.json")
    for path, caption, source in made:
        page.figure(path, caption, source)
    pages = page.write(out / "report")
    echo(f"{len(datasets)} dataset(s): {', '.join(d.label for d in datasets)}")
    for path in [*pages, *tables, *(p for p, _, _ in made)]:
        echo(f"wrote {path}")
    return {"datasets": [d.label for d in datasets], "pages": [str(p) for p in pages],
            "tables": [str(p) for p in tables], "figures": [str(p) for p, _, _ in made]}
