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

def _take_better(best, best_idx, rows, scores, ri) -> None:
    """Merge one exact candidate per row of ``rows`` (a slice or index tensor) into the running
    best: the higher score wins, then the lower reference index."""
    cur, cur_idx = best[rows], best_idx[rows]
    better = (scores > cur) | ((scores == cur) & (ri < cur_idx))
    best[rows] = torch.where(better, scores, cur)
    best_idx[rows] = torch.where(better, ri, cur_idx)


def _absorb(best, best_idx, qi, local, ri, scores) -> None:
    """Merge exact candidates (query ``qi[local]``, reference ``ri``, ``scores``) into the running best."""
    big = torch.iinfo(torch.long).max
    top = torch.full((len(qi),), -math.inf, dtype=torch.float32, device=scores.device)
    top.scatter_reduce_(0, local, scores, reduce="amax")
    at_top = scores == top[local]
    low = torch.full((len(qi),), big, dtype=torch.long, device=scores.device)
    low.scatter_reduce_(0, local[at_top], ri[at_top], reduce="amin")
    has = low != big
    _take_better(best, best_idx, qi[has], top[has], low[has])


def _rescan_flagged(eng: Engine, best, best_idx, q0: int, flags) -> None:
    """Scan the (rows, reference block) tiles flagged in the first pass, with the final best scores
    as thresholds: every entry that can beat or tie them is re-scored exactly."""
    rows, blocks = torch.nonzero(flags, as_tuple=True)  # the one host synchronisation of a query block
    if not len(rows):
        return
    max_pairs = max(eng.bq * eng.br // 8, 1 << 12)
    for block in torch.unique(blocks).tolist():
        r0, r1 = block * eng.br, min((block + 1) * eng.br, eng.m)
        flagged = rows[blocks == block] + q0
        for start in range(0, len(flagged), eng.bq):
            qi = flagged[start:start + eng.bq]
            tile = eng.q[qi] @ eng.r[r0:r1].T
            for local, cols in eng.scan_rows(tile, None, best[qi] - eng.err, max_pairs):
                _absorb(best, best_idx, qi, local, cols + r0, eng.exact(qi[local], cols + r0))
            del tile


#: where flagged rows are scanned after the whole block of queries (a GPU: no host synchronisation
#: per tile) rather than at once in the tile still in memory (a CPU, where waiting costs nothing)
DEFER_RESCAN = {"cuda": True, "cpu": False}


def _best_on_device(eng: Engine) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact best score and reference index of every query, as device tensors.

    Each row's fast maximum in a tile is re-scored exactly and merged, and the row is flagged
    when another entry of the tile comes within the error bound of the best exact score so far
    (usually none does). Flagged rows are scanned for every entry that can beat or tie the best:
    on CUDA once per block of queries, so the pass over the tiles never waits for the GPU.
    """
    dev, defer = eng.device, DEFER_RESCAN.get(eng.device.type, True)
    best = torch.full((eng.n,), -math.inf, dtype=torch.float32, device=dev)
    best_idx = torch.full((eng.n,), -1, dtype=torch.long, device=dev)
    n_blocks = math.ceil(eng.m / eng.br)
    flags = None
    max_pairs = max(eng.bq * eng.br // 8, 1 << 12)
    with torch.inference_mode(), strict_matmul():
        for q0, q1, r0, r1 in eng.blocks():
            if defer and r0 == 0:
                flags = torch.zeros((q1 - q0, n_blocks), dtype=torch.bool, device=dev)
            tile = eng.tile(q0, q1, r0, r1)
            fast_arg = tile.argmax(dim=1)
            ri = fast_arg + r0
            qi = torch.arange(q0, q1, device=dev)
            _take_better(best, best_idx, slice(q0, q1), eng.exact(qi, ri), ri)
            tile.scatter_(1, fast_arg[:, None], -math.inf)  # the runner-up decides whether to look again
            thr = best[q0:q1] - eng.err
            flagged = tile.amax(dim=1).float() >= thr
            if defer:
                flags[:, r0 // eng.br] = flagged
            else:
                for local, cols in eng.scan_rows(tile, torch.nonzero(flagged).squeeze(1), thr, max_pairs):
                    _absorb(best, best_idx, qi, local, cols + r0, eng.exact(qi[local], cols + r0))
            del tile
            if defer and r1 == eng.m:
                _rescan_flagged(eng, best, best_idx, q0, flags)
    return best, best_idx


def best_match(queries, references, *, device: str | torch.device = "auto", precision: str = "fp32",
               memory_budget_bytes: int | None = None, progress: bool = True,
               desc: str = "best match") -> BestMatches:
    """The exact highest score of each query over all references and its index (lowest index on ties).

    ``queries``, ``references``: numpy arrays, or torch tensors (already on the device: no copy).
    """
    best, best_idx = _best_on_device(Engine(queries, references, device, precision, memory_budget_bytes,
                                            progress, desc))
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
    as in the paper's ``find_closest.py``. Two passes: the fast maximum of every query's row
    (a matmul and a max per tile, nothing else, no host synchronisation); then, as the ``k``
    rows with the largest maxima hold ``k`` pairs scoring at least the k-th of them (less the
    error bound), only the few rows that can reach that are searched again, for every pair
    that can, and those pairs are re-scored exactly.
    """
    if int(k) <= 0:
        raise FaceauditError(f"top-K: K must be > 0, got {k}")
    k = int(k)
    eng = Engine(queries, references, device, precision, memory_budget_bytes, progress, desc)
    dev, err = eng.device, eng.err
    row_max = torch.full((eng.n,), -math.inf, dtype=torch.float32, device=dev)
    empty_f = torch.empty(0, dtype=torch.float32, device=dev)
    empty_l = torch.empty(0, dtype=torch.long, device=dev)
    state = (empty_f, empty_l, empty_l)
    max_pairs = max(eng.bq * eng.br // 8, 1 << 12, 4 * k)
    with torch.inference_mode(), strict_matmul():
        for q0, q1, r0, r1 in eng.blocks():
            tile = eng.tile(q0, q1, r0, r1)
            row_max[q0:q1] = torch.maximum(row_max[q0:q1], tile.amax(dim=1).float())
            del tile
        # every pair of the top K scores at least `floor` (exactly), so at least `floor - err` (fast)
        floor = float(torch.topk(row_max, k).values[-1]) - err if eng.n >= k else -math.inf
        if positive_only:
            floor = max(floor, 0.0)
        rows = torch.nonzero(row_max >= floor - err).squeeze(1)
        rows = rows[torch.argsort(row_max[rows], descending=True, stable=True)]  # likeliest first
        width = max(eng.br, eng.bq * eng.br // max(min(len(rows), eng.bq), 1))  # few rows: wide tiles
        for start in range(0, len(rows), eng.bq):
            qi = rows[start:start + eng.bq]
            if len(state[0]) == k:  # no pair of a row whose fast maximum is below the k-th best - err can enter
                qi = qi[row_max[qi] >= state[0][-1] - err]
                if not len(qi):
                    break
            for r0 in range(0, eng.m, width):
                r1 = min(r0 + width, eng.m)
                tile = eng.q[qi] @ eng.r[r0:r1].T
                kth = state[0][-1].item() if len(state[0]) == k else -math.inf
                thr = torch.full((len(qi),), max(floor, kth) - err, dtype=torch.float32, device=dev)
                for local, cols in eng.scan_rows(tile, None, thr, max_pairs):
                    q_idx, r_idx = qi[local], cols + r0
                    scores = eng.exact(q_idx, r_idx)
                    if positive_only:
                        keep = scores > 0
                        scores, q_idx, r_idx = scores[keep], q_idx[keep], r_idx[keep]
                    state = _merge_top(state, scores, q_idx, r_idx, k)
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
