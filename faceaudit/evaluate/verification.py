"""Verification as face-recognition papers report it, from pair scores and labels by one sweep of the
sorted scores: k-fold accuracy (InsightFace's protocol), F1-maximising thresholds, TAR at fixed FAR
under a stated rule, and the rates at a fixed threshold, each error rate with a Clopper-Pearson interval.

Conventions (as :mod:`faceaudit.evaluate.metrics`): a pair is accepted as the same person when
``score >= threshold``; the candidate thresholds are the unique scores.

- **k-fold accuracy**: for each fold, the threshold with the highest accuracy on the other folds
  (candidates: the unique scores of those folds; the lowest on ties, as ``np.argmax``) is applied to
  the fold; mean and standard deviation (ddof 0, as InsightFace's ``np.std``) over the folds.
- **F1**: the same protocol with ``F1 = 2TP / (2TP + FP + FN)`` in place of accuracy (the Siamese tool's
  rule), with precision, recall and F1 on each held-out fold (0 where undefined, as scikit-learn's
  ``zero_division=0``).
- **TAR@FAR**: on the ROC of all pairs, ``nearest`` (pyeer) takes the threshold whose FAR is nearest the
  target (lowest threshold on ties); ``at-most`` takes the lowest threshold whose FAR is at most the
  target, i.e. the highest TAR with FAR <= target (scikit-learn's ``roc_curve`` read that way; bob's
  ``far_threshold`` gives the same FAR, with thresholds among non-mated scores only). A target is out of
  reach when fewer than ``1 / target`` non-mated pairs exist.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.evaluate.metrics import distinct, nearest_rate_index

FAR_TARGETS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
SCORE_KEYS = ("accuracy", "precision", "recall", "f1", "far", "frr")
RULES = ("nearest", "at-most")
CRITERIA = ("accuracy", "f1")
LEVEL = 0.95


def clopper_pearson(successes, trials, level: float = LEVEL):
    """Exact (Clopper-Pearson) binomial interval(s) ``(lower, upper)`` of ``successes / trials``:
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of Beta(k, n - k + 1) and Beta(k + 1, n - k).

    Works on scalars or arrays; ``trials == 0`` gives ``(0, 1)``.
    """
    from scipy.special import betaincinv

    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    tail = (1 - level) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = np.where(k <= 0, 0.0, betaincinv(np.maximum(k, 1), np.maximum(n - k + 1, 1), tail))
        upper = np.where(k >= n, 1.0, betaincinv(k + 1, np.maximum(n - k, 1), 1 - tail))
    if lower.ndim == 0:
        return float(lower), float(upper)
    return lower, upper


def _rate(successes: int, trials: int, level: float = LEVEL) -> dict:
    """A rate with its counts and Clopper-Pearson interval."""
    lower, upper = clopper_pearson(successes, trials, level)
    return {"value": successes / trials if trials else 0.0, "count": int(successes), "n": int(trials),
            "ci": [lower, upper]}


@dataclass
class Sweep:
    """The unique scores, ascending, how many pairs of each kind have each of them, and the same per fold.

    ``genuine[j]`` / ``impostor[j]`` count the mated / non-mated pairs with score ``values[j]``;
    ``genuine_below`` / ``impostor_below`` count those with a lower score; ``fold_indices[f]`` holds,
    sorted, the unique-score index of every mated and of every non-mated pair of fold ``f`` (memory
    O(pairs); any count of a fold is a ``searchsorted`` away).
    """

    values: np.ndarray
    genuine: np.ndarray
    impostor: np.ndarray
    fold_indices: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def __post_init__(self):
        self.genuine_below, self.impostor_below = _below(self.genuine), _below(self.impostor)
        #: scores held by a mated pair whose next lower score is held by a non-mated pair (or that are the
        #: lowest): with the top score, the only ones that can maximise accuracy or F1 (:func:`best_indices`)
        after_impostor = np.empty(self.values.size, dtype=bool)
        after_impostor[0] = True
        np.greater(self.impostor[:-1], 0, out=after_impostor[1:])
        self.run_starts = np.flatnonzero(after_impostor & (self.genuine > 0))

    @property
    def n_folds(self) -> int:
        return len(self.fold_indices)


def sweep(scores, mated, folds=None, n_folds: int | None = None) -> Sweep:
    """Unique scores and counts per unique score, per kind and per fold.

    The pairs are grouped by (fold, kind) with a radix sort of those small codes, each group is sorted
    on its own, and each sorted score finds its unique-score index by ``searchsorted``: SIMD sorts of
    plain floats, where an ``argsort`` of the scores would cost several times more.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    mated = np.asarray(mated, dtype=bool).ravel()
    if scores.size != mated.size:
        raise FaceauditError(f"{scores.size} scores but {mated.size} labels")
    if not np.isfinite(scores).all():
        raise FaceauditError("pair scores hold NaN or infinite values")
    if not mated.any() or mated.all():
        raise FaceauditError("verification needs both mated and non-mated pairs")
    values = distinct(np.sort(scores))
    if folds is None:
        folds, n_folds = np.zeros(scores.size, dtype=np.int16), 1
    else:
        folds = np.asarray(folds).ravel()
        n_folds = int(n_folds if n_folds is not None else folds.max() + 1)
    codes = folds.astype(np.int16) * 2 + mated  # (fold, kind): 2 * fold + 1 for mated pairs
    order = np.argsort(codes, kind="stable")  # radix sort of 16-bit codes
    bounds = np.searchsorted(codes[order], np.arange(2 * n_folds + 1))
    grouped = scores[order]
    del order, codes
    indices = []
    for code in range(2 * n_folds):
        group = grouped[bounds[code]:bounds[code + 1]]
        group.sort()
        indices.append(np.searchsorted(values, group))
    del grouped
    genuine = np.bincount(np.concatenate(indices[1::2]), minlength=values.size)
    impostor = np.bincount(np.concatenate(indices[0::2]), minlength=values.size)
    fold_indices = list(zip(indices[1::2], indices[0::2])) if n_folds > 1 else []
    return Sweep(values, genuine, impostor, fold_indices)


def _below(counts: np.ndarray) -> np.ndarray:
    """Exclusive running total: pairs with a score below each unique score."""
    out = np.cumsum(counts)
    out -= counts
    return out


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)


def counts_at(sw: Sweep, index: int, fold: int | None = None, held_out: bool = False) -> dict:
    """Confusion counts when accepting the unique scores from ``index`` up: of all pairs, of the pairs
    outside ``fold`` (training), or with ``held_out`` of the pairs in it."""
    fold_g, fold_i = sw.fold_indices[fold] if fold is not None else _empty()
    fn_fold, tn_fold = int(np.searchsorted(fold_g, index)), int(np.searchsorted(fold_i, index))
    if held_out:
        return {"tp": fold_g.size - fn_fold, "fp": fold_i.size - tn_fold, "fn": fn_fold, "tn": tn_fold}
    fn = int(sw.genuine_below[index]) - fn_fold
    tn = int(sw.impostor_below[index]) - tn_fold
    return {"tp": int(sw.genuine_below[-1] + sw.genuine[-1]) - fold_g.size - fn,
            "fp": int(sw.impostor_below[-1] + sw.impostor[-1]) - fold_i.size - tn, "fn": fn, "tn": tn}


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values ascending, how often each occurs): a plain sort and run lengths (``np.unique``
    with counts hashes, several times slower on millions of integers)."""
    values = np.sort(values)
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]])) if values.size else values
    return values[starts], np.diff(np.append(starts, values.size))


def _in_fold(sorted_indices: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(how many of a fold's sorted unique-score indices lie below each of ``at``, how many equal it)."""
    below = np.searchsorted(sorted_indices, at, side="left")
    return below, np.searchsorted(sorted_indices, at, side="right") - below


def _criterion(which: str, n_genuine: int, n_impostor: int, g_below, i_below):
    """Accuracy (as the number of pairs decided right, ``TP + TN``) or ``F1 = 2 TP / (2 TP + FP + FN)
    = 2 TP / (accepted + G)`` when accepting from thresholds with ``g_below`` mated and ``i_below``
    non-mated pairs below them."""
    true_positives = n_genuine - g_below
    if which == "accuracy":
        return true_positives + i_below
    return 2 * true_positives / (n_genuine + n_impostor + n_genuine - g_below - i_below)


def best_indices(sw: Sweep, fold: int | None = None, criteria=CRITERIA) -> dict[str, int]:
    """Per criterion (accuracy, f1), the index of the unique score that maximises it on the pairs outside
    ``fold`` (all pairs when None). The candidates are the scores those pairs have; the lowest wins ties.

    Few candidates can win. Among the scores the training pairs have, raising the threshold past one held
    by non-mated pairs only gains true negatives, and lowering it onto one held by mated pairs only gains
    true positives (F1 rises too, since ``accepted + G > TP``). So only the top score and the scores held
    by a mated pair whose next lower training score is held by a non-mated pair can win: those are
    ``sw.run_starts``, or lie just above a score every pair of which is in the held-out fold. Only
    they are visited, every count a difference of running totals.
    """
    unknown = set(criteria) - set(CRITERIA)
    if unknown:
        raise FaceauditError(f"unknown criterion {sorted(unknown)[0]!r}; use {' or '.join(CRITERIA)}")
    fold_g, fold_i = sw.fold_indices[fold] if fold is not None else _empty()
    n_genuine = int(sw.genuine_below[-1] + sw.genuine[-1]) - fold_g.size
    n_impostor = int(sw.impostor_below[-1] + sw.impostor[-1]) - fold_i.size
    at = sw.run_starts
    if fold is not None:  # scores just above a score that only held-out pairs have
        held, held_count = _runs(np.concatenate([fold_g, fold_i]))
        held_only = held[held_count == sw.genuine[held] + sw.impostor[held]] + 1
        at, _ = _runs(np.concatenate([at, held_only[held_only < sw.values.size]]))
        at = at[sw.genuine[at] > 0]
    g_below, i_below = sw.genuine_below[at], sw.impostor_below[at]
    present = sw.genuine[at] + sw.impostor[at]
    if fold is not None:
        for fold_index, below in ((fold_g, g_below), (fold_i, i_below)):
            fold_below, fold_equal = _in_fold(fold_index, at)
            below -= fold_below
            present -= fold_equal
    absent = present == 0
    top = sw.values.size - 1  # the highest score some training pair has
    while fold is not None and sw.genuine[top] + sw.impostor[top] == sum(_in_fold(f, top)[1] for f in (fold_g, fold_i)):
        top -= 1
    top_counts = counts_at(sw, top, fold)
    out = {}
    for which in criteria:
        values = _criterion(which, n_genuine, n_impostor, g_below, i_below)
        values[absent] = -1  # below every accuracy and F1
        best = int(np.argmax(values)) if values.size else -1  # np.argmax keeps the first (lowest) on ties
        top_value = _criterion(which, n_genuine, n_impostor, top_counts["fn"], top_counts["tn"])
        out[which] = int(at[best]) if best >= 0 and (values[best] >= top_value or at[best] == top) else top
    return out


def confusion_scores(c: dict) -> dict:
    """Accuracy, precision, recall (TAR), F1, FAR and FRR of confusion counts (0 where undefined)."""
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    denominator = 2 * tp + fp + fn
    return {"accuracy": (tp + tn) / (tp + fp + fn + tn), "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0, "f1": 2 * tp / denominator if denominator else 0.0,
            "far": fp / (fp + tn) if fp + tn else 0.0, "frr": fn / (tp + fn) if tp + fn else 0.0}


def with_intervals(c: dict, level: float = LEVEL) -> dict:
    """:func:`confusion_scores` with counts and a Clopper-Pearson interval for every rate (F1 has none)."""
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    return {"accuracy": _rate(tp + tn, tp + fp + fn + tn, level), "precision": _rate(tp, tp + fp, level),
            "recall": _rate(tp, tp + fn, level), "f1": confusion_scores(c)["f1"],
            "far": _rate(fp, fp + tn, level), "frr": _rate(fn, tp + fn, level), **c}


def kfold(sw: Sweep, criteria=CRITERIA, level: float = LEVEL) -> dict:
    """Per fold and criterion: the threshold maximising it on the other folds, and the held-out fold's scores.

    Returns ``{criterion: {"folds": [...], "mean": {...}, "std": {...}, "pooled": {...}}}``; the pooled
    entry sums the held-out confusion counts of every fold (each pair is held out once).
    """
    if sw.n_folds < 2:
        raise FaceauditError("k-fold evaluation needs at least two folds")
    rows = {which: [] for which in criteria}
    pooled = {which: {"tp": 0, "fp": 0, "fn": 0, "tn": 0} for which in criteria}
    for fold in range(sw.n_folds):
        best = best_indices(sw, fold, criteria)
        for which in criteria:
            index = best[which]
            train = confusion_scores(counts_at(sw, index, fold))
            held = counts_at(sw, index, fold, held_out=True)
            rows[which].append({"fold": fold + 1, "threshold": float(sw.values[index]), "train_" + which: train[which],
                                **confusion_scores(held), **held})
            for key in pooled[which]:
                pooled[which][key] += held[key]
    out = {}
    for which in criteria:
        table = {key: np.array([row[key] for row in rows[which]]) for key in ("threshold", *SCORE_KEYS)}
        out[which] = {"criterion": which, "folds": rows[which],
                      "mean": {key: float(values.mean()) for key, values in table.items()},
                      "std": {key: float(values.std()) for key, values in table.items()},
                      "pooled": with_intervals(pooled[which], level)}
    return out


def all_pairs_best(sw: Sweep, which: str, level: float = LEVEL) -> dict:
    """The threshold maximising ``which`` on all pairs and the (in-sample, so optimistic) scores there."""
    index = best_indices(sw, None, (which,))[which]
    return {"threshold": float(sw.values[index]), **with_intervals(counts_at(sw, index), level)}


def roc(sw: Sweep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, false matches, false non-matches) at every unique score, ascending: the counts of
    :func:`faceaudit.evaluate.metrics.roc_counts`."""
    return sw.values, sw.impostor.sum() - sw.impostor_below, sw.genuine_below


def roc_auc(sw: Sweep) -> float:
    """Area under the ROC with its (0, 0) end, as scikit-learn's ``roc_auc_score`` (ties count half)."""
    _, fm, fnm = roc(sw)
    fpr = np.concatenate([[0.0], fm[::-1] / sw.impostor.sum()])
    tpr = np.concatenate([[0.0], 1 - fnm[::-1] / sw.genuine.sum()])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tar_at_far(sw: Sweep, targets=FAR_TARGETS, rule: str = "nearest", level: float = LEVEL) -> list[dict]:
    """TAR at each FAR target under ``rule`` (module docstring), with counts and Clopper-Pearson intervals.

    A target below ``1 / non-mated pairs`` is reported with ``reachable: False`` and the reason.
    """
    if rule not in RULES:
        raise FaceauditError(f"unknown operating-point rule {rule!r}; use {' or '.join(RULES)}")
    thresholds, fm, fnm = roc(sw)
    n_g, n_i = int(sw.genuine.sum()), int(sw.impostor.sum())
    far = fm / n_i  # falls along the ascending thresholds
    out = []
    for target in targets:
        entry = {"far_target": float(target), "rule": rule}
        if n_i * target < 1:
            entry.update(reachable=False, reason=f"needs at least {int(np.ceil(1 / target)):,} non-mated pairs; "
                                                 f"{n_i:,} were compared")
            out.append(entry)
            continue
        if rule == "nearest":
            index = nearest_rate_index(far, target)
        else:  # at-most: the first index with FAR <= target
            at_most = int(np.searchsorted(-far, -target))
            index = at_most if at_most < far.size else None
        if index is None:  # even the highest score is a false match too often: accept nothing
            threshold, false_matches, false_non_matches = float(np.nextafter(thresholds[-1], np.inf)), 0, n_g
        else:
            threshold, false_matches, false_non_matches = float(thresholds[index]), int(fm[index]), int(fnm[index])
        tar = _rate(n_g - false_non_matches, n_g, level)
        entry.update(reachable=True, threshold=threshold, tar=tar["value"], tar_ci=tar["ci"],
                     far=false_matches / n_i, far_ci=list(clopper_pearson(false_matches, n_i, level)),
                     true_matches=tar["count"], false_matches=false_matches, n_mated=n_g, n_non_mated=n_i)
        out.append(entry)
    return out


def at_threshold(scores, mated, threshold: float, level: float = LEVEL) -> dict:
    """Accuracy, FAR, FRR, precision, recall and F1 when accepting ``score >= threshold``."""
    scores = np.asarray(scores, dtype=np.float64)
    mated = np.asarray(mated, dtype=bool)
    accept = scores >= threshold
    tp = int(np.count_nonzero(accept & mated))
    fp = int(np.count_nonzero(accept & ~mated))
    n_g = int(mated.sum())
    counts = {"tp": tp, "fp": fp, "fn": n_g - tp, "tn": int(mated.size - n_g - fp)}
    return {"threshold": float(threshold), **with_intervals(counts, level)}


def evaluate(scores, mated, folds, n_folds: int | None = None, *, rule: str = "nearest",
             targets=FAR_TARGETS, threshold: float | None = None, level: float = LEVEL,
             sw: Sweep | None = None) -> dict:
    """Every verification number of one set of scored pairs (bootstrap CIs are
    :func:`faceaudit.evaluate.metrics.bootstrap_ci`'s job). ``sw``: their :func:`sweep`, when made already."""
    sw = sw or sweep(scores, mated, folds, n_folds)
    out = {"rule": rule, "level": level, "n_pairs": int(np.size(scores)), "n_mated": int(sw.genuine.sum()),
           "n_non_mated": int(sw.impostor.sum()), "n_folds": sw.n_folds,
           **kfold(sw, CRITERIA, level),
           "all_pairs": {"best_accuracy": all_pairs_best(sw, "accuracy", level),
                         "best_f1": all_pairs_best(sw, "f1", level)},
           "tar_at_far": tar_at_far(sw, targets, rule, level), "roc_auc": roc_auc(sw)}
    if threshold is not None:
        out["fixed_threshold"] = at_threshold(scores, mated, threshold, level)
    return out
