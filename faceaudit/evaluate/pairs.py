"""Mated and non-mated pair sampling in O(N + n) memory, uniform and without replacement.

Rows are grouped by identity (a stable argsort of the identity codes). Every unordered
pair of rows is ranked without listing any pair:

- mated: the row at sorted position ``p`` (identity ``k``, which ends at ``end_k``) pairs
  with the ``end_k - p - 1`` positions after it in its identity;
- non-mated: it pairs with the ``N - end_k`` positions after its identity.

A per-position count and its running total (O(N)) map a rank ``r`` in ``[0, P)`` to its
position by ``searchsorted`` and to its partner by subtraction, so drawing ``n`` distinct
ranks uniformly (rejection with ``np.unique`` top-ups, or the complement when ``n > P/2``)
gives ``n`` pairs drawn uniformly without replacement from all ``P`` pairs of that kind.
The original script built every mated pair as a Python dict.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from faceaudit import checks
from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.evaluate.metrics import distinct

DEFAULT_SEED = 42
#: exhaustive mode refuses to hold more pair indices than this many bytes (16 per pair; the
#: scores add 8 per pair and the metrics a few times that)
EXHAUSTIVE_MAX_BYTES = 2 << 30
_EXHAUSTIVE_CHUNK = 1 << 22


@dataclass
class PairSample:
    """Row-index pairs ``(n, 2)`` int64 of each kind, and how many pairs of each kind exist."""

    mated: np.ndarray
    non_mated: np.ndarray
    total_mated: int
    total_non_mated: int
    seed: int | None


class _PairSpace:
    """All pairs of one kind, ranked: rank -> (row, row) for any int64 array of ranks.

    Holds only the exclusive running total of partners per sorted position (8 bytes a row);
    ``order`` and ``ends`` are shared between the two kinds.
    """

    def __init__(self, order: np.ndarray, ends: np.ndarray, mated: bool):
        self.order, self.ends, self.mated = order, ends, mated
        n_rows = order.size
        positions = np.arange(n_rows, dtype=np.int64)
        counts = ends - positions - 1 if mated else n_rows - ends
        del positions
        self.offsets = np.cumsum(counts)
        self.total = int(self.offsets[-1]) if n_rows else 0
        self.offsets -= counts  # exclusive: rank of each position's first pair

    def unrank(self, ranks: np.ndarray) -> np.ndarray:
        ranks = np.asarray(ranks, dtype=np.int64)
        # the last position whose first rank is <= r (positions without partners share offsets)
        position = np.searchsorted(self.offsets, ranks, side="right") - 1
        within = ranks - self.offsets[position]
        out = np.empty((ranks.size, 2), dtype=np.int64)
        out[:, 0] = self.order[position]
        if self.mated:
            position += 1
        else:
            position = self.ends[position]
        position += within
        out[:, 1] = self.order[position]
        return out


def identity_codes(identities) -> np.ndarray:
    """An integer code per row, equal for rows of the same identity.

    Embedding files list each identity's rows together; then the codes follow from where
    the label changes (one vectorised comparison, no sort of a million strings). Otherwise
    ``np.unique`` gives them. Integer input is returned as it is.
    """
    ids = np.asarray(identities)
    if ids.ndim != 1:
        raise FaceauditError("identities must be a 1-D array")
    if ids.dtype.kind in "iu" or ids.size == 0:
        return ids
    change = np.empty(ids.size, dtype=bool)
    change[0] = True
    np.not_equal(ids[1:], ids[:-1], out=change[1:])
    run_labels = ids[change]
    if np.unique(run_labels).size == run_labels.size:  # every identity is one contiguous run
        return np.cumsum(change, dtype=np.int64) - 1
    return np.unique(ids, return_inverse=True)[1].astype(np.int64)


def _spaces(identities) -> tuple[_PairSpace, _PairSpace]:
    codes = identity_codes(identities)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    n = codes.size
    # end (exclusive) of each sorted position's identity block
    block_ends = np.append(np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1, n).astype(np.int64)
    del sorted_codes
    ends = np.repeat(block_ends, np.diff(block_ends, prepend=0))
    return _PairSpace(order, ends, mated=True), _PairSpace(order, ends, mated=False)


def sample_distinct(rng: np.random.Generator, total: int, n: int) -> np.ndarray:
    """``n`` distinct integers drawn uniformly from ``[0, total)``, sorted ascending.

    Rejection: draw, keep the unique values, top up until there are enough, then drop a
    random surplus (the distinct values of i.i.d. uniform draws are a uniform random
    subset given their number, so the result is a uniform ``n``-subset). When ``n`` is
    more than half of ``total`` the ``total - n`` values left out are drawn instead.
    Memory O(n) (O(total) <= O(2n) in the complement case).
    """
    if not 0 <= n <= total:
        raise ValueError(f"cannot draw {n} distinct values from {total}")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if 2 * n > total:
        keep = np.ones(total, dtype=bool)
        keep[sample_distinct(rng, total, total - n)] = False
        return np.flatnonzero(keep).astype(np.int64)
    # m draws give about total * (1 - exp(-m / total)) distinct values; ask for a little more
    want = n + int(n * n / (2 * total)) + 16
    got = distinct(np.sort(rng.integers(0, total, size=want, dtype=np.int64)))
    while got.size < n:
        extra = (n - got.size) * 2 + 16
        got = distinct(np.sort(np.concatenate([got, rng.integers(0, total, size=extra, dtype=np.int64)])))
    if got.size > n:
        got = np.delete(got, rng.choice(got.size, size=got.size - n, replace=False))
    return got


def _take(space: _PairSpace, n: int | None, rng: np.random.Generator, kind: str) -> np.ndarray:
    """Pairs for sorted ranks (searchsorted is far faster on sorted needles), then shuffled."""
    if n is None:  # exhaustive, in chunks so the temporaries stay small
        out = np.empty((space.total, 2), dtype=np.int64)
        for start in range(0, space.total, _EXHAUSTIVE_CHUNK):
            stop = min(start + _EXHAUSTIVE_CHUNK, space.total)
            out[start:stop] = space.unrank(np.arange(start, stop, dtype=np.int64))
        return out
    if n > space.total:
        warnings.warn(f"only {space.total:,} {kind} pairs exist; using all of them instead of {n:,}",
                      FaceauditWarning, stacklevel=3)
        ranks = np.arange(space.total, dtype=np.int64)
    else:
        ranks = sample_distinct(rng, space.total, n)
    pairs = space.unrank(ranks)
    del ranks
    return pairs[rng.permutation(len(pairs))]


def sample_pairs(identities, n: int | None, seed: int | None = DEFAULT_SEED, *,
                 exhaustive: bool = False) -> PairSample:
    """``n`` mated and ``n`` non-mated row pairs, each uniform over its kind, without replacement.

    ``identities`` is one label (or integer code) per row. Mated pairs are drawn first,
    then non-mated, from ``numpy.random.default_rng(seed)``. If fewer pairs of a kind exist
    than asked for, all of them are used with a warning. ``exhaustive=True`` returns every
    pair of both kinds (an error if their indices would exceed :data:`EXHAUSTIVE_MAX_BYTES`).
    A single identity (no non-mated pairs) or no identity with two rows (no mated pairs)
    is an error.
    """
    identities = np.asarray(identities)
    if seed is not None:
        checks.seed(seed)
    if identities.size == 0:
        raise FaceauditError("no embeddings to pair")
    if not exhaustive:
        if n is None or int(n) <= 0:
            raise FaceauditError(f"the number of comparisons must be > 0, got {n}")
        n = int(n)
    mated, non_mated = _spaces(identities)
    if mated.total == 0:
        raise FaceauditError("no identity has two or more images, so there are no mated pairs")
    if non_mated.total == 0:
        raise FaceauditError("all embeddings belong to a single identity, so there are no non-mated pairs")
    if exhaustive:
        need = (mated.total + non_mated.total) * 16
        if need > EXHAUSTIVE_MAX_BYTES:
            raise FaceauditError(
                f"--exhaustive would hold {mated.total + non_mated.total:,} pairs ({need / 2**30:.1f} GiB of "
                f"indices, limit {EXHAUSTIVE_MAX_BYTES / 2**30:.0f} GiB); sample with --n-comparisons instead")
        n = None
    rng = np.random.default_rng(seed)
    return PairSample(_take(mated, n, rng, "mated"), _take(non_mated, n, rng, "non-mated"),
                      mated.total, non_mated.total, seed)


def count_pairs(identities) -> tuple[int, int]:
    """(mated pairs, non-mated pairs) that exist among these rows."""
    mated, non_mated = _spaces(np.asarray(identities))
    return mated.total, non_mated.total
