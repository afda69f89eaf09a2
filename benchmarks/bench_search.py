"""Speed of the exact search against a raw matmul and against the paper's per-query loop.

    python benchmarks/bench_search.py            # 10k queries x 50k references x 512 dims
    python benchmarks/bench_search.py --quick    # 2k x 10k x 512

Prints, in one run on one device: effective GFLOP/s (2*n*m*d / time) of
faceaudit.search.best_match next to a raw ``torch.matmul`` + ``max`` over the same data and tiles,
the same for the global top-K next to ``matmul`` + ``topk`` of the flattened scores, and
the speed-up over a per-query ``sklearn cosine_similarity`` loop shaped like the paper's
compare_embeddings.py (timed on a few hundred queries and extrapolated, as printed).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faceaudit import search  # noqa: E402
from faceaudit.device import resolve_device  # noqa: E402


def unit_vectors(rng, n, d):
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _once(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def timed_pair(raw, ours, device, repeat):
    """Best-of-``repeat`` wall times of ``raw`` and ``ours``, run alternately after a warm-up each,
    so that both see the same machine load (the minimum is the least disturbed run)."""
    raw()
    ours()
    t_raw, t_ours = [], []
    for _ in range(repeat):
        t_raw.append(_once(raw, device))
        t_ours.append(_once(ours, device))
    return min(t_raw), min(t_ours)


def raw_tiles(n, m, budget):
    """The tiles the blocked search uses for this budget, so raw and ours do identical matmuls."""
    bq, br = search.block_sizes(n, m, budget)
    return [(q0, min(q0 + bq, n), r0, min(r0 + br, m)) for q0 in range(0, n, bq) for r0 in range(0, m, br)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2k x 10k x 512 instead of 10k x 50k x 512")
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--references", type=int, default=None)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--top", type=int, default=100)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", action="append", default=None,
                    help="fp32 (default), and on CUDA also fp16/bf16; repeatable")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loop-queries", type=int, default=None, help="queries timed in the per-query loop")
    ap.add_argument("--budget-mb", type=int, default=None, help="memory budget of the blocked search")
    args = ap.parse_args(argv)

    n = args.queries or (2_000 if args.quick else 10_000)
    m = args.references or (10_000 if args.quick else 50_000)
    d, k = args.dim, args.top
    device = resolve_device(args.device)
    precisions = args.precision or (["fp32", "fp16"] if device.type == "cuda" else ["fp32"])
    loop_n = args.loop_queries or (100 if args.quick else 300)
    budget = (args.budget_mb * 2 ** 20) if args.budget_mb else (
        search.DEFAULT_BUDGET_CUDA if device.type == "cuda" else search.DEFAULT_BUDGET_CPU)
    flops = 2.0 * n * m * d

    rng = np.random.default_rng(0)
    q_np, r_np = unit_vectors(rng, n, d), unit_vectors(rng, m, d)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"search benchmark: {n:,} queries x {m:,} references x {d} dims on {dev_name}, torch {torch.__version__}")
    bq, br = search.block_sizes(n, m, budget)
    print(f"memory budget {budget / 2**20:.0f} MiB -> tiles of {bq} x {br} for raw and faceaudit alike; "
          f"best of {args.repeat} alternating runs after a warm-up")

    Q = torch.from_numpy(q_np).to(device)
    R = torch.from_numpy(r_np).to(device)
    tiles = raw_tiles(n, m, budget)
    torch.backends.cuda.matmul.allow_tf32 = False

    def raw_best():  # matmul + max per tile, and the running max across reference tiles
        best = torch.full((n,), -float("inf"), device=device)
        idx = torch.zeros(n, dtype=torch.long, device=device)
        for q0, q1, r0, r1 in tiles:
            v, i = torch.max(Q[q0:q1] @ R[r0:r1].T, dim=1)
            better = v > best[q0:q1]
            best[q0:q1] = torch.where(better, v, best[q0:q1])
            idx[q0:q1] = torch.where(better, i + r0, idx[q0:q1])
        return best, idx

    def raw_top():  # matmul + top-K of each flattened tile, then top-K of those
        best = [torch.topk((Q[q0:q1] @ R[r0:r1].T).flatten(), min(k, (q1 - q0) * (r1 - r0))).values
                for q0, q1, r0, r1 in tiles]
        return torch.topk(torch.cat(best), k)

    print(f"\n{'what':<44}{'time (s)':>10}{'GFLOP/s':>11}{'vs raw':>9}")
    results = {}
    for precision in precisions:
        def best():
            return search.best_match(q_np, r_np, device=device, precision=precision, memory_budget_bytes=budget,
                                     progress=False)

        def top():
            return search.top_pairs(q_np, r_np, k, device=device, precision=precision, memory_budget_bytes=budget,
                                    progress=False)

        t_raw_best, t_best = timed_pair(raw_best, best, device, args.repeat)
        t_raw_top, t_top = timed_pair(raw_top, top, device, args.repeat)
        results[precision] = (t_best, t_top)
        print(f"{'raw fp32 matmul + max':<44}{t_raw_best:>10.4f}{flops / t_raw_best / 1e9:>11.1f}{'':>9}")
        print(f"{f'faceaudit best_match ({precision}, exact)':<44}{t_best:>10.4f}{flops / t_best / 1e9:>11.1f}"
              f"{100 * t_raw_best / t_best:>8.0f}%")
        print(f"{f'raw fp32 matmul + top-{k}':<44}{t_raw_top:>10.4f}{flops / t_raw_top / 1e9:>11.1f}{'':>9}")
        print(f"{f'faceaudit top_pairs K={k} ({precision}, exact)':<44}{t_top:>10.4f}{flops / t_top / 1e9:>11.1f}"
              f"{100 * t_raw_top / t_top:>8.0f}%")

    # the paper's loop: one cosine_similarity call per query over the whole reference set
    from sklearn.metrics.pairwise import cosine_similarity

    loop_n = min(loop_n, n)
    t = time.perf_counter()
    for i in range(loop_n):
        np.max(cosine_similarity(q_np[i:i + 1], r_np)[0])
    per_query = (time.perf_counter() - t) / loop_n
    t_loop = per_query * n
    t_fast = min(v[0] for v in results.values())
    print(f"\nper-query sklearn cosine_similarity loop (as compare_embeddings.py): {per_query * 1e3:.2f} ms/query, "
          f"timed on {loop_n} queries and extrapolated to {n:,}: {t_loop:.1f} s")
    print(f"speed-up of best_match over that loop: {t_loop / t_fast:,.0f}x")
    print(f"(at the paper's 490k references the loop's cost per query grows ~{490_000 / m:.1f}x)")
    # sanity: fast paths agree with each other
    a = search.best_match(q_np[:500], r_np, device=device, progress=False)
    b = search.best_match(q_np[:500], r_np, device=device, precision=precisions[-1], progress=False)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.scores, b.scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
