"""Search backends on face-like data, and exact search against FAISS's IndexFlatIP, in one run.

    python benchmarks/bench_index.py            # 100k gallery x 10k probes x 512; exact vs FAISS at 10k x 50k
    python benchmarks/bench_index.py --quick    # 20k x 2k; exact vs FAISS at 2k x 10k

1. exact vs ``faiss.IndexFlatIP`` on the same random unit vectors, alternating runs, best of
   ``--repeat``: the best match (k=1) and the 10 nearest; GFLOP/s = 2*n*m*d / time, and FAISS's
   time / ours (>= 1: ours is at least as fast). Skipped without FAISS.
2. every backend on face-like data (identities of 10 images whose mated cosine is ~0.55, as real
   512-d face embeddings; each probe is another image of a gallery identity): build and search
   time, recall@1 and recall@10 against exact search, and the peak memory the backend adds over
   the data (VmHWM of a fresh process, reset once the data is made and the thread pools started).
3. exact identification (every probe's exact rank, :func:`faceaudit.search.mated_ranks`) against
   ``best_match`` on the same gallery and probes.

``--why`` adds part 0: where the old 1.35x gap to FAISS came from, one change at a time, each
timed alternately with ``IndexFlatIP`` (4096 queries): the old loop (torch's MKL product into a
fresh 4096 x 18688 tile, then max with indices and a second max), cache-sized 4096 x 1024 tiles
in one reused buffer with one max pass, the same product by numpy's OpenBLAS (FAISS's BLAS), and
faceaudit's search (OpenBLAS, queries split between single-threaded workers).

Prints the threads and the load average: on shared cores, read the ratios, not the seconds.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faceaudit import search  # noqa: E402
from faceaudit.search import IndexOptions  # noqa: E402

#: (label, --index, settings): the notebook's LSH, LSH with more tables, FAISS at its defaults and a cheaper IVF
BACKENDS = [
    ("exact", "exact", {}),
    ("lsh 16 bits r3 (notebook)", "lsh", {"lsh_bits": 16, "lsh_radius": 3}),
    ("lsh 16 bits r3 x 8 tables", "lsh", {"lsh_bits": 16, "lsh_radius": 3, "lsh_tables": 8}),
    ("faiss-flat", "faiss-flat", {}),
    ("faiss-ivf nprobe 8", "faiss-ivf", {"ivf_probe": 8}),
    ("faiss-ivf nprobe 32", "faiss-ivf", {"ivf_probe": 32}),
    ("faiss-hnsw M32 ef128", "faiss-hnsw", {}),
]


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def face_like(n_ids: int, per_id: int, n_probes: int, d: int, seed: int = 0):
    """Gallery (identities in runs of ``per_id``), probes (another image each of the first
    ``n_probes`` identities) and the gallery's identity codes. Noise 0.9: mated cosine ~ 0.55."""
    rng = np.random.default_rng(seed)
    centers = unit_rows(rng.standard_normal((n_ids, d), dtype=np.float32))
    noise = 0.9 / np.sqrt(d)
    gallery = unit_rows(np.repeat(centers, per_id, axis=0)
                        + noise * rng.standard_normal((n_ids * per_id, d), dtype=np.float32))
    probes = unit_rows(centers[:n_probes] + noise * rng.standard_normal((n_probes, d), dtype=np.float32))
    return gallery, probes, np.repeat(np.arange(n_ids), per_id), np.arange(n_probes)


def sizes(quick: bool) -> dict:
    return ({"ids": 2_000, "probes": 2_000, "flat_q": 2_000, "flat_r": 10_000} if quick else
            {"ids": 10_000, "probes": 10_000, "flat_q": 10_000, "flat_r": 50_000})


def best_of(functions: dict, repeat: int) -> dict:
    """Best-of-``repeat`` wall times, the functions run alternately after one warm-up each."""
    for f in functions.values():
        f()
    times = {k: [] for k in functions}
    for _ in range(repeat):
        for k, f in functions.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


def part_why(quick: bool, repeat: int) -> None:
    try:
        import faiss
    except ImportError:
        print("0. why: skipped (pip install 'faceaudit[faiss]')")
        return
    import torch

    n, m, d = 4096, (18688 if quick else 37376), 512
    rng = np.random.default_rng(2)
    q, r = unit_rows(rng.standard_normal((n, d), dtype=np.float32)), unit_rows(rng.standard_normal((m, d), dtype=np.float32))
    Q, R = torch.from_numpy(q), torch.from_numpy(r)
    flat = faiss.IndexFlatIP(d)
    flat.add(r)
    buffer = torch.empty(n * 1024)

    def old_loop():  # torch's product into a fresh tile of the old block size, max with indices, a second max
        for c in range(0, m, 18688):
            tile = Q @ R[c:c + 18688].T
            tile.max(dim=1)
            tile.amax(dim=1)

    def small_tiles(product):
        def run():
            for c in range(0, m, 1024):
                tile = buffer[:n * min(1024, m - c)].view(n, -1)
                product(c, tile)
                tile.amax(dim=1)
        return run

    variants = {
        "faiss.IndexFlatIP (k=1)": lambda: flat.search(q, 1),
        "old: MKL, fresh 4096x18688 tiles, 2 max passes": old_loop,
        "MKL, reused 4096x1024 tile, 1 pass": small_tiles(lambda c, t: torch.mm(Q, R[c:c + 1024].T, out=t)),
        "OpenBLAS (numpy), same tiles": small_tiles(lambda c, t: np.matmul(q, r[c:c + 1024].T, out=t.numpy())),
        "faceaudit best_match (2 workers)": lambda: search.best_match(q, r, device="cpu", progress=False),
    }
    t = best_of(variants, repeat)
    base = t["faiss.IndexFlatIP (k=1)"]
    gflop = 2.0 * n * m * d / 1e9
    print(f"0. why: {n:,} x {m:,} x {d}, {torch.get_num_threads()} threads, best of {repeat} alternating runs")
    for label, seconds in t.items():
        print(f"   {label:<50}{seconds:>8.3f} s{gflop / seconds:>8.1f} GFLOP/s{base / seconds:>8.2f}x FAISS's speed")


def part_exact_vs_faiss(quick: bool, repeat: int) -> None:
    try:
        import faiss
    except ImportError:
        print("1. exact vs faiss.IndexFlatIP: skipped (pip install 'faceaudit[faiss]')")
        return
    s = sizes(quick)
    n, m, d = s["flat_q"], s["flat_r"], 512
    rng = np.random.default_rng(1)
    q, r = unit_rows(rng.standard_normal((n, d), dtype=np.float32)), unit_rows(rng.standard_normal((m, d), dtype=np.float32))
    flat = faiss.IndexFlatIP(d)
    flat.add(r)
    t = best_of({"faiss1": lambda: flat.search(q, 1),
                 "ours1": lambda: search.best_match(q, r, device="cpu", progress=False),
                 "faiss10": lambda: flat.search(q, 10),
                 "ours10": lambda: search.top_k(q, r, 10, device="cpu", progress=False)}, repeat)
    same = np.array_equal(search.best_match(q, r, device="cpu", progress=False).indices, flat.search(q, 1)[1][:, 0])
    gflop = 2.0 * n * m * d / 1e9
    print(f"1. exact vs faiss.IndexFlatIP: {n:,} queries x {m:,} references x {d}, best of {repeat} alternating runs")
    print(f"   {'':<34}{'time (s)':>10}{'GFLOP/s':>10}{'FAISS / ours':>14}")
    for label, ours, theirs in (("best match (k=1)", "ours1", "faiss1"), ("10 nearest (k=10)", "ours10", "faiss10")):
        print(f"   {'faiss.IndexFlatIP ' + label:<34}{t[theirs]:>10.3f}{gflop / t[theirs]:>10.1f}")
        print(f"   {'faceaudit exact ' + label:<34}{t[ours]:>10.3f}{gflop / t[ours]:>10.1f}{t[theirs] / t[ours]:>13.2f}x")
    print(f"   same best matches as FAISS: {same}")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _run_backend(args) -> dict:
    """In a fresh process: make the data, reset the peak-memory mark, build, search, measure."""
    quick, kind, settings, truth = args
    s = sizes(quick)
    gallery, probes, _, _ = face_like(s["ids"], 10, s["probes"], 512)
    search.best_match(probes[:512], gallery[:4096], device="cpu", progress=False)  # thread pools and BLAS buffers
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        base = _rss_kib("VmRSS:")
    except OSError:
        base = None
    opts = IndexOptions(device="cpu", progress=False, **settings)
    try:
        t = time.perf_counter()
        index = search.build_index(kind, gallery, opts)
        built = time.perf_counter() - t
        t = time.perf_counter()
        found = index.search(probes, 10)
        searched = time.perf_counter() - t
    except Exception as exc:  # FAISS missing: reported, not fatal
        return {"error": str(exc).splitlines()[0]}
    recall1 = float(np.mean(found.indices[:, 0] == truth[:, 0]))
    recall10 = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.indices.tolist(), truth.tolist())]))
    memory = (_rss_kib("VmHWM:") - base) / 1024 if base is not None else float("nan")
    return {"build": built, "search": searched, "recall1": recall1, "recall10": recall10, "memory": memory}


def part_backends(quick: bool, labels: list[str] | None = None) -> None:
    s = sizes(quick)
    gallery, probes, _, _ = face_like(s["ids"], 10, s["probes"], 512)
    truth = search.top_k(probes, gallery, 10, device="cpu", progress=False).indices
    mated = np.mean(np.einsum("ij,ij->i", probes, gallery[np.arange(s["probes"]) * 10]))
    print(f"\n2. backends: {len(gallery):,} gallery x {len(probes):,} probes x 512, face-like "
          f"(10 images per identity, mean mated cosine {mated:.2f}); k = 10; each in a fresh process")
    print(f"   {'backend':<28}{'build (s)':>10}{'search (s)':>11}{'recall@1':>10}{'recall@10':>10}{'memory (MiB)':>14}")
    results = {}
    for label, kind, settings in BACKENDS:
        if labels and label != "exact" and label not in labels:
            continue
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            res = pool.submit(_run_backend, (quick, kind, settings, truth)).result()
        results[label] = res
        if "error" in res:
            print(f"   {label:<28}{res['error']}")
            continue
        print(f"   {label:<28}{res['build']:>10.2f}{res['search']:>11.2f}{res['recall1']:>10.4f}"
              f"{res['recall10']:>10.4f}{res['memory']:>14.0f}")
    exact = results["exact"]["search"]
    good = [(v["search"], k, v["build"] + v["search"]) for k, v in results.items()
            if not k.startswith(("exact", "faiss-flat")) and "error" not in v and v["recall1"] >= 0.95]
    if good:
        t, label, with_build = min(good)
        print(f"   fastest approximate backend at recall@1 >= 0.95: {label}, search {t:.2f} s = {exact / t:.1f}x "
              f"faster than exact search ({exact:.2f} s); with its build {with_build:.2f} s = {exact / with_build:.2f}x")
    else:
        print("   no approximate backend reached recall@1 >= 0.95 here")


def part_identification(quick: bool, repeat: int) -> None:
    s = sizes(quick)
    gallery, probes, codes, probe_codes = face_like(s["ids"], 10, s["probes"], 512)
    t = best_of({"best": lambda: search.best_match(probes, gallery, device="cpu", progress=False),
                 "ranks": lambda: search.mated_ranks(probes, probe_codes, gallery, codes, device="cpu",
                                                     progress=False)}, repeat)
    ranks = search.mated_ranks(probes, probe_codes, gallery, codes, device="cpu", progress=False).ranks
    print(f"\n3. exact identification, {len(probes):,} probes x {len(gallery):,} gallery images "
          f"({s['ids']:,} identities): best_match {t['best']:.2f} s, exact ranks {t['ranks']:.2f} s "
          f"= {t['ranks'] / t['best']:.2f}x best_match (rank-1 {np.mean(ranks == 1):.4f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20k gallery x 2k probes; exact vs FAISS at 2k x 10k")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of parts 1 and 3 (best of)")
    ap.add_argument("--skip", action="append", default=[], choices=("1", "2", "3"), help="skip a part")
    ap.add_argument("--why", action="store_true", help="part 0: the old gap to FAISS taken apart")
    ap.add_argument("--backend", action="append", default=None, choices=[b[0] for b in BACKENDS], metavar="LABEL",
                    help="part 2: only these backends (repeatable; exact always runs: it is the baseline)")
    args = ap.parse_args(argv)
    import torch

    print(f"bench_index: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    if args.why:
        part_why(args.quick, args.repeat)
    if "1" not in args.skip:
        part_exact_vs_faiss(args.quick, args.repeat)
    if "2" not in args.skip:
        part_backends(args.quick, args.backend)
    if "3" not in args.skip:
        part_identification(args.quick, args.repeat)
    print(f"\nload average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
