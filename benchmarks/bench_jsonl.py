"""Reading a paper-format JSONL embedding file: faceaudit's loader vs json.loads per line.

Generates (once, cached) a file of 100k lines x 512 values rounded to 5 decimals, written
as the paper's script writes them (``json.dumps`` per line), then times

- naive: ``json.loads`` per line into a list, then ``np.array`` of the embeddings;
- faceaudit: ``load_embeddings`` (orjson per line in blocks, no line-count pre-pass,
  the file split in two byte ranges parsed by two processes, float32 output, checks).

and prints lines/s, MB/s and the ratio (the issue asks for >= 4x).

    python benchmarks/bench_jsonl.py [--lines 100000] [--dim 512] [--file PATH]
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceaudit.io import jsonl as E  # noqa: E402
from faceaudit.io.embeddings import load_embeddings  # noqa: E402

TARGET = 4.0


def generate(path: Path, lines: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".partial")
    with open(tmp, "w") as out:
        for start in range(0, lines, 2000):
            block = rng.standard_normal((min(2000, lines - start), dim))
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            for k, row in enumerate(np.round(block, 5).tolist()):
                index = start + k
                out.write(json.dumps({"identity": f"{index // 50:06d}", "image_name": f"{index % 50}.jpg",
                                      "embedding": row}) + "\n")
    os.replace(tmp, path)


def naive(path: Path) -> np.ndarray:
    with open(path) as handle:
        records = [json.loads(line) for line in handle]
    return np.array([r["embedding"] for r in records])


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the parse worker)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(func, *args):
    """(wall seconds, CPU seconds, result)."""
    cpu, start = cpu_seconds(), time.perf_counter()
    out = func(*args)
    return time.perf_counter() - start, cpu_seconds() - cpu, out


def serial_load(path):
    saved = E._PARALLEL_MIN_BYTES
    E._PARALLEL_MIN_BYTES = float("inf")
    try:
        return load_embeddings(path)
    finally:
        E._PARALLEL_MIN_BYTES = saved


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--file", type=Path, default=None, help="where to keep the generated file")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each loader, interleaved (best is shown)")
    args = parser.parse_args()
    path = args.file or Path(tempfile.gettempdir()) / f"faceaudit_bench_{args.lines}x{args.dim}.jsonl"
    if not path.is_file():
        print(f"generating {path} ...", flush=True)
        generate(path, args.lines, args.dim)
    size_mb = path.stat().st_size / 1e6
    print(f"file: {path} ({args.lines:,} lines x {args.dim}, {size_mb:.0f} MB); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")

    variants = (("naive json.loads", naive), ("faceaudit, 1 process", serial_load), ("faceaudit", load_embeddings))
    best = {}
    for _ in range(args.repeat):  # interleaved, best of each: the machine may be shared
        for name, func in variants:
            wall, cpu, out = timed(func, path)
            if name not in best or wall < best[name][0]:
                best[name] = (wall, cpu)
            if name == "naive json.loads":
                reference = out
            else:
                eset = out
            del out
    want = (reference / np.linalg.norm(reference, axis=1, keepdims=True)).astype(np.float32)
    assert len(eset) == args.lines and np.allclose(eset.vectors, want, atol=1e-6)
    naive_s = best["naive json.loads"][0]
    for name, (wall, cpu) in best.items():
        print(f"{name:>22}: {wall:7.2f} s  {args.lines / wall:9,.0f} lines/s  {size_mb / wall:6.1f} MB/s  "
              f"{naive_s / wall:5.2f}x   (CPU {cpu:6.2f} s)")
    ratio = naive_s / best["faceaudit"][0]
    print(f"speed-up {ratio:.2f}x (target {TARGET:.0f}x: {'met' if ratio >= TARGET else 'NOT met'}); "
          f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
