"""Exact nearest-neighbour search of queries in a reference set, streamed in blocks.

Two questions, each answered by one blocked matrix product with a running merge,
never materialising the N x M similarity matrix:

- :func:`best_match`: for every query, the highest score over the reference set
  and its index;
- :func:`top_pairs`: the K highest (query, reference) pairs overall, optionally
  positive scores only (as the paper's ``find_closest.py``).

**What "exact" means.** The score of a pair is the dot product of the two
float32 vectors accumulated in float64 and rounded once to float32
(:func:`exact_scores` is the brute-force definition). It does not depend on the
device, the block sizes or the matmul precision. The fast product (float32, or
float16/bfloat16 on CUDA) only *selects candidates*: every pair whose fast score
lies within twice a proven error bound of the current winner is re-scored
exactly, so the winners and their values are those of the brute force.
Values agree with a plain float32 ``np.dot`` to about one ulp.

**Ties** (equal exact scores, e.g. duplicate vectors) are broken
deterministically: for a best match the lowest reference index wins; top-K
pairs are ordered by score descending, then query index, then reference index.

**Memory** is bounded by ``memory_budget_bytes``, which sets the block sizes of
the similarity tile and its mask; the query and reference matrices themselves
are held once on the device (and once more in the low precision, if used).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from faceaudit.errors import FaceauditError
from faceaudit.search.engine import Engine


@dataclass
class BestMatches:
    """``scores[i]`` is the best exact score of query ``i``, at reference ``indices[i]``."""

    scores: np.ndarray   # float32 (n,)
    indices: np.ndarray  # int64 (n,)


@dataclass
class TopPairs:
    """The K best pairs, best first (ties: query index, then reference index)."""

    scores: np.ndarray             # float32 (k,)
    query_indices: np.ndarray      # int64 (k,)
    reference_indices: np.ndarray  # int64 (k,)

    def __len__(self) -> int:
        return len(self.scores)


# ---------------------------------------------------------------- best match

def best_match(queries, references, *, device: str | torch.device = "auto", precision: str = "fp32",
               memory_budget_bytes: int | None = None, progress: bool = True,
               desc: str = "best match") -> BestMatches:
    """The exact highest score of each query over all references and its index (lowest index on ties)."""
    eng = Engine(queries, references, device, precision, memory_budget_bytes, progress, desc)
    dev = eng.device
    best = torch.full((eng.n,), -math.inf, dtype=torch.float32, device=dev)
    best_idx = torch.full((eng.n,), -1, dtype=torch.long, device=dev)
    err = eng.err
    max_pairs = max(eng.bq * eng.br // 8, 1 << 12)
    big = torch.iinfo(torch.long).max

    def absorb(q0, q1, r0, rows, cols):
        """Re-score candidate pairs exactly and merge: higher score wins, then lower reference index."""
        ri = cols + r0
        scores = eng.exact(rows + q0, ri)
        top = torch.full((q1 - q0,), -math.inf, dtype=torch.float32, device=dev)
        top.scatter_reduce_(0, rows, scores, reduce="amax")
        at_top = scores == top[rows]
        low = torch.full((q1 - q0,), big, dtype=torch.long, device=dev)
        low.scatter_reduce_(0, rows[at_top], ri[at_top], reduce="amin")
        cur, cur_idx = best[q0:q1], best_idx[q0:q1]
        better = (low != big) & ((top > cur) | ((top == cur) & (low < cur_idx)))
        best[q0:q1] = torch.where(better, top, cur)
        best_idx[q0:q1] = torch.where(better, low, cur_idx)

    def scan(start, stop):
        for q0, q1, r0, r1 in eng.blocks(start, stop):
            tile = eng.tile(q0, q1, r0, r1)
            # one pass over the tile: a row can beat (or tie) its winner only if its maximum is within the bound,
            # and only its entries within twice the bound of that maximum can; after the first tiles that is
            # rare, and only those rows are scanned (usually finding just their maximum)
            row_max = tile.amax(dim=1).float()
            live = row_max >= best[q0:q1] - err
            if not bool(live.any()):
                continue
            thr = torch.maximum(best[q0:q1] - err, row_max - 2 * err)
            rows = None if bool(live.all()) else torch.nonzero(live).squeeze(1)
            for cand_rows, cols in eng.scan_rows(tile, rows, thr, max_pairs):
                absorb(q0, q1, r0, cand_rows, cols)

    eng.run(scan)
    return BestMatches(best.cpu().numpy(), best_idx.cpu().numpy())


# ---------------------------------------------------------------- global top-K

def _merge_top(state, scores, qi, ri, k):
    """Keep the k best of state + new by (score desc, query asc, reference asc)."""
    s = torch.cat([state[0], scores])
    q = torch.cat([state[1], qi])
    r = torch.cat([state[2], ri])
    order = torch.argsort(r, stable=True)
    order = order[torch.argsort(q[order], stable=True)]
    order = order[torch.argsort(-s[order].double(), stable=True)]
    order = order[:k]
    return s[order], q[order], r[order]


def top_pairs(queries, references, k: int, *, positive_only: bool = False, device: str | torch.device = "auto",
              precision: str = "fp32", memory_budget_bytes: int | None = None, progress: bool = True,
              desc: str = "top pairs") -> TopPairs:
    """The ``k`` highest-scoring (query, reference) pairs, exact, best first.

    With ``positive_only`` only pairs with a score > 0 count (fewer than ``k`` may remain),
    as in the paper's ``find_closest.py``.
    """
    if int(k) <= 0:
        raise FaceauditError(f"top-K: K must be > 0, got {k}")
    k = int(k)
    eng = Engine(queries, references, device, precision, memory_budget_bytes, progress, desc)
    dev = eng.device
    err = eng.err
    empty_f = torch.empty(0, dtype=torch.float32, device=dev)
    empty_l = torch.empty(0, dtype=torch.long, device=dev)
    max_pairs = max(eng.bq * eng.br // 8, 1 << 12, 4 * k)
    floor = -math.inf if not positive_only else -err

    def scan(start, stop):  # each worker keeps its own top k; they are merged below
        state = (empty_f, empty_l, empty_l)
        for q0, q1, r0, r1 in eng.blocks(start, stop):
            tile = eng.tile(q0, q1, r0, r1)
            row_max = tile.amax(dim=1).float()
            kth = state[0][-1].item() if len(state[0]) == k else -math.inf
            bound = max(kth - err, floor)
            if row_max.numel() >= k:  # k entries of this tile are >= the k-th row maximum
                bound = max(bound, torch.topk(row_max, k).values[-1].item() - 2 * err)
            thr = torch.full_like(row_max, bound)
            for rows, cols in eng.scan_rows(tile, torch.nonzero(row_max >= thr).squeeze(1), thr, max_pairs):
                qi, ri = rows + q0, cols + r0
                scores = eng.exact(qi, ri)
                if positive_only:
                    keep = scores > 0
                    scores, qi, ri = scores[keep], qi[keep], ri[keep]
                state = _merge_top(state, scores, qi, ri, k)
        return state

    state = (empty_f, empty_l, empty_l)
    for found in eng.run(scan):
        state = _merge_top(state, *found, k)
    s, q, r = state
    return TopPairs(s.cpu().numpy(), q.cpu().numpy(), r.cpu().numpy())


# ---------------------------------------------------------------- per-query top-K (k nearest neighbours)

@dataclass
class Neighbours:
    """Row ``i``: the ``k`` references most similar to query ``i``, best first (ties: lower index)."""

    scores: np.ndarray   # float32 (n, k)
    indices: np.ndarray  # int64 (n, k)


def _order_keys(scores: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """int64 keys that sort as (score descending, index ascending): the float32 score's bits made
    monotonic in the high half, the index (< 2**32) in the low half."""
    bits = scores.contiguous().view(torch.int32).long()
    monotonic = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)  # the order of the floats, as integers
    return ((-1 - monotonic) << 32) | indices  # -1 - monotonic fits 32 signed bits: no overflow


def _merge_rows(best_s, best_i, rows, scores, cols, k):
    """Merge candidates (rows ascending, scores, cols) into each row's sorted top-k state, in place.

    Each row's state and its candidates go side by side in one padded row; the k smallest order
    keys of each row (:func:`_order_keys`) are its new state.
    """
    n, dev = best_s.shape[0], best_s.device
    counts = torch.bincount(rows, minlength=n)
    width = k + int(counts.max())
    pad = 2 ** 32 - 1  # after every real index
    dense_s = torch.full((n, width), -math.inf, dtype=torch.float32, device=dev)
    dense_i = torch.full((n, width), pad, dtype=torch.long, device=dev)
    dense_s[:, :k], dense_i[:, :k] = best_s, torch.where(best_i >= 0, best_i, pad)
    position = torch.arange(len(rows), device=dev) - (torch.cumsum(counts, 0) - counts)[rows]
    dense_s[rows, k + position], dense_i[rows, k + position] = scores, cols
    keep = torch.topk(_order_keys(dense_s, dense_i), k, dim=1, largest=False, sorted=True).indices
    best_s.copy_(torch.gather(dense_s, 1, keep))
    best_i.copy_(torch.where(best_s > -math.inf, torch.gather(dense_i, 1, keep), -1))


def top_k(queries, references, k: int, *, device: str | torch.device = "auto", precision: str = "fp32",
          memory_budget_bytes: int | None = None, progress: bool = True, desc: str = "top-k") -> Neighbours:
    """The ``k`` exact best references of every query (scores descending, ties: lower index first).

    The k-nearest-neighbour search behind identification and clustering: one blocked pass, a
    running sorted top-k per query, candidates re-scored exactly as in :func:`best_match`.
    """
    k = int(k)
    if k <= 0:
        raise FaceauditError(f"top-k: k must be > 0, got {k}")
    eng = Engine(queries, references, device, precision, memory_budget_bytes, progress, desc)
    if k > eng.m:
        raise FaceauditError(f"top-k: k = {k} is larger than the reference set ({eng.m} vectors)")
    dev, err = eng.device, eng.err
    best_s = torch.full((eng.n, k), -math.inf, dtype=torch.float32, device=dev)
    best_i = torch.full((eng.n, k), -1, dtype=torch.long, device=dev)
    max_pairs = max(eng.bq * eng.br // 8, 1 << 12, 4 * k * eng.bq)

    def scan(start, stop):
        for q0, q1, r0, r1 in eng.blocks(start, stop):
            tile = eng.tile(q0, q1, r0, r1)
            kth_best = best_s[q0:q1, -1]
            # one pass over the tile: only rows whose maximum reaches their k-th best so far can change
            live = torch.nonzero(tile.amax(dim=1).float() >= kth_best - err).squeeze(1)
            if live.numel() == 0:
                continue
            sub = tile.index_select(0, live)
            # an entry can enter the top k only if within the bound of the k-th best so far; rows not yet
            # holding k entries use this tile's k-th best instead (else every entry would be a candidate)
            thr = kth_best[live] - err
            fresh = torch.nonzero(thr == -math.inf).squeeze(1)
            if fresh.numel():
                kth_tile = torch.topk(sub.index_select(0, fresh), min(k, r1 - r0), dim=1).values[:, -1].float()
                thr[fresh] = kth_tile - 2 * err
            live_s, live_i = best_s[q0 + live], best_i[q0 + live]
            for rows, cols in eng.scan_rows(sub, None, thr, max_pairs):
                scores = eng.exact(live[rows] + q0, cols + r0)
                _merge_rows(live_s, live_i, rows, scores, cols + r0, k)
            best_s[q0 + live], best_i[q0 + live] = live_s, live_i

    eng.run(scan)
    return Neighbours(best_s.cpu().numpy(), best_i.cpu().numpy())
