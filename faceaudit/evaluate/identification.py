"""Identification (1:N) numbers: seeded gallery/probe splits, rank-k accuracy and the CMC curve,
open-set DIR at FPIR, and k-nearest-neighbour voting. All vectorised over probes.

Conventions (those of bob.measure):

- the score of a gallery identity for a probe is the highest score over its gallery images;
- the **rank** of a mated probe is 1 + the number of *other* gallery identities whose score is
  ``>=`` the mated identity's score: ties count against the probe (bob's ``cmc`` and
  ``recognition_rate`` count ``negatives >= max(positives)``);
- CMC(r) is the share of mated probes with rank <= r;
- open set: FPIR(t) is the share of non-mated probes (identity not in the gallery) whose best
  score is ``>= t``; the threshold for a target FPIR is bob's ``far_threshold`` on those best
  scores (the lowest score value whose FPIR is still <= the target; just above the highest one
  when even that is too many); DIR(t) is the share of mated probes with rank 1 and a mated
  score ``>= t``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.errors import FaceauditError

DEFAULT_FPIRS = (1e-1, 1e-2, 1e-3)
NOT_FOUND = np.iinfo(np.int64).max  # the rank of a mated identity a candidate list did not reach


@dataclass
class Split:
    """Row indices of one embedding set: gallery images, mated probes and non-mated (held-out) probes."""

    gallery: np.ndarray
    probes: np.ndarray
    held_out: np.ndarray
    held_out_identities: np.ndarray


def identity_codes(identities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique identities, code of each row)."""
    uniques, codes = np.unique(np.asarray(identities), return_inverse=True)
    return uniques, codes.astype(np.int64)


def split_by_identity(identities, per_identity: int = 1, held_out_fraction: float = 0.0,
                      seed: int = 42) -> Split:
    """Per identity, ``per_identity`` random images to the gallery and the rest to the probes.

    With ``held_out_fraction`` that share of identities (rounded, chosen at random) is left out
    of the gallery entirely: all their images are non-mated probes of the open-set evaluation.
    An identity with ``per_identity`` images or fewer has them all in the gallery and no probe.
    """
    if int(per_identity) <= 0:
        raise FaceauditError(f"gallery images per identity must be > 0, got {per_identity}")
    if not 0 <= held_out_fraction < 1:
        raise FaceauditError(f"the open-set fraction must be in [0, 1), got {held_out_fraction}")
    uniques, codes = identity_codes(identities)
    rng = np.random.default_rng(seed)
    n_held = int(round(held_out_fraction * len(uniques)))
    if held_out_fraction > 0 and not 0 < n_held < len(uniques):
        raise FaceauditError(f"an open-set fraction of {held_out_fraction} of {len(uniques)} identities holds out "
                             f"{n_held}; at least one identity must be held out and one kept")
    held = np.zeros(len(uniques), dtype=bool)
    held[rng.choice(len(uniques), n_held, replace=False)] = True
    order = np.lexsort((rng.random(len(codes)), codes))  # by identity, random within it
    first = np.searchsorted(codes[order], np.arange(len(uniques)))
    position = np.empty(len(codes), dtype=np.int64)
    position[order] = np.arange(len(codes)) - first[codes[order]]
    in_gallery = (position < per_identity) & ~held[codes]
    return Split(np.flatnonzero(in_gallery), np.flatnonzero(~in_gallery & ~held[codes]),
                 np.flatnonzero(held[codes]), uniques[held])


def split_images(n: int, gallery_fraction: float, seed: int = 42) -> Split:
    """The challenge notebook's split: scikit-learn's ``train_test_split`` of all images
    (``train_size=gallery_fraction, random_state=seed``), gallery = train, probes = test."""
    from sklearn.model_selection import train_test_split

    if not 0 < gallery_fraction < 1:
        raise FaceauditError(f"the gallery share of images must be in (0, 1), got {gallery_fraction}")
    if n < 2:
        raise FaceauditError(f"cannot split {n} image(s) into a gallery and probes")
    gallery, probes = train_test_split(np.arange(n), train_size=gallery_fraction, random_state=seed)
    return Split(np.sort(gallery), np.sort(probes), np.empty(0, np.int64), np.empty(0, str))


# ---------------------------------------------------------------- closed set

def cmc(ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """CMC(1..max_rank): the share of probes whose rank is <= r."""
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.size == 0:
        raise FaceauditError("no mated probes: the CMC needs probes whose identity is in the gallery")
    counts = np.bincount(np.minimum(ranks, max_rank + 1) - 1, minlength=max_rank + 1)[:max_rank]
    return np.cumsum(counts) / ranks.size


def ranks_from_candidates(labels: np.ndarray, scores: np.ndarray, mated: np.ndarray) -> np.ndarray:
    """Ranks from candidate lists (row i: gallery identity codes of probe i's nearest gallery images,
    best first, -1 padding) and each probe's mated code.

    The rank counts the distinct other identities whose best listed score is >= the mated one's
    (ties against the probe, as above); :data:`NOT_FOUND` when the mated identity is not listed.
    Exact for every rank up to ``(L - 1) // images_per_identity + 1`` of lists of length L.
    """
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n, length = labels.shape
    is_mated = labels == np.asarray(mated, dtype=np.int64)[:, None]
    found = is_mated.any(axis=1)
    mated_score = np.where(found, np.max(np.where(is_mated, scores, -np.inf), axis=1), np.inf)
    # first listed image of each identity in its row: lists are best first, so it carries the identity's score
    order = np.argsort(labels, axis=1, kind="stable")
    sorted_labels = np.take_along_axis(labels, order, axis=1)
    first_sorted = np.ones((n, length), dtype=bool)
    first_sorted[:, 1:] = sorted_labels[:, 1:] != sorted_labels[:, :-1]
    first = np.zeros((n, length), dtype=bool)
    np.put_along_axis(first, order, first_sorted, axis=1)
    above = first & ~is_mated & (labels >= 0) & (scores >= mated_score[:, None])
    return np.where(found, above.sum(axis=1) + 1, NOT_FOUND).astype(np.int64)


# ---------------------------------------------------------------- open set

def fpir_threshold(non_mated_best: np.ndarray, fpir: float) -> float:
    """bob's ``far_threshold`` on the non-mated probes' best scores: the lowest score value t with
    FPIR(t) = share(best >= t) <= ``fpir``; just above the highest score when none qualifies."""
    scores = np.sort(np.asarray(non_mated_best, dtype=np.float64))[::-1]
    if scores.size == 0:
        raise FaceauditError("no non-mated probes: open-set rates need probes whose identity is not in the gallery")
    values, first = np.unique(-scores, return_index=True)  # distinct scores, highest first
    values = -values
    accepted = np.append(first[1:], scores.size)  # probes at or above each distinct value
    ok = np.flatnonzero(accepted / scores.size <= fpir)
    if ok.size == 0:
        return float(np.nextafter(scores[0], np.inf))
    return float(values[ok[-1]])


def dir_at_fpir(mated_scores: np.ndarray, mated_ranks: np.ndarray, non_mated_best: np.ndarray,
                fpirs=DEFAULT_FPIRS, rank: int = 1) -> list[dict]:
    """For each target FPIR: the threshold, the FPIR it gives, and DIR = share of mated probes
    with rank <= ``rank`` and a mated score >= the threshold."""
    mated_scores = np.asarray(mated_scores, dtype=np.float64)
    mated_ranks = np.asarray(mated_ranks, dtype=np.int64)
    non_mated_best = np.asarray(non_mated_best, dtype=np.float64)
    if mated_scores.size == 0:
        raise FaceauditError("no mated probes: DIR needs probes whose identity is in the gallery")
    rows = []
    for target in fpirs:  # a handful of operating points, each one vectorised
        t = fpir_threshold(non_mated_best, target)
        rows.append({"fpir": float(target), "threshold": t,
                     "fpir_achieved": float(np.mean(non_mated_best >= t)),
                     "dir": float(np.mean((mated_ranks <= rank) & (mated_scores >= t))),
                     "non_mated_probes": int(non_mated_best.size), "mated_probes": int(mated_scores.size),
                     "resolvable": bool(target * non_mated_best.size >= 1)})
    return rows


# ---------------------------------------------------------------- k nearest neighbours

VOTES = ("majority", "weighted")


def knn_vote(labels: np.ndarray, scores: np.ndarray, vote: str = "majority") -> np.ndarray:
    """The class each row's k neighbours vote for, as scikit-learn's ``KNeighborsClassifier``
    with ``metric="cosine"``: ``majority`` is ``weights="uniform"``, ``weighted`` is
    ``weights="distance"`` (1 / cosine distance; a neighbour at distance 0 outvotes all others).
    Ties go to the smallest class code (scikit-learn's ``argmax`` over sorted classes). Labels -1
    (a candidate list shorter than k) do not vote.
    """
    if vote not in VOTES:
        raise FaceauditError(f"unknown vote {vote!r}: use {' or '.join(VOTES)}")
    labels = np.asarray(labels, dtype=np.int64)
    n, k = labels.shape
    if vote == "majority":
        weights = np.ones((n, k))
    else:
        distance = np.maximum(1.0 - np.asarray(scores, dtype=np.float64), 0.0)
        exact = distance == 0
        with np.errstate(divide="ignore"):
            weights = np.where(exact.any(axis=1, keepdims=True), exact.astype(np.float64), 1.0 / distance)
    weights = np.where(labels >= 0, weights, 0.0)
    labels = np.maximum(labels, 0)
    rows = np.repeat(np.arange(n), k)
    n_classes = int(labels.max()) + 1
    keys, inverse = np.unique(rows * n_classes + labels.ravel(), return_inverse=True)
    totals = np.bincount(inverse.ravel(), weights=weights.ravel())
    key_rows, key_labels = keys // n_classes, keys % n_classes
    best = np.lexsort((key_labels, -totals, key_rows))  # per row: highest total, then smallest class
    starts = np.searchsorted(key_rows[best], np.arange(n))
    return key_labels[best[starts]]
