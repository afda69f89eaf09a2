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

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from faceaudit.device import resolve_device
from faceaudit.errors import FaceauditError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
_SUBNORMAL_HALF_SPACING = {torch.float32: 2.0 ** -150, torch.float16: 2.0 ** -25, torch.bfloat16: 2.0 ** -134}
_MAX_FINITE_SAFE = {torch.float32: 1e30, torch.float16: 2.0 ** 7, torch.bfloat16: 1e30}
DEFAULT_BUDGET_CPU = 512 * 2 ** 20
DEFAULT_BUDGET_CUDA = 2 * 2 ** 30


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


# ---------------------------------------------------------------- the definition

def exact_scores(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Brute force: the full float32 score matrix, float64-accumulated, rounded once."""
    q = np.asarray(queries, dtype=np.float32).astype(np.float64)
    r = np.asarray(references, dtype=np.float32).astype(np.float64)
    return (q @ r.T).astype(np.float32)


# ---------------------------------------------------------------- plumbing

def _check_inputs(queries, references, what: str = "search"):
    q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
    r = np.ascontiguousarray(np.asarray(references, dtype=np.float32))
    if q.ndim != 2 or r.ndim != 2:
        raise FaceauditError(f"{what}: queries and references must be 2-D arrays, got {q.shape} and {r.shape}")
    if len(r) == 0:
        raise FaceauditError(f"{what}: the reference set is empty")
    if len(q) == 0:
        raise FaceauditError(f"{what}: there are no queries")
    if q.shape[1] != r.shape[1]:
        raise FaceauditError(f"{what}: query vectors have {q.shape[1]} dimensions but reference vectors have "
                             f"{r.shape[1]}; they must come from the same model")
    return q, r


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise FaceauditError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype != torch.float32 and device.type != "cuda":
        raise FaceauditError(f"precision {precision} is for CUDA only; use fp32 on {device.type}")
    return dtype


def _error_bound(q: np.ndarray, r: np.ndarray, dtype: torch.dtype) -> float:
    """A proven bound on |fast score - exact score| for any pair (any summation order).

    Inputs rounded to ``dtype`` (relative u, plus absolute error for subnormals),
    products and sums in float32 (gamma_d), output rounded to ``dtype``, and the
    exact score's own final rounding. Scaled by max |q| * max |r|.
    """
    d = q.shape[1]
    u32 = _UNIT_ROUNDOFF[torch.float32]
    gamma = d * u32 / (1 - d * u32)
    # float32 sums of squares are within gamma of the truth: inflate to stay an upper bound
    inflate = math.sqrt(1 + 2 * gamma) * (1 + 2 * u32)
    q_sq, r_sq = np.einsum("ij,ij->i", q, q), np.einsum("ij,ij->i", r, r)
    if not (np.isfinite(q_sq).all() and np.isfinite(r_sq).all()):  # NaN/inf anywhere makes its row's sum so
        raise FaceauditError("search: vectors hold NaN or infinite (or overflowing) values")
    qn = float(np.sqrt(q_sq.max())) * inflate
    rn = float(np.sqrt(r_sq.max())) * inflate
    norm = qn * rn
    bound = gamma * norm + u32 * norm  # float32 accumulation + rounding of the exact score
    if dtype != torch.float32:
        u = _UNIT_ROUNDOFF[dtype]
        sub = _SUBNORMAL_HALF_SPACING[dtype]
        bound += (2 * u + u * u) * norm * (1 + gamma)           # rounded inputs
        bound += 2 * sub * math.sqrt(d) * max(qn, rn) + d * sub * sub
        bound += u * norm * (1 + 2 * u) * (1 + gamma)            # rounded output
    return 1.25 * bound + 1e-30


def _threshold_slack(dtype: torch.dtype) -> float:
    """Subtracted before casting a threshold to ``dtype`` so the cast never rounds it up."""
    return 0.0 if dtype == torch.float32 else 4 * _UNIT_ROUNDOFF[dtype]


@contextlib.contextmanager
def _strict_matmul():
    """No TF32 and no reduced-precision reductions: the error bound relies on float32 accumulation."""
    cuda = torch.backends.cuda.matmul
    saved = (cuda.allow_tf32, cuda.allow_fp16_reduced_precision_reduction,
             cuda.allow_bf16_reduced_precision_reduction, torch.backends.cudnn.allow_tf32)
    cuda.allow_tf32 = False
    cuda.allow_fp16_reduced_precision_reduction = False
    cuda.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        (cuda.allow_tf32, cuda.allow_fp16_reduced_precision_reduction,
         cuda.allow_bf16_reduced_precision_reduction, torch.backends.cudnn.allow_tf32) = saved


def block_sizes(n_queries: int, n_references: int, memory_budget_bytes: int, dtype: torch.dtype = torch.float32,
                ) -> tuple[int, int]:
    """(query block, reference block) whose similarity tile, mask and temporaries fit the budget."""
    tile_bytes = torch.finfo(dtype).bits // 8
    per_element = tile_bytes + 1 + 2  # tile, candidate mask, slack for the max/compare temporaries
    elements = max(int(memory_budget_bytes) // per_element, 1024)
    bq = min(n_queries, 4096, max(elements // 8192, 64))
    br = max(min(n_references, elements // bq), 1)
    if br < n_references:  # multiples of 256 keep the matmul kernels on their fast paths
        br = max(256, br // 256 * 256) if br >= 512 else br
    return int(bq), int(br)


class _Engine:
    """Shared state of one search: device tensors, precision, error bound, blocking."""

    def __init__(self, queries, references, device, precision, memory_budget_bytes, progress, desc):
        self.q_np, self.r_np = _check_inputs(queries, references, desc)
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        self.dtype = _resolve_precision(precision, self.device)
        if self.dtype != torch.float32:
            biggest = max(float(np.abs(self.q_np).max()), float(np.abs(self.r_np).max()))
            if biggest > _MAX_FINITE_SAFE[self.dtype]:
                raise FaceauditError(f"precision {precision}: vector entries up to {biggest:g} risk overflow; "
                                     "normalise the vectors or use fp32")
        if memory_budget_bytes is None:
            memory_budget_bytes = DEFAULT_BUDGET_CUDA if self.device.type == "cuda" else DEFAULT_BUDGET_CPU
        if memory_budget_bytes <= 0:
            raise FaceauditError(f"memory budget must be > 0 bytes, got {memory_budget_bytes}")
        self.n, self.m = len(self.q_np), len(self.r_np)
        self.bq, self.br = block_sizes(self.n, self.m, memory_budget_bytes, self.dtype)
        self.err = _error_bound(self.q_np, self.r_np, self.dtype)
        self.slack = _threshold_slack(self.dtype)
        self.progress, self.desc = progress, desc
        dev = self.device
        self.q32 = torch.from_numpy(self.q_np).to(dev)
        self.r32 = torch.from_numpy(self.r_np).to(dev)
        self.q = self.q32 if self.dtype == torch.float32 else self.q32.to(self.dtype)
        self.r = self.r32 if self.dtype == torch.float32 else self.r32.to(self.dtype)

    def blocks(self):
        total = math.ceil(self.n / self.bq) * math.ceil(self.m / self.br)
        bar = tqdm(total=total, desc=self.desc, unit="block", disable=not self.progress, leave=False)
        try:
            for q0 in range(0, self.n, self.bq):
                q1 = min(q0 + self.bq, self.n)
                for r0 in range(0, self.m, self.br):
                    r1 = min(r0 + self.br, self.m)
                    yield q0, q1, r0, r1
                    bar.update(1)
        finally:
            bar.close()

    def tile(self, q0, q1, r0, r1) -> torch.Tensor:
        return self.q[q0:q1] @ self.r[r0:r1].T

    def exact(self, qi: torch.Tensor, ri: torch.Tensor) -> torch.Tensor:
        """Exact scores of the pairs (qi, ri): float64 products and sums, rounded once to float32."""
        if self.device.type == "cpu":  # numpy's float64 kernels are much faster than torch's on CPU
            a = np.take(self.q_np, qi.numpy(), axis=0).astype(np.float64)
            b = np.take(self.r_np, ri.numpy(), axis=0).astype(np.float64)
            return torch.from_numpy(np.einsum("ij,ij->i", a, b).astype(np.float32))
        out = torch.empty(len(qi), dtype=torch.float32, device=self.device)
        step = 1 << 16
        for s in range(0, len(qi), step):
            a = self.q32[qi[s:s + step]].double()
            b = self.r32[ri[s:s + step]].double()
            out[s:s + step] = (a * b).sum(dim=1).float()
        return out

    def threshold_for_tile(self, thr: torch.Tensor) -> torch.Tensor:
        """``thr`` (float32) as the tile's dtype, never rounded upwards."""
        if self.dtype == torch.float32:
            return thr
        return (thr.double() - self.slack).to(self.dtype)

    def scan_rows(self, tile: torch.Tensor, rows: torch.Tensor, thr_rows: torch.Tensor, max_pairs: int):
        """Yield (row, column) of the entries of ``rows`` that are >= their row's threshold.

        Rows are scanned in chunks of at most ``max_pairs`` entries, and each chunk's pairs are
        handed over before the next is scanned, so candidate arrays stay bounded even when
        everything ties.
        """
        thr_t = self.threshold_for_tile(thr_rows)
        chunk = max(1, max_pairs // max(tile.shape[1], 1))
        for s in range(0, rows.numel(), chunk):
            part = rows[s:s + chunk]
            rr, cc = torch.nonzero(tile.index_select(0, part) >= thr_t[part][:, None], as_tuple=True)
            if rr.numel():
                yield part[rr], cc


# ---------------------------------------------------------------- best match

def best_match(queries, references, *, device: str | torch.device = "auto", precision: str = "fp32",
               memory_budget_bytes: int | None = None, progress: bool = True,
               desc: str = "best match") -> BestMatches:
    """The exact highest score of each query over all references and its index (lowest index on ties)."""
    eng = _Engine(queries, references, device, precision, memory_budget_bytes, progress, desc)
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

    with torch.inference_mode(), _strict_matmul():
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
    eng = _Engine(queries, references, device, precision, memory_budget_bytes, progress, desc)
    dev = eng.device
    err = eng.err
    empty_f = torch.empty(0, dtype=torch.float32, device=dev)
    empty_l = torch.empty(0, dtype=torch.long, device=dev)
    state = (empty_f, empty_l, empty_l)
    max_pairs = max(eng.bq * eng.br // 8, 1 << 12, 4 * k)
    floor = -math.inf if not positive_only else -err
    with torch.inference_mode(), _strict_matmul():
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


# ---------------------------------------------------------------- sampling as the paper does

def sample_indices(total: int, n: int, seed: int = 42) -> tuple[list[int], bool]:
    """The paper's sample: ``random.seed(seed); random.sample(range(total), n)``.

    Returns (indices, all_used); when ``n > total`` every index is used in order,
    as the original scripts do (they warn).
    """
    import random

    if n <= 0:
        raise FaceauditError(f"the number of comparisons must be > 0, got {n}")
    if total < n:
        return list(range(total)), True
    rng = random.Random(seed)
    return rng.sample(range(total), n), False
