"""Verification after each epoch, with the library's own code: identity-disjoint folds of sampled pairs
(:func:`faceaudit.evaluate.folds.sample_fold_pairs`), the EER (pyeer's rules), the k-fold accuracy at the
best threshold and the F1-maximising threshold (:mod:`faceaudit.evaluate.verification`).

Two sets are measured the same way: faces of held-out identities (``val``) and faces of as many training
identities (``train``, seen without augmentation), so their difference is the overfitting gap.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from faceaudit.evaluate.folds import DEFAULT_FOLDS, sample_fold_pairs
from faceaudit.evaluate.metrics import verification_metrics
from faceaudit.evaluate.verification import all_pairs_best, kfold, roc, sweep

#: the numbers of one set, in the order of the metrics CSV
NUMBERS = ("eer", "eer_threshold", "accuracy", "accuracy_std", "f1", "f1_threshold", "f1_distance", "auc")


@dataclass
class EvalSet:
    """Face rows and the pairs among them (indices into ``rows``), with their label and fold."""

    name: str
    rows: np.ndarray
    pairs: np.ndarray
    mated: np.ndarray
    folds: np.ndarray
    n_folds: int
    n_identities: int


def eval_set(name: str, identities: np.ndarray, rows: np.ndarray, n_pairs: int, seed: int) -> EvalSet:
    """Up to ``n_pairs`` mated and non-mated pairs among ``rows``, in up to 10 identity-disjoint folds."""
    ids = np.asarray(identities)[rows]
    n_identities = int(np.unique(ids).size)
    n_folds = min(DEFAULT_FOLDS, n_identities // 2)
    with warnings.catch_warnings():  # a small set uses all of its pairs: nothing to warn about
        warnings.simplefilter("ignore")
        drawn = sample_fold_pairs(ids, n_pairs, n_folds, seed, source=f"the {name} identities")
    return EvalSet(name, rows, drawn.pairs, drawn.mated, drawn.folds, n_folds, n_identities)


def embed_rows(forward: Callable[[torch.Tensor], torch.Tensor], faces: np.ndarray, rows: np.ndarray,
               batch_size: int = 64) -> np.ndarray:
    """The unit float32 embeddings ``forward`` (a uint8 NHWC batch -> (n, D), e.g. an
    :class:`~faceaudit.embed.embedder.Embedder`) gives ``faces[rows]``, a batch at a time."""
    parts = [forward(torch.from_numpy(np.ascontiguousarray(faces[rows[start:start + batch_size]]))).cpu()
             for start in range(0, rows.size, batch_size)]
    return torch.cat(parts).numpy()


def verification_numbers(scores: np.ndarray, es: EvalSet) -> dict:
    """EER and its threshold, k-fold accuracy (mean, std), held-out F1 at the F1 threshold chosen on the
    other folds, the all-pairs F1-maximising threshold as a cosine and as a distance between unit vectors
    (``sqrt(2 - 2 cos)``: the Siamese tool's threshold), and the ROC AUC."""
    sw = sweep(scores, es.mated, es.folds, es.n_folds)
    metrics = verification_metrics(scores[es.mated], scores[~es.mated], roc(sw))  # the sweep's ROC
    folds = kfold(sw)
    best_f1 = all_pairs_best(sw, "f1")
    return {"eer": metrics["eer"], "eer_threshold": metrics["eer_th"],
            "accuracy": folds["accuracy"]["mean"]["accuracy"], "accuracy_std": folds["accuracy"]["std"]["accuracy"],
            "f1": folds["f1"]["mean"]["f1"], "f1_threshold": best_f1["threshold"],
            "f1_distance": math.sqrt(max(0.0, 2 - 2 * best_f1["threshold"])), "auc": metrics["auc"]}
