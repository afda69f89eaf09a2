"""``faceaudit verification``: an embedding file's verification numbers as face-recognition papers report
them (:mod:`faceaudit.evaluate.verification`), on a pair protocol or on sampled identity-disjoint folds.

Outputs, under ``out_dir/Verification/`` (``<stem>`` is the embedding file's name up to its first dot):

- ``<stem>_verification.json`` and ``<stem>_verification.csv``: every number (the CSV one a row);
- ``<stem>_pairs.csv``: each pair's fold, label, score and images;
- ``<stem>_roc.csv``: the ROC thinned to at most about 2,000 points (threshold, FAR, TAR, FRR);
- ``<stem>_ROC.png/.pdf`` (log FAR) and ``<stem>_DET.png/.pdf`` (probit axes).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from faceaudit import checks
from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.evaluate.folds import DEFAULT_FOLDS, check_fold_classes, check_folds, ordered_folds, sample_fold_pairs
from faceaudit.evaluate.metrics import bootstrap_ci, verification_metrics
from faceaudit.evaluate.pairs import DEFAULT_SEED
from faceaudit.evaluate.verification import FAR_TARGETS, RULES, at_threshold, evaluate, roc, sweep
from faceaudit.io.files import jsonable, write_csv, write_json
from faceaudit.io.protocols import read_pair_protocol, resolve_pairs
from faceaudit.stages.variability import load, pair_scores
from faceaudit.stages.verify import decision_threshold
from faceaudit.report.verification import CSV_COLUMNS, csv_rows, report_lines
from faceaudit.version import __version__

VERIFICATION_DIR = "Verification"
DEFAULT_SAMPLE = 10000
PAIR_COLUMNS = ("fold", "same_person", "score", "identity1", "image_name1", "identity2", "image_name2", "line")


def output_paths(out_dir, stem: str) -> dict[str, Path]:
    folder = Path(out_dir) / VERIFICATION_DIR
    return {"json": folder / f"{stem}_verification.json", "csv": folder / f"{stem}_verification.csv",
            "pairs": folder / f"{stem}_pairs.csv", "roc": folder / f"{stem}_roc.csv",
            "roc_figure": folder / f"{stem}_ROC", "det_figure": folder / f"{stem}_DET"}


def check_options(pairs_file, sample, n_folds, rule: str, bootstrap, seed, threshold) -> None:
    """Every argument checked before any work."""
    checks.seed(seed)
    if threshold is not None:
        checks.cosine(threshold)
    if pairs_file is not None and sample is not None:
        raise FaceauditError("give either a pairs file or --sample, not both")
    if pairs_file is not None and not Path(pairs_file).is_file():
        raise FaceauditError(f"{pairs_file}: pairs file not found")
    if sample is not None and int(sample) <= 0:
        raise FaceauditError(f"--sample must be > 0, got {sample}")
    if n_folds is not None:
        check_folds(n_folds)
    if rule not in RULES:
        raise FaceauditError(f"unknown --rule {rule!r}; use {' or '.join(RULES)}")
    if bootstrap is not None and int(bootstrap) < 0:
        raise FaceauditError(f"--bootstrap must be >= 0, got {bootstrap}")


def protocol_pairs(eset, pairs_file=None, sample: int | None = None, n_folds: int | None = None,
                   seed: int = DEFAULT_SEED, skip_missing: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                   int, np.ndarray | None, dict]:
    """(row pairs, mated, folds, number of folds, protocol line per pair or None, protocol description)."""
    source = eset.metadata.get("source_file", "embeddings")
    if pairs_file is None:
        n = DEFAULT_SAMPLE if sample is None else int(sample)
        drawn = sample_fold_pairs(eset.identities, n, n_folds or DEFAULT_FOLDS, seed, source)
        info = {"kind": "sample", "sample": n, "seed": seed, "fold_split": "identity-disjoint",
                "fold_split_detail": "identities shuffled with the seed and dealt to the folds in turn; "
                                     "pairs drawn within each fold",
                "folds_short_of_pairs": [f + 1 for f in drawn.short_folds]}
        return drawn.pairs, drawn.mated, drawn.folds, drawn.n_folds, None, info
    protocol = read_pair_protocol(pairs_file)
    rows, kept = resolve_pairs(protocol, eset, skip_missing)
    skipped = int((~kept).sum())
    if skipped:
        warnings.warn(f"{pairs_file}: skipped {skipped} of {len(protocol)} pairs naming images not in {source}",
                      FaceauditWarning, stacklevel=2)
    mated = protocol.mated[kept]
    if not mated.any() or mated.all():
        raise FaceauditError(f"{pairs_file}: after skipping {skipped} pairs with missing images, only "
                             f"{'mated' if mated.any() else 'non-mated'} pairs are left")
    info = {"kind": protocol.kind, "file": str(pairs_file), "pairs_in_file": len(protocol), "skipped_missing": skipped}
    if protocol.folds is not None:
        file_folds = int(protocol.folds.max()) + 1
        if n_folds is not None and n_folds != file_folds:
            raise FaceauditError(f"{pairs_file}: the file defines {file_folds} folds; --folds {n_folds} disagrees "
                                 f"(leave --folds out to use the file's)")
        folds, n_folds = protocol.folds[kept], file_folds
        info["fold_split"] = "as in the file"
    else:
        n_folds = n_folds or DEFAULT_FOLDS
        folds = ordered_folds(mated, n_folds)
        info["fold_split"] = "file order, per kind"
        info["fold_split_detail"] = "the i-th of the m pairs of a kind goes to fold floor(i * k / m)"
    check_fold_classes(mated, folds, n_folds, str(pairs_file))
    return rows, mated, folds, n_folds, protocol.lines[kept], info


def run(source, pairs_file=None, *, sample: int | None = None, n_folds: int | None = None, out_dir=".",
        rule: str = "nearest", threshold: float | None = None, seed: int = DEFAULT_SEED,
        bootstrap: int | None = None, skip_missing: bool = False, skip_invalid: bool = False,
        figures: bool = True, echo: Callable[[str], None] = lambda _: None) -> dict:
    """The whole job for one embedding file (or EmbeddingSet); returns the result written to the JSON.

    ``pairs_file``: LFW ``pairs.txt`` or a CSV pair list; without one, ``sample`` (default 10,000) mated
    and non-mated pairs in identity-disjoint folds. ``threshold``: a fixed decision threshold (default:
    the model's documented one, when the embeddings name their model). ``bootstrap``: resamples for the
    95% bootstrap CIs of the pyeer metrics (None: the variability default; 0: none).
    """
    check_options(pairs_file, sample, n_folds, rule, bootstrap, seed, threshold)
    eset, stem = load(source, skip_invalid)
    arch = eset.metadata.get("arch")
    fixed, fixed_source = decision_threshold(arch, threshold)
    rows, mated, folds, n_folds, lines, protocol = protocol_pairs(eset, pairs_file, sample, n_folds, seed,
                                                                  skip_missing)
    scores = pair_scores(eset.vectors, rows)
    result = {"dataset": stem, "input": eset.metadata.get("source_file"), "model": arch,
              "n_embeddings": len(eset), "n_identities_in_pairs": int(np.unique(eset.identities[rows]).size),
              "protocol": protocol}
    sw = sweep(scores, mated, folds, n_folds)
    result.update(evaluate(scores, mated, folds, n_folds, rule=rule, threshold=fixed, sw=sw))
    genuine, impostor = scores[mated], scores[~mated]
    metrics = verification_metrics(genuine, impostor, roc(sw))  # the sweep's ROC: no second sort
    eer_point = at_threshold(scores, mated, metrics["eer_th"])
    result["eer"] = {"value": metrics["eer"], "threshold": metrics["eer_th"], "far": eer_point["far"],
                     "frr": eer_point["frr"]}
    result["metrics"] = metrics
    result["ci"] = None if bootstrap == 0 else bootstrap_ci(genuine, impostor, bootstrap, seed=seed)
    result["fixed_threshold_source"] = fixed_source
    result["far_targets"] = list(FAR_TARGETS)
    result["faceaudit_version"] = __version__
    paths = output_paths(out_dir, stem)
    result["paths"] = _write(paths, result, eset, rows, mated, folds, scores, lines, roc(sw), figures)
    write_json(paths["json"], jsonable(result))
    write_csv(paths["csv"], CSV_COLUMNS, csv_rows(result))
    echo("\n".join(report_lines(result)))
    return result


def _write(paths: dict, result: dict, eset, rows, mated, folds, scores, lines, curve, figures: bool) -> dict:
    """Pairs CSV, thinned ROC CSV and the two figures; the paths of everything this run writes."""
    from faceaudit.report.curves import curve_points

    order = np.argsort(folds, kind="stable")
    first, second = rows[order, 0], rows[order, 1]
    columns = ((folds[order] + 1).tolist(), np.asarray(mated)[order].astype(int).tolist(),
               [repr(s) for s in np.asarray(scores, dtype=np.float64)[order].tolist()],
               eset.identities[first].tolist(), eset.image_names[first].tolist(),
               eset.identities[second].tolist(), eset.image_names[second].tolist(),
               [""] * len(order) if lines is None else np.asarray(lines)[order].astype(int).tolist())
    write_csv(paths["pairs"], PAIR_COLUMNS, zip(*columns))  # gathered column by column, not pair by pair
    thresholds, fm, fnm = curve
    far, frr = fm / result["n_non_mated"], fnm / result["n_mated"]
    chosen = [int(np.searchsorted(thresholds, p["threshold"])) for p in result["tar_at_far"] if p.get("reachable")]
    keep = curve_points(far, frr, keep=[i for i in chosen if i < thresholds.size])
    write_csv(paths["roc"], ("threshold", "far", "tar", "frr"),
              ([repr(float(thresholds[i])), repr(float(far[i])), repr(float(1 - frr[i])), repr(float(frr[i]))]
               for i in keep.tolist()))
    written = {"json": str(paths["json"]), "csv": str(paths["csv"]), "pairs": str(paths["pairs"]),
               "roc": str(paths["roc"]), "figures": []}
    if figures:
        written["figures"] = [str(p) for p in _figures(paths, result, far[keep], frr[keep])]
    return written


def _figures(paths: dict, result: dict, far: np.ndarray, frr: np.ndarray) -> list[Path]:
    from faceaudit.report.curves import plot_det, plot_roc
    from faceaudit.report.plots import save_figure

    label = result["dataset"]
    marks = [(p["far"], p["tar"], f"FAR {p['far_target']:g}") for p in result["tar_at_far"] if p.get("reachable")]
    title = (f"{label}: {result['n_mated']:,} mated, {result['n_non_mated']:,} non-mated pairs "
             f"(TAR@FAR rule: {result['rule']})")
    written = save_figure(plot_roc({label: (far, 1 - frr)}, title, {label: marks}), paths["roc_figure"],
                          formats=("png", "pdf"))
    written += save_figure(plot_det({label: (far, frr)}, title), paths["det_figure"], formats=("png", "pdf"))
    return written
