"""Cross-validation folds of verification pairs: identity-disjoint folds with sampled pairs, and folds
cut in file order for pair lists that bring none.

- :func:`sample_fold_pairs`: identities are shuffled (seeded) and dealt to ``k`` folds in turn; each
  fold's mated and non-mated pairs are drawn among its own images only (:func:`sample_pairs`), so no
  identity appears in two folds and a threshold chosen on the other folds never saw its people;
- :func:`ordered_folds`: the i-th of ``m`` pairs of a kind goes to fold ``floor(i * k / m)``, so each
  fold gets a contiguous, class-balanced slice of the file (InsightFace's unshuffled k-fold on a list
  ordered as LFW's).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from faceaudit import checks
from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.evaluate.pairs import DEFAULT_SEED, identity_codes, sample_pairs

DEFAULT_FOLDS = 10


@dataclass
class FoldPairs:
    """Row pairs ``(m, 2)`` with their label (mated) and fold, and what was asked and found."""

    pairs: np.ndarray
    mated: np.ndarray
    folds: np.ndarray
    n_folds: int
    seed: int
    short_folds: list[int]   # folds that held fewer pairs of a kind than asked for (all were used)


def check_folds(n_folds: int) -> None:
    if int(n_folds) < 2:
        raise FaceauditError(f"--folds must be at least 2, got {n_folds}")


def identity_folds(identities, n_folds: int, seed: int = DEFAULT_SEED, source: str = "embeddings") -> np.ndarray:
    """The fold (0..k-1) of every row: identities shuffled with ``seed`` and dealt out in turn.

    Each fold needs two identities (for non-mated pairs) and one identity with two images (for mated
    pairs); an error says so when the identities cannot fill ``n_folds`` folds.
    """
    check_folds(n_folds)
    checks.seed(seed)
    codes = identity_codes(identities)
    uniques, codes = np.unique(codes, return_inverse=True)
    if uniques.size < 2 * n_folds:
        raise FaceauditError(f"{source}: {uniques.size} identities cannot form {n_folds} identity-disjoint folds "
                             f"(each needs at least 2 identities); use --folds {max(2, uniques.size // 2)} "
                             f"or fewer" if uniques.size >= 4 else
                             f"{source}: {uniques.size} identities cannot form identity-disjoint folds "
                             f"(at least 4 are needed for 2 folds)")
    order = np.random.default_rng(seed).permutation(uniques.size)
    fold_of_identity = np.empty(uniques.size, dtype=np.int64)
    fold_of_identity[order] = np.arange(uniques.size) % n_folds
    folds = fold_of_identity[codes]
    images = np.bincount(codes, minlength=uniques.size)
    can_mate = np.bincount(fold_of_identity, weights=images >= 2, minlength=n_folds)
    if (can_mate == 0).any():
        raise FaceauditError(f"{source}: fold {int(np.argmin(can_mate)) + 1} of {n_folds} has no identity with two "
                             f"images, so no mated pairs; use fewer --folds")
    return folds


def sample_fold_pairs(identities, n: int, n_folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED,
                      source: str = "embeddings") -> FoldPairs:
    """About ``n`` mated and ``n`` non-mated pairs in ``n_folds`` identity-disjoint folds.

    Fold ``f`` gets ``n // k`` pairs of each kind (the first ``n % k`` folds one more), drawn uniformly
    without replacement among its own rows; a fold with fewer pairs of a kind uses all of them and is
    listed in ``short_folds`` (one warning for all).
    """
    if int(n) <= 0:
        raise FaceauditError(f"--sample must be > 0, got {n}")
    codes = identity_codes(identities)
    folds = identity_folds(codes, n_folds, seed, source)  # integer codes are taken as they are
    fold_seeds = np.random.default_rng(seed).integers(0, 2 ** 63 - 1, size=n_folds)
    parts, labels, fold_of_pair, short = [], [], [], []
    for fold in range(n_folds):
        rows = np.flatnonzero(folds == fold)
        want = n // n_folds + (fold < n % n_folds)
        if want == 0:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FaceauditWarning)
            sample = sample_pairs(codes[rows], want, int(fold_seeds[fold]))
        if caught:
            short.append(fold)
        for kind, mated in ((sample.mated, True), (sample.non_mated, False)):
            parts.append(rows[kind])
            labels.append(np.full(len(kind), mated))
            fold_of_pair.append(np.full(len(kind), fold, dtype=np.int64))
    if short:
        warnings.warn(f"{source}: fold(s) {', '.join(str(f + 1) for f in short)} hold fewer pairs of a kind than "
                      f"asked for ({n // n_folds} per fold); all of theirs are used", FaceauditWarning, stacklevel=2)
    return FoldPairs(np.concatenate(parts), np.concatenate(labels), np.concatenate(fold_of_pair), n_folds,
                     seed, short)


def ordered_folds(mated, n_folds: int) -> np.ndarray:
    """Folds cut in order, per kind: the i-th of the ``m`` pairs of a kind goes to ``floor(i * k / m)``."""
    check_folds(n_folds)
    mated = np.asarray(mated, dtype=bool)
    folds = np.empty(mated.size, dtype=np.int64)
    for kind in (mated, ~mated):
        m = int(kind.sum())
        if m < n_folds:
            raise FaceauditError(f"{m} {'mated' if kind is mated else 'non-mated'} pairs cannot fill {n_folds} "
                                 f"folds; use fewer --folds")
        folds[kind] = np.arange(m) * n_folds // m
    return folds


def check_fold_classes(mated, folds, n_folds: int, source: str) -> None:
    """Every fold must hold both kinds of pair (an error naming the first fold that does not)."""
    mated = np.asarray(mated, dtype=bool)
    for kind, name in ((mated, "mated"), (~mated, "non-mated")):
        counts = np.bincount(folds[kind], minlength=n_folds)
        if (counts == 0).any():
            raise FaceauditError(f"{source}: fold {int(np.argmin(counts)) + 1} of {n_folds} holds no {name} pairs; "
                                 f"every fold needs both kinds")
