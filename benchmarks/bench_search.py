"""Speed of the exact search against a raw matmul, per precision, and against the paper's per-query loop.

    python benchmarks/bench_search.py                              # 10k queries x 50k references x 512 dims
    python benchmarks/bench_search.py --quick                      # 2k x 10k x 512
    python benchmarks/bench_search.py --references 490000 --loop-queries 0   # the paper's CASIA scale

Prints, in one run on one device, for each precision (fp32; on CUDA also fp16 and bf16): the
time and effective GFLOP/s (2*n*m*d / time) of faceaudit.search.best_match next to a raw
``torch.matmul`` + ``max`` over the same data and tiles in the same precision, and the global
top-K next to ``matmul`` + ``topk`` of the flattened scores. Inputs already on the device for both
(the like-for-like ratio; targets in fp32: >= 70%); on CUDA also best_match from numpy arrays,
which adds the copy to the GPU. Then each precision's speed-up over fp32 (target on CUDA at the
paper's scale: fp16/bf16 faster), and the speed-up over a per-query ``sklearn cosine_similarity``
loop shaped like the paper's compare_embeddings.py (timed on a few queries and extrapolated).
Every precision's results are checked equal to fp32's (exact search).
"""
from __future__ import annotations

import argparse
import os
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


def raw_searches(Q, R, k, budget, dtype):
    """Raw matmul + max and matmul + top-K over the tiles the blocked search uses in ``dtype``."""
    n, m = len(Q), len(R)
    bq, br = search.block_sizes(n, m, budget, dtype, Q.device.type)
    tiles = [(q0, min(q0 + bq, n), r0, min(r0 + br, m)) for q0 in range(0, n, bq) for r0 in range(0, m, br)]
    q, r = Q.to(dtype), R.to(dtype)

    def best():  # matmul + max per tile, and the running max across reference tiles
        top = torch.full((n,), -float("inf"), device=Q.device)
        idx = torch.zeros(n, dtype=torch.long, device=Q.device)
        for q0, q1, r0, r1 in tiles:
            v, i = torch.max(q[q0:q1] @ r[r0:r1].T, dim=1)
            v = v.float()
            better = v > top[q0:q1]
            top[q0:q1] = torch.where(better, v, top[q0:q1])
            idx[q0:q1] = torch.where(better, i + r0, idx[q0:q1])
        return top, idx

    def top_k():  # matmul + top-K of each flattened tile, then top-K of those
        found = [torch.topk((q[q0:q1] @ r[r0:r1].T).flatten(), min(k, (q1 - q0) * (r1 - r0))).values.float()
                 for q0, q1, r0, r1 in tiles]
        return torch.topk(torch.cat(found), k)

    return best, top_k, (bq, br)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2k x 10k x 512 instead of 10k x 50k x 512")
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--references", type=int, default=None)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--top", type=int, default=100)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", action="append", default=None,
                    help="fp32 (default), and on CUDA also fp16/bf16 (default there: all three); repeatable")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loop-queries", type=int, default=None,
                    help="queries timed in the per-query loop (0 skips it; default 300, --quick 100)")
    ap.add_argument("--budget-mb", type=int, default=None, help="memory budget of the blocked search")
    args = ap.parse_args(argv)

    n = args.queries or (2_000 if args.quick else 10_000)
    m = args.references or (10_000 if args.quick else 50_000)
    d, k = args.dim, args.top
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    precisions = args.precision or (["fp32", "fp16", "bf16"] if cuda else ["fp32"])
    loop_n = (100 if args.quick else 300) if args.loop_queries is None else args.loop_queries
    budget = (args.budget_mb * 2 ** 20) if args.budget_mb else (
        search.engine.DEFAULT_BUDGET_CUDA if cuda else search.engine.DEFAULT_BUDGET_CPU)
    flops = 2.0 * n * m * d

    rng = np.random.default_rng(0)
    q_np, r_np = unit_vectors(rng, n, d), unit_vectors(rng, m, d)
    dev_name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"search benchmark: {n:,} queries x {m:,} references x {d} dims on {dev_name}, torch {torch.__version__}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"memory budget {budget / 2**20:.0f} MiB; raw and faceaudit use the same tiles; best of {args.repeat} "
          "alternating runs after a warm-up; inputs already on the device unless said")

    Q = torch.from_numpy(q_np).to(device)
    R = torch.from_numpy(r_np).to(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"\n{'what':<52}{'time (s)':>10}{'GFLOP/s':>10}{'vs raw':>8}")

    def row(what, t, raw_t=None):
        ratio = f"{100 * raw_t / t:7.0f}%" if raw_t else ""
        print(f"{what:<52}{t:>10.4f}{flops / t / 1e9:>10.1f}{ratio:>8}")

    results, found = {}, {}
    for precision in precisions:
        dtype = search.PRECISIONS[precision]
        raw_best, raw_top, tiles = raw_searches(Q, R, k, budget, dtype)

        def best():
            found[precision] = search.best_match(Q, R, device=device, precision=precision, memory_budget_bytes=budget,
                                                 progress=False)

        def top():
            found[precision, "top"] = search.top_pairs(Q, R, k, device=device, precision=precision,
                                                       memory_budget_bytes=budget, progress=False)

        t_raw_best, t_best = timed_pair(raw_best, best, device, args.repeat)
        t_raw_top, t_top = timed_pair(raw_top, top, device, args.repeat)
        results[precision] = {"best": t_best, "top": t_top, "raw_best": t_raw_best, "raw_top": t_raw_top}
        print(f"-- {precision}: tiles of {tiles[0]} x {tiles[1]}")
        row(f"raw {precision} matmul + max", t_raw_best)
        row(f"faceaudit best_match ({precision}, exact)", t_best, t_raw_best)
        if cuda:
            t_numpy = min(_once(lambda: search.best_match(q_np, r_np, device=device, precision=precision,
                                                          memory_budget_bytes=budget, progress=False), device)
                          for _ in range(args.repeat))
            results[precision]["best_from_numpy"] = t_numpy
            row("  the same from numpy arrays (+ the copy to the GPU)", t_numpy, t_raw_best)
        row(f"raw {precision} matmul + top-{k}", t_raw_top)
        row(f"faceaudit top_pairs K={k} ({precision}, exact)", t_top, t_raw_top)

    if "fp32" in results and len(results) > 1:
        print()
        for precision, t in results.items():
            if precision != "fp32":
                print(f"{precision} vs fp32 (faceaudit, exact): best_match {results['fp32']['best'] / t['best']:.2f}x, "
                      f"top_pairs {results['fp32']['top'] / t['top']:.2f}x faster")
    for precision in precisions[1:]:  # exact: every precision finds what the first one does
        a, b = found[precisions[0]], found[precision]
        assert np.array_equal(a.indices, b.indices) and np.array_equal(a.scores, b.scores), precision
        a, b = found[precisions[0], "top"], found[precision, "top"]
        assert np.array_equal(a.scores, b.scores) and np.array_equal(a.query_indices, b.query_indices) \
            and np.array_equal(a.reference_indices, b.reference_indices), precision
    if len(precisions) > 1:
        print(f"results of {', '.join(precisions[1:])} equal {precisions[0]}'s")

    if loop_n:  # the paper's loop: one cosine_similarity call per query over the whole reference set
        from sklearn.metrics.pairwise import cosine_similarity

        loop_n = min(loop_n, n)
        t = time.perf_counter()
        for i in range(loop_n):
            np.max(cosine_similarity(q_np[i:i + 1], r_np)[0])
        per_query = (time.perf_counter() - t) / loop_n
        t_loop, t_fast = per_query * n, min(v["best"] for v in results.values())
        print(f"\nper-query sklearn cosine_similarity loop (as compare_embeddings.py): {per_query * 1e3:.2f} ms/query, "
              f"timed on {loop_n} queries and extrapolated to {n:,}: {t_loop:.1f} s")
        print(f"speed-up of best_match over that loop: {t_loop / t_fast:,.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
