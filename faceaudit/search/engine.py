"""The machinery every exact search shares: input checks, device and precision, a proven error
bound on the fast product, block sizes from a memory budget, and candidate scanning with exact
float64 re-scoring.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from faceaudit.device import cuda_math, resolve_device
from faceaudit.errors import FaceauditError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
_SUBNORMAL_HALF_SPACING = {torch.float32: 2.0 ** -150, torch.float16: 2.0 ** -25, torch.bfloat16: 2.0 ** -134}
_MAX_FINITE_SAFE = {torch.float32: 1e30, torch.float16: 2.0 ** 7, torch.bfloat16: 1e30}
DEFAULT_BUDGET_CPU = 512 * 2 ** 20
DEFAULT_BUDGET_CUDA = 2 * 2 ** 30


# ---------------------------------------------------------------- the definition

def exact_scores(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Brute force: the full float32 score matrix, float64-accumulated, rounded once."""
    q = np.asarray(queries, dtype=np.float32).astype(np.float64)
    r = np.asarray(references, dtype=np.float32).astype(np.float64)
    return (q @ r.T).astype(np.float32)


def as_cosines(scores: np.ndarray) -> np.ndarray:
    """Scores clamped to [-1, 1]: unit float32 vectors can score 1.0000001 with themselves, and a
    cosine shown to users never exceeds 1. Order is kept (ties at exactly 1 stay in search order)."""
    return np.clip(scores, -1.0, 1.0).astype(np.asarray(scores).dtype, copy=False)


# ---------------------------------------------------------------- plumbing

def _as_matrix(x, device: torch.device) -> torch.Tensor:
    """A float32 matrix on ``device``: numpy arrays are copied there once; tensors already there,
    in float32 and contiguous, are used as they are (no copy)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=torch.float32).contiguous()
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float32))).to(device)


def _check_inputs(queries, references, what: str = "search", device: torch.device | None = None):
    """Queries and references as float32 tensors on ``device`` (default CPU), checked."""
    device = device or torch.device("cpu")
    q, r = _as_matrix(queries, device), _as_matrix(references, device)
    if q.ndim != 2 or r.ndim != 2:
        raise FaceauditError(f"{what}: queries and references must be 2-D arrays, got {tuple(q.shape)} and "
                             f"{tuple(r.shape)}")
    if len(r) == 0:
        raise FaceauditError(f"{what}: the reference set is empty")
    if len(q) == 0:
        raise FaceauditError(f"{what}: there are no queries")
    if q.shape[1] == 0:
        raise FaceauditError(f"{what}: the vectors have no dimensions")
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


def _row_stats(x: torch.Tensor, with_abs: bool) -> torch.Tensor:
    """[largest float32 sum of squares of a row, largest |entry| (0 unless ``with_abs``)] of ``x``,
    a slice of rows at a time (no temporary the size of ``x``) and, on a GPU, without waiting for it."""
    if x.device.type == "cpu":  # numpy's kernels are the fast ones there
        a = x.numpy()
        big = max(float(a.max()), -float(a.min())) if with_abs else 0.0
        return torch.tensor([np.einsum("ij,ij->i", a, a).max(), big], dtype=torch.float32)
    stats = torch.zeros(2, dtype=torch.float32, device=x.device)
    for start in range(0, len(x), 1 << 14):
        part = x[start:start + (1 << 14)]
        big = torch.maximum(part.max(), -part.min()) if with_abs else stats[1]
        stats = torch.maximum(stats, torch.stack([(part * part).sum(dim=1).max(), big]))
    return stats


def _error_bound(q_sq: float, r_sq: float, d: int, dtype: torch.dtype) -> float:
    """A proven bound on |fast score - exact score| for any pair (any summation order).

    ``q_sq``, ``r_sq``: the largest float32 sums of squares of a query and of a reference row.
    Inputs rounded to ``dtype`` (relative u, plus absolute error for subnormals),
    products and sums in float32 (gamma_d), output rounded to ``dtype``, and the
    exact score's own final rounding. Scaled by max |q| * max |r|.
    """
    u32 = _UNIT_ROUNDOFF[torch.float32]
    gamma = d * u32 / (1 - d * u32)
    # float32 sums of squares are within gamma of the truth: inflate to stay an upper bound
    inflate = math.sqrt(1 + 2 * gamma) * (1 + 2 * u32)
    if not (math.isfinite(q_sq) and math.isfinite(r_sq)):  # NaN/inf anywhere makes its row's sum so
        raise FaceauditError("search: vectors hold NaN or infinite (or overflowing) values")
    qn = math.sqrt(q_sq) * inflate
    rn = math.sqrt(r_sq) * inflate
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


def strict_matmul():
    """No TF32 and no reduced-precision reductions: the error bound relies on float32 accumulation."""
    return cuda_math(tf32=False, reduced_precision_reductions=False)


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


class Engine:
    """Shared state of one search: device tensors, precision, error bound, blocking."""

    def __init__(self, queries, references, device, precision, memory_budget_bytes, progress, desc):
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        self.dtype = _resolve_precision(precision, self.device)
        if memory_budget_bytes is not None and memory_budget_bytes <= 0:
            raise FaceauditError(f"memory budget must be > 0 bytes, got {memory_budget_bytes}")
        # float32 copies on the device (none for tensors already there), read again by exact()
        self.q32, self.r32 = _check_inputs(queries, references, desc, self.device)
        # one host synchronisation for the statistics of both matrices
        low = self.dtype != torch.float32
        (q_sq, q_abs), (r_sq, r_abs) = torch.stack([_row_stats(self.q32, low), _row_stats(self.r32, low)]).tolist()
        if low and max(q_abs, r_abs) > _MAX_FINITE_SAFE[self.dtype]:
            raise FaceauditError(f"precision {precision}: vector entries up to {max(q_abs, r_abs):g} risk "
                                 "overflow; normalise the vectors or use fp32")
        if memory_budget_bytes is None:
            memory_budget_bytes = DEFAULT_BUDGET_CUDA if self.device.type == "cuda" else DEFAULT_BUDGET_CPU
        self.n, self.m = len(self.q32), len(self.r32)
        self.bq, self.br = block_sizes(self.n, self.m, memory_budget_bytes, self.dtype)
        self.err = _error_bound(q_sq, r_sq, self.q32.shape[1], self.dtype)
        self.slack = _threshold_slack(self.dtype)
        self.progress, self.desc = progress, desc
        # numpy views for the CPU's exact re-scoring (numpy's float64 kernels are the fast ones there)
        self.q_np = self.q32.numpy() if self.device.type == "cpu" else None
        self.r_np = self.r32.numpy() if self.device.type == "cpu" else None
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

    def scan_rows(self, tile: torch.Tensor, rows: torch.Tensor | None, thr_rows: torch.Tensor, max_pairs: int):
        """Yield (row, column) of the entries of ``rows`` (None: every row) that are >= their row's threshold.

        Rows are scanned in chunks of at most ``max_pairs`` entries, and each chunk's pairs are
        handed over before the next is scanned, so candidate arrays stay bounded even when
        everything ties.
        """
        thr_t = self.threshold_for_tile(thr_rows)
        chunk = max(1, max_pairs // max(tile.shape[1], 1))
        count = tile.shape[0] if rows is None else rows.numel()
        for s in range(0, count, chunk):
            if rows is None:  # a slice, not a copy of the tile
                part = torch.arange(s, min(s + chunk, count), device=tile.device)
                block = tile[s:s + chunk]
            else:
                part = rows[s:s + chunk]
                block = tile.index_select(0, part)
            rr, cc = torch.nonzero(block >= thr_t[part][:, None], as_tuple=True)
            if rr.numel():
                yield part[rr], cc
