"""``faceaudit verify``: do two face photos (or each pair of a CSV) show the same person? The cosine score of
their embeddings against a decision threshold whose origin is always stated: ``--threshold``, or the
model's documented one (:attr:`faceaudit.models.ModelSpec.threshold`, its FMR = 1e-3 point on real faces).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from faceaudit import checks
from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.io.files import write_csv
from faceaudit.io.protocols import read_image_pairs
from faceaudit.stages.variability import pair_scores

RESULT_COLUMNS = ("line", "image1", "image2", "score", "threshold", "same_person", "label", "error")
DEFAULT_ARCH = "sface"
DEFAULT_ALIGN = "yunet"


def decision_threshold(arch: str | None, threshold: float | None = None) -> tuple[float | None, str]:
    """(threshold, where it came from): ``threshold`` when given, else the model's documented value.

    ``(None, reason)`` when neither exists (no architecture recorded, or a model without a measured value).
    """
    from faceaudit.models import model_threshold

    if threshold is not None:
        return checks.cosine(threshold), "given with --threshold"
    value, source = model_threshold(arch)
    return value, source if value is not None else f"{source}; pass --threshold"


def verify_images(pairs: list[tuple[str, str]], arch: str = DEFAULT_ARCH, weights=None, *,
                  threshold: float | None = None, align: str | None = DEFAULT_ALIGN, device: str = "auto",
                  models_dir: str | os.PathLike = "Models", flip_tta: bool = False, skip_missing: bool = False,
                  labels: list[bool] | None = None) -> dict:
    """Scores and decisions for pairs of image files; each distinct image is embedded once.

    Returns ``{"scores", "same_person", "threshold", "threshold_source", "errors", "model"}``; with
    ``skip_missing`` a pair whose image cannot be read or holds no face gets a NaN score and its reason
    in ``errors`` (pair index -> reason), else that image is a one-line error.
    """
    from faceaudit.embed.inmemory import embed_images

    value, source = decision_threshold(arch, threshold)
    if value is None:
        raise FaceauditError(source)
    files = sorted({path for pair in pairs for path in pair})
    row_of = {path: row for row, path in enumerate(files)}
    embedded = embed_images(files, arch, weights, device=device, align=align, models_dir=models_dir,
                            flip_tta=flip_tta, skip_errors=skip_missing)
    scores = pair_scores(embedded.vectors, np.array([[row_of[a], row_of[b]] for a, b in pairs], dtype=np.int64))
    errors = {}
    for index, (a, b) in enumerate(pairs):
        reasons = [f"{path}: {embedded.errors[row_of[path]]}" for path in (a, b) if row_of[path] in embedded.errors]
        if reasons:
            errors[index] = "; ".join(reasons)
    result = {"scores": scores, "same_person": scores >= value, "threshold": value, "threshold_source": source,
              "errors": errors, "model": embedded.info, "labels": labels}
    if labels is not None:
        scored = np.isfinite(scores)
        result["agree"] = int(np.count_nonzero((result["same_person"] == np.asarray(labels)) & scored))
        result["n_scored"] = int(scored.sum())
    return result


def verify_pair_file(pairs_csv: str | os.PathLike, output: str | os.PathLike, *, echo: Callable[[str], None] = print,
                     **options) -> dict:
    """``faceaudit verify --pairs CSV``: every pair of the CSV, results written to ``output`` (CSV)."""
    table = read_image_pairs(pairs_csv)
    result = verify_images(list(zip(table.path1, table.path2)), labels=table.labels, **options)
    if result["errors"]:
        shown = "; ".join(f"line {table.lines[i]}: {reason}" for i, reason in list(result["errors"].items())[:3])
        warnings.warn(f"{pairs_csv}: {len(result['errors'])} pair(s) skipped ({shown})", FaceauditWarning,
                      stacklevel=2)
    rows = []
    for i, (line, a, b) in enumerate(zip(table.lines, table.path1, table.path2)):
        score = float(result["scores"][i])
        scored = np.isfinite(score)
        rows.append([line, a, b, repr(score) if scored else "", result["threshold"],
                     ("yes" if result["same_person"][i] else "no") if scored else "",
                     "" if table.labels is None else int(table.labels[i]), result["errors"].get(i, "")])
    result["output"] = write_csv(Path(output), RESULT_COLUMNS, rows)
    same = int(np.count_nonzero(result["same_person"] & np.isfinite(result["scores"])))
    echo(f"{len(rows) - len(result['errors'])} pairs scored: {same} same person, "
         f"{len(rows) - len(result['errors']) - same} different people"
         + (f"; {len(result['errors'])} skipped" if result["errors"] else ""))
    if table.labels is not None:
        echo(f"agree with the labels: {result['agree']} of {result['n_scored']} "
             f"({100 * result['agree'] / max(result['n_scored'], 1):.2f}%)")
    return result
