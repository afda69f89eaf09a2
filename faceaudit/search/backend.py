"""What every search backend shares: its options, the interface (``search(queries, k)`` ->
:class:`~faceaudit.search.exact.Neighbours`), exact re-scoring of candidate lists, and the merge
of lists found in different shards.

Whatever a backend uses to find candidates (LSH buckets, FAISS's float32 or compressed
distances), the scores it returns are exact (float64-accumulated dot products rounded once to
float32, as :func:`~faceaudit.search.engine.exact_scores`) and each row is ordered by score,
then by lower reference index; rows with fewer than k candidates are padded with score
``-inf`` and index ``-1``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.search.engine import exact_pair_scores
from faceaudit.search.exact import Neighbours

_RESCORE_PAIRS = 1 << 15  # pairs re-scored at a time: two 32k x D float64 gathers


@dataclass
class IndexOptions:
    """Settings of the search backends; each backend reads its own."""

    device: str = "auto"
    precision: str = "fp32"
    memory_budget_bytes: int | None = None
    progress: bool = True
    seed: int = 42
    lsh_bits: int = 16          # the challenge notebook's 16 random hyperplanes
    lsh_radius: int = 3         # ... and its multi-probe over buckets within Hamming distance 3
    lsh_tables: int = 1
    ivf_lists: int | None = None  # None: 4 * sqrt(references), at least 39 training rows per list
    ivf_probe: int = 32
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40  # FAISS's default
    hnsw_ef_search: int = 128


class Index:
    """A searchable reference matrix (one array, or one shard of a larger set).

    ``prepare`` runs once over the whole reference set (all shards) before any shard is indexed:
    what every shard must share, e.g. LSH hyperplanes or a trained IVF quantizer.
    """

    kind = "abstract"

    def __init__(self, references: np.ndarray, options: IndexOptions, shared=None):
        self.references = references
        self.options = options

    @classmethod
    def prepare(cls, references, options: IndexOptions):
        return None

    def search(self, queries: np.ndarray, k: int) -> Neighbours:
        raise NotImplementedError


def _order_rows(scores: np.ndarray, indices: np.ndarray, k: int) -> Neighbours:
    """Each row's entries by score descending, then index ascending, padding last; the first k."""
    big = np.iinfo(np.int64).max
    order = np.lexsort((np.where(indices >= 0, indices, big), -scores.astype(np.float64)), axis=-1)[:, :k]
    s = np.take_along_axis(scores, order, axis=1)
    i = np.take_along_axis(indices, order, axis=1)
    if s.shape[1] < k:  # fewer candidates than k in every row: pad
        pad = k - s.shape[1]
        s = np.hstack([s, np.full((len(s), pad), -np.inf, np.float32)])
        i = np.hstack([i, np.full((len(i), pad), -1, np.int64)])
    return Neighbours(s.astype(np.float32), i.astype(np.int64))


def rescore(queries: np.ndarray, references, candidates: np.ndarray, k: int) -> Neighbours:
    """Exact scores of candidate lists (row i: reference rows for query i, -1 for none), duplicates
    dropped, ordered as every backend's result, cut to ``k`` columns."""
    cand = np.array(candidates, dtype=np.int64, copy=True)
    if cand.ndim != 2 or len(cand) != len(queries):
        raise FaceauditError(f"candidate lists of shape {cand.shape} for {len(queries)} queries")
    cand.sort(axis=1)
    cand[:, 1:][cand[:, 1:] == cand[:, :-1]] = -1  # repeated candidates
    rows, cols = np.nonzero(cand >= 0)
    scores = np.full(cand.shape, -np.inf, dtype=np.float32)
    for s in range(0, len(rows), _RESCORE_PAIRS):
        r, c = rows[s:s + _RESCORE_PAIRS], cols[s:s + _RESCORE_PAIRS]
        scores[r, c] = exact_pair_scores(queries, references, r, cand[r, c])
    return _order_rows(scores, cand, k)


def merge_neighbours(a: Neighbours, b: Neighbours, k: int) -> Neighbours:
    """The k best of two lists of the same queries over disjoint references (indices already global)."""
    return _order_rows(np.hstack([a.scores, b.scores]), np.hstack([a.indices, b.indices]), k)


def check_queries(queries, dim: int) -> np.ndarray:
    q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
    if q.ndim != 2 or len(q) == 0:
        raise FaceauditError(f"search: queries must be a non-empty 2-D array, got shape {q.shape}")
    if q.shape[1] != dim:
        raise FaceauditError(f"search: query vectors have {q.shape[1]} dimensions but reference vectors have "
                             f"{dim}; they must come from the same model")
    return q
