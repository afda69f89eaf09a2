"""Clustering: 100k embeddings of 10k identities clustered (kNN graph + Chinese Whispers) and scored.

Prints the time of each step and the peak RSS of the whole job, with ratios against baselines
measured in the same run: the kNN search against the bare all-pairs matrix product it cannot
avoid (timed on the first 8,192 queries, scaled to all), Chinese Whispers against connected
components of the same graph, and the peak RSS against the N x N float32 matrix the job never
holds. The machine's load average is printed before and after.

Data: identity centres drawn at random on the unit sphere, each image its centre plus Gaussian
noise (mated cosine about 0.6, non-mated about 0 +- 1/sqrt(dim)); threshold 0.4 (about 4.5
standard deviations of the non-mated scores at 128 dimensions, as SFace's 0.39 is on real faces).

    python benchmarks/bench_cluster.py [--quick] [--n 100000] [--identities 10000] [--dim 128] [--k 10] [--threads N]
"""
import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceaudit.evaluate import clustering  # noqa: E402
from faceaudit.evaluate.clustering_metrics import (clustering_scores, contingency, merged_identities,  # noqa: E402
                                                   split_identities)


def reset_peak_rss() -> bool:
    """Start a new RSS high-water mark (Linux >= 4.0); False where it cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2 ** 20


def make_embeddings(n: int, n_ids: int, dim: int, mated_cosine: float, seed: int):
    """Unit vectors: identity ``i`` holds rows with ``codes == i``; written block by block (no big temporaries)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    codes = np.sort(np.arange(n) % n_ids)
    noise = np.sqrt((1 / mated_cosine - 1) / dim)  # |noise|^2 = 1/c - 1: mated cosine about c
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):
        stop = min(start + 65536, n)
        block = centres[codes[start:stop]] + noise * rng.standard_normal((stop - start, dim)).astype(np.float32)
        vectors[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors, np.char.add("id", codes.astype(str))


def raw_matmul_seconds(vectors: np.ndarray, queries: int = 8192, block: int = 4096) -> float:
    """Seconds of the bare product of ``queries`` rows with all rows, in ``block``-row slabs, scaled to all rows."""
    x = torch.from_numpy(vectors)
    queries = min(queries, len(x))
    start = time.perf_counter()
    for q0 in range(0, queries, block):
        tile = x[q0:min(q0 + block, queries)] @ x.T
        del tile
    return (time.perf_counter() - start) * len(x) / queries


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="embeddings (default: %(default)s)")
    parser.add_argument("--identities", type=int, default=10_000, help="identities (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=128, help="dimensions (default: %(default)s, SFace's)")
    parser.add_argument("--k", type=int, default=10,
                        help="neighbours per image (default: %(default)s; identities hold 10 images)")
    parser.add_argument("--threshold", type=float, default=0.4, help="cosine threshold (default: %(default)s)")
    parser.add_argument("--memory-budget-mb", type=int, default=None,
                        help="kNN search block memory (default: the search's own, 512 MB on CPU)")
    parser.add_argument("--quick", action="store_true", help="10,000 embeddings of 1,000 identities")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own); on a busy machine 1 can be much faster")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.n, args.identities = 10_000, 1_000

    print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores; torch threads "
          f"{torch.get_num_threads()}")
    vectors, identities = make_embeddings(args.n, args.identities, args.dim, 0.6, args.seed)
    clustering_scores(identities[:4], np.arange(4))  # imports scikit-learn's metrics before the clock starts
    baseline = current_rss_mb()
    resettable = reset_peak_rss()
    print(f"{args.n:,} embeddings of {args.identities:,} identities, {args.dim} dimensions "
          f"({vectors.nbytes / 2**20:.0f} MB); RSS {baseline:.0f} MB before clustering")

    budget = args.memory_budget_mb and args.memory_budget_mb << 20
    t0 = time.perf_counter()
    graph = clustering.knn_graph(vectors, args.k, args.threshold, device="cpu", memory_budget_bytes=budget,
                                 progress=False)
    t1 = time.perf_counter()
    labels, rounds, converged = clustering.chinese_whispers(graph)
    t2 = time.perf_counter()
    labels = clustering.relabel(labels)
    table = contingency(identities, labels)
    scores = clustering_scores(identities, labels, table)
    split = split_identities(table)
    merged, _ = merged_identities(table, 100)
    t3 = time.perf_counter()
    peak = peak_rss_mb()
    clustering.connected_components(graph)  # timed against Chinese Whispers
    t4 = time.perf_counter()
    raw = raw_matmul_seconds(vectors)
    load_after = os.getloadavg()[0]

    knn, whispers, scoring, total = t1 - t0, t2 - t1, t3 - t2, t3 - t0
    print(f"kNN graph (k={graph.k}, exact top_k): {knn:.1f} s, {len(graph.rows):,} edges >= {args.threshold}; "
          f"the bare all-pairs matmul alone takes {raw:.1f} s: the search runs at {raw / knn:.0%} of it")
    print(f"Chinese Whispers: {whispers:.2f} s ({rounds} rounds, converged: {converged}); connected components "
          f"of the same graph {t4 - t3:.2f} s ({whispers / max(t4 - t3, 1e-9):.1f}x)")
    print(f"scores and findings: {scoring:.2f} s")
    print(f"total, clustered and scored: {total:.1f} s ({knn / total:.0%} in the kNN search)")
    nxn = args.n ** 2 * 4 / 2 ** 20
    print(f"peak RSS {peak:.0f} MB{'' if resettable else ' (whole process)'} = {baseline:.0f} MB before + "
          f"{peak - baseline:.0f} MB; an N x N float32 matrix alone: {nxn:,.0f} MB ({nxn / peak:.0f}x the peak)")
    print(f"{scores['clusters']:,} clusters for {scores['identities']:,} identities: NMI {scores['nmi']:.4f} "
          f"ARI {scores['ari']:.4f} pairwise F1 {scores['pairwise_f1']:.4f} BCubed F1 {scores['bcubed_f1']:.4f}; "
          f"{len(split):,} identities split, {len(merged):,} merged pairs listed")
    print(f"load average {load_after:.2f} (1 min) after")


if __name__ == "__main__":
    main()
