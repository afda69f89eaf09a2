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
from faceaudit.search.engine import Engine, strict_matmul


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

    with torch.inference_mode(), strict_matmul():
        for q0, q1, r0, r1 in eng.blocks():
            tile = eng.tile(q0, q1, r0, r1)
            fast_max, fast_arg = tile.max(dim=1)
            row_max = fast_max.float()
            # an entry can beat (or tie) the winner only if its fast score is within the bounds
            thr = torch.maximum(best[q0:q1] - err, row_max - 2 * err)
            live = row_max >= thr
            # usually the row maximum is the only candidate: look at the runner-up to be sure
            ar = torch.arange(q1 - q0, device=dev)
            tile[ar, fast_arg] = -math.inf
            second = tile.amax(dim=1).float()
            multi = live & (second >= thr)
            single = torch.nonzero(live & ~multi).squeeze(1)
            if single.numel():
                absorb(q0, q1, r0, single, fast_arg[single])
            if bool(multi.any()):
                tile[ar, fast_arg] = fast_max
                for rows, cols in eng.scan_rows(tile, torch.nonzero(multi).squeeze(1), thr, max_pairs):
                    absorb(q0, q1, r0, rows, cols)
            del tile
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
    state = (empty_f, empty_l, empty_l)
    max_pairs = max(eng.bq * eng.br // 8, 1 << 12, 4 * k)
    floor = -math.inf if not positive_only else -err
    with torch.inference_mode(), strict_matmul():
        for q0, q1, r0, r1 in eng.blocks():
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
            del tile
    s, q, r = state
    return TopPairs(s.cpu().numpy(), q.cpu().numpy(), r.cpu().numpy())


# ---------------------------------------------------------------- per-query top-K (k nearest neighbours)

@dataclass
class Neighbours:
    """Row ``i``: the ``k`` references most similar to query ``i``, best first (ties: lower index)."""

    scores: np.ndarray   # float32 (n, k)
    indices: np.ndarray  # int64 (n, k)


def _merge_rows(best_s, best_i, rows, scores, cols, k):
    """Merge candidates (rows, scores, cols) into each row's sorted top-k state, in place."""
    n = best_s.shape[0]
    all_rows = torch.cat([torch.arange(n, device=rows.device).repeat_interleave(k), rows])
    all_s = torch.cat([best_s.reshape(-1), scores])
    all_i = torch.cat([best_i.reshape(-1), cols])
    order = torch.argsort(all_i, stable=True)  # then score desc, then row: three stable passes
    order = order[torch.argsort(-all_s[order].double(), stable=True)]
    order = order[torch.argsort(all_rows[order], stable=True)]
    starts = torch.searchsorted(all_rows[order], torch.arange(n, device=rows.device))
    take = (starts[:, None] + torch.arange(k, device=rows.device)).reshape(-1)  # every row has >= k entries
    best_s.copy_(all_s[order[take]].reshape(n, k))
    best_i.copy_(all_i[order[take]].reshape(n, k))


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
    with torch.inference_mode(), strict_matmul():
        for q0, q1, r0, r1 in eng.blocks():
            tile = eng.tile(q0, q1, r0, r1)
            kth_tile = torch.topk(tile, min(k, r1 - r0), dim=1).values[:, -1].float()
            # an entry can enter the top k only if within the bounds of the k-th best so far and in this tile
            thr = torch.maximum(best_s[q0:q1, -1] - err, kth_tile - 2 * err)
            for rows, cols in eng.scan_rows(tile, None, thr, max_pairs):
                scores = eng.exact(rows + q0, cols + r0)
                _merge_rows(best_s[q0:q1], best_i[q0:q1], rows, scores, cols + r0, k)
            del tile
    return Neighbours(best_s.cpu().numpy(), best_i.cpu().numpy())
