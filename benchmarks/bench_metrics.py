"""Verification metrics on 1e6 genuine + 1e6 impostor scores: time vs the 1 s target.

Also: pyeer 0.5.6's own ROC algorithm (a sorted list of Python tuples) on the same
scores, checked to give the same counts, and a per-threshold reference on a subsample
checked to give the same metrics; and the cost of one bootstrap resample.

    python benchmarks/bench_metrics.py [--n 1000000] [--no-pyeer-style]
"""
import argparse
import operator
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceaudit.evaluate.metrics import bootstrap_ci, default_bootstrap, roc_counts, verification_metrics  # noqa: E402

TARGET_S = 1.0


def best_of(func, repeat=3):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - start)
    return min(times), out


def pyeer_style_roc(genuine, impostor):
    """pyeer 0.5.6 calculate_roc, as it is written (tuples, sorted by score)."""
    scores = np.array(sorted(list(zip(genuine, [1] * len(genuine))) + list(zip(impostor, [0] * len(impostor))),
                           key=operator.itemgetter(0)))
    cumul = np.cumsum(scores[:, 1])
    thresholds, first = np.unique(scores[:, 0], return_index=True)
    fnm = cumul[first] - scores[first][:, 1]
    fm = len(impostor) - (first - fnm)
    return thresholds, fm, fnm


def per_threshold(genuine, impostor):
    """The obvious loop: FMR and FNMR at each unique score; EER by the pyeer rule."""
    thr = np.unique(np.concatenate([genuine, impostor]))
    fmr = np.array([(impostor >= t).mean() for t in thr])
    fnmr = np.array([(genuine < t).mean() for t in thr])
    t2 = int(np.flatnonzero(fmr <= fnmr)[0])
    t1 = t2 - 1 if fmr[t2] != fnmr[t2] and t2 else t2
    t = t1 if fmr[t1] + fnmr[t1] <= fmr[t2] + fnmr[t2] else t2
    return (fmr[t] + fnmr[t]) / 2, thr[t]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="scores of each kind (default 1e6)")
    parser.add_argument("--no-pyeer-style", action="store_true", help="skip pyeer's tuple sort (slow)")
    parser.add_argument("--subsample", type=int, default=3000, help="scores of each kind for the loop reference")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # cosine-like scores rounded as float32 gives, so there are ties as in real score files
    genuine = rng.normal(0.45, 0.12, args.n).astype(np.float32).astype(np.float64)
    impostor = rng.normal(0.02, 0.07, args.n).astype(np.float32).astype(np.float64)

    elapsed, metrics = best_of(lambda: verification_metrics(genuine, impostor))
    print(f"verification_metrics on {args.n:,} + {args.n:,} scores: {elapsed:.3f} s (best of 3); "
          f"target {TARGET_S:.1f} s -> {TARGET_S / elapsed:.1f}x under target")
    print(f"  EER {metrics['eer']:.6f} at {metrics['eer_th']:.6f}, FMR100 {metrics['fmr100']:.6f}, "
          f"FMR1000 {metrics['fmr1000']:.6f}, AUC {metrics['auc']:.6f}, d' {metrics['decidability']:.4f}")

    if not args.no_pyeer_style:
        start = time.perf_counter()
        thr_p, fm_p, fnm_p = pyeer_style_roc(genuine, impostor)
        pyeer_s = time.perf_counter() - start
        thr, fm, fnm = roc_counts(genuine, impostor)
        same = np.array_equal(thr, thr_p) and np.array_equal(fm, fm_p) and np.array_equal(fnm, fnm_p)
        print(f"pyeer 0.5.6 ROC step alone (tuple sort): {pyeer_s:.2f} s -> whole vectorised metrics "
              f"{pyeer_s / elapsed:.1f}x faster; identical ROC counts: {same}")

    k = args.subsample
    g, i = genuine[:k], impostor[:k]
    start = time.perf_counter()
    eer_ref, th_ref = per_threshold(g, i)
    loop_s = time.perf_counter() - start
    sub_s, sub = best_of(lambda: verification_metrics(g, i))
    print(f"per-threshold loop on {k:,} + {k:,}: {loop_s:.3f} s vs vectorised {sub_s * 1000:.2f} ms "
          f"({loop_s / sub_s:.0f}x); same EER and threshold: {eer_ref == sub['eer'] and th_ref == sub['eer_th']}")

    start = time.perf_counter()
    bootstrap_ci(genuine, impostor, 5, seed=1)
    per = (time.perf_counter() - start) / 5
    default = default_bootstrap(2 * args.n)
    print(f"bootstrap: {per:.3f} s per resample on {args.n:,} + {args.n:,}; the default {default} resamples "
          f"-> about {per * default:.0f} s")


if __name__ == "__main__":
    main()
