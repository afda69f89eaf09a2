"""Pair sampling: 1M mated + 1M non-mated pairs from 1M embeddings of 50k identities.

Prints the time, the peak RSS of the process against the baseline RSS of just the inputs,
and the tracemalloc peak of the sampling itself; and what listing every mated pair (as the
original script does, one Python dict per pair) would hold.

    python benchmarks/bench_pairs.py [--rows 1000000] [--identities 50000] [--n 1000000]
"""
import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceaudit.evaluate.pairs import count_pairs, sample_pairs  # noqa: E402


def rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2 ** 20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--identities", type=int, default=50_000)
    parser.add_argument("--n", type=int, default=1_000_000, help="pairs of each kind")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    # identity labels as an EmbeddingSet holds them (unicode), unevenly sized identities
    codes = np.sort(rng.integers(0, args.identities, args.rows))
    identities = np.char.add("id", codes.astype(str))
    del codes
    baseline_now, baseline_peak = current_rss_mb(), rss_mb()
    print(f"inputs: {args.rows:,} identity labels ({identities.nbytes / 2**20:.1f} MB); "
          f"baseline RSS {baseline_now:.0f} MB (peak so far {baseline_peak:.0f} MB)")

    start = time.perf_counter()
    pairs = sample_pairs(identities, args.n, args.seed)
    elapsed = time.perf_counter() - start
    peak = rss_mb()
    print(f"sampled {len(pairs.mated):,} mated of {pairs.total_mated:,} and {len(pairs.non_mated):,} non-mated "
          f"of {pairs.total_non_mated:,} pairs in {elapsed:.2f} s")
    print(f"peak RSS {peak:.0f} MB = baseline + {peak - baseline_now:.0f} MB "
          f"(the two (n, 2) int64 results alone are {(pairs.mated.nbytes + pairs.non_mated.nbytes) / 2**20:.0f} MB)")
    del pairs

    tracemalloc.start()
    sample_pairs(identities, args.n, args.seed)
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"tracemalloc peak during sampling: {traced / 2**20:.0f} MB = "
          f"{traced / (args.rows + 2 * args.n):.0f} bytes per (row + pair)")

    mated_total, _ = count_pairs(identities)
    # the original: one dict {'identity', 'emb1', 'emb2'} per mated pair in a list (~232 B dict + 8 B slot)
    print(f"listing every mated pair as the original does: {mated_total:,} dicts, about "
          f"{mated_total * 240 / 2**30:.1f} GiB before any embedding is touched")


if __name__ == "__main__":
    main()
