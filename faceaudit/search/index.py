"""One interface over every search backend: ``--index exact|lsh|faiss-flat|faiss-ivf|faiss-hnsw``.

:func:`search_index` gives each query's k nearest references as
:class:`~faceaudit.search.exact.Neighbours` (exact scores, best first, ties: lower index) whatever
the backend. A sharded reference set (:class:`faceaudit.io.shards.RowArray`) is searched one shard
at a time, each shard with its own index, and the per-shard lists are merged: the layout of
FAISS's ``IndexShards``, in one process. Only one shard's index is in memory at a time.
:func:`best_match_index` and :func:`top_pairs_index` answer leakage's and closest's questions
with any backend.
"""
from __future__ import annotations

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.search.backend import Index, IndexOptions, check_queries, merge_neighbours
from faceaudit.search.engine import reference_parts
from faceaudit.search.exact import BestMatches, Neighbours, TopPairs, top_k
from faceaudit.search.faiss_backend import FaissFlat, FaissHNSW, FaissIVF
from faceaudit.search.lsh import LSHIndex


class ExactIndex(Index):
    """Exhaustive exact search (:func:`~faceaudit.search.exact.top_k`): no index to build."""

    kind = "exact"

    def search(self, queries: np.ndarray, k: int) -> Neighbours:
        o = self.options
        found = top_k(queries, self.references, min(int(k), len(self.references)), device=o.device,
                      precision=o.precision, memory_budget_bytes=o.memory_budget_bytes, progress=o.progress)
        pad = int(k) - found.scores.shape[1]
        if pad:
            n = len(found.scores)
            found = Neighbours(np.hstack([found.scores, np.full((n, pad), -np.inf, np.float32)]),
                               np.hstack([found.indices, np.full((n, pad), -1, np.int64)]))
        return found


BACKENDS: dict[str, type[Index]] = {cls.kind: cls for cls in (ExactIndex, LSHIndex, FaissFlat, FaissIVF, FaissHNSW)}
INDEX_KINDS = tuple(BACKENDS)


def backend(kind: str) -> type[Index]:
    if kind not in BACKENDS:
        raise FaceauditError(f"unknown index {kind!r}: use {', '.join(INDEX_KINDS)}")
    return BACKENDS[kind]


def build_index(kind: str, references: np.ndarray, options: IndexOptions | None = None) -> Index:
    """The ``kind`` index of one in-memory (or memory-mapped) reference array."""
    options = options or IndexOptions()
    cls = backend(kind)
    return cls(references, options, cls.prepare(references, options))


def search_index(kind: str, queries, references, k: int, options: IndexOptions | None = None) -> Neighbours:
    """The ``k`` nearest references of every query with backend ``kind``, shard by shard."""
    options = options or IndexOptions()
    cls = backend(kind)
    k = int(k)
    if k <= 0:
        raise FaceauditError(f"search: k must be > 0, got {k}")
    if len(references) == 0:
        raise FaceauditError("search: the reference set is empty")
    q = check_queries(queries, references.shape[1])
    shared = cls.prepare(references, options)
    result = None
    for offset, part in reference_parts(references):
        found = cls(part, options, shared).search(q, k)
        found.indices[found.indices >= 0] += offset
        result = found if result is None else merge_neighbours(result, found, k)
    return result


def best_match_index(kind: str, queries, references, options: IndexOptions | None = None) -> BestMatches:
    """Each query's best reference found by backend ``kind`` (exact score; -inf, -1 if none found)."""
    found = search_index(kind, queries, references, 1, options)
    return BestMatches(found.scores[:, 0].copy(), found.indices[:, 0].copy())


def top_pairs_index(kind: str, queries, references, k: int, *, positive_only: bool = False,
                    options: IndexOptions | None = None) -> TopPairs:
    """The ``k`` best (query, reference) pairs among every query's ``k`` nearest found by ``kind``
    (the global top-K lies within the per-query top-K lists), ordered as
    :func:`~faceaudit.search.exact.top_pairs`: score, then query, then reference index."""
    found = search_index(kind, queries, references, k, options)
    rows, cols = np.nonzero(found.indices >= 0)
    scores, refs = found.scores[rows, cols], found.indices[rows, cols]
    if positive_only:
        keep = scores > 0
        rows, scores, refs = rows[keep], scores[keep], refs[keep]
    order = np.lexsort((refs, rows, -scores.astype(np.float64)))[:int(k)]
    return TopPairs(scores[order], rows[order].astype(np.int64), refs[order])
