"""Verification numbers (k-fold accuracy and F1 thresholds, TAR@FAR, ROC AUC) on N pairs: our sorted-score
sweep against a scikit-learn-based reference doing the same job, timed in the same run.

The reference chooses each fold's thresholds with ``roc_curve`` / ``precision_recall_curve`` on the
other folds, scores the held-out fold with ``accuracy_score`` / ``precision_recall_fscore_support``,
reads TAR@FAR off ``roc_curve`` of all pairs and takes ``roc_auc_score``. The answers are compared.

    python benchmarks/bench_verification.py [--n 10000000] [--quick] [--no-reference]
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceaudit.evaluate.verification import FAR_TARGETS, clopper_pearson, evaluate  # noqa: E402

FOLDS = 10


def make_pairs(n: int, seed: int = 0):
    """n pairs, half mated; cosine-like scores rounded as float32 (ties, as in real score files)."""
    rng = np.random.default_rng(seed)
    half = n // 2
    scores = np.concatenate([rng.normal(0.45, 0.12, half), rng.normal(0.02, 0.07, n - half)])
    scores = scores.astype(np.float32).astype(np.float64)
    mated = np.arange(n) < half
    return scores, mated, rng.integers(0, FOLDS, n)


def sklearn_reference(scores, mated, folds):
    """The same numbers with scikit-learn's curves and metrics."""
    from sklearn.metrics import (accuracy_score, precision_recall_curve, precision_recall_fscore_support,
                                 roc_auc_score, roc_curve)

    out = {"accuracy_thresholds": [], "accuracy": [], "f1_thresholds": [], "f1": []}
    for fold in range(FOLDS):
        train, test = folds != fold, folds == fold
        y, s = mated[train], scores[train]
        fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
        positives, negatives = y.sum(), y.size - y.sum()
        accuracy = (tpr * positives + (1 - fpr) * negatives)[1:]  # [0] is the +inf threshold
        best = len(accuracy) - 1 - np.argmax(accuracy[::-1])  # thresholds descend: the lowest among the best
        threshold = thresholds[1:][best]
        out["accuracy_thresholds"].append(float(threshold))
        out["accuracy"].append(accuracy_score(mated[test], scores[test] >= threshold))
        precision, recall, pr_thresholds = precision_recall_curve(y, s)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
        threshold = pr_thresholds[np.argmax(f1)]
        out["f1_thresholds"].append(float(threshold))
        out["f1"].append(precision_recall_fscore_support(mated[test], scores[test] >= threshold, average="binary",
                                                         zero_division=0)[2])
    fpr, tpr, thresholds = roc_curve(mated, scores, drop_intermediate=False)
    out["tar"] = [float(tpr[fpr <= target].max()) for target in FAR_TARGETS]
    out["auc"] = roc_auc_score(mated, scores)
    return out


def timed(func):
    """(wall seconds, CPU seconds of this process, result): the CPU time is what a quiet machine would show
    as wall time, since both sides run on one thread."""
    start, cpu = time.perf_counter(), time.process_time()
    result = func()
    return time.perf_counter() - start, time.process_time() - cpu, result


def compare(ours: dict, ref: dict) -> str:
    same_acc = [r["threshold"] for r in ours["accuracy"]["folds"]] == ref["accuracy_thresholds"]
    same_f1 = np.allclose([r["f1"] for r in ours["f1"]["folds"]], ref["f1"], rtol=0, atol=1e-12)
    tars = [p.get("tar") for p in ours["tar_at_far"]]
    same_tar = all(t is None or abs(t - r) <= 1e-12 for t, r in zip(tars, ref["tar"]))
    same_auc = abs(ours["roc_auc"] - ref["auc"]) < 1e-9
    return (f"same fold accuracy thresholds: {same_acc}; same held-out F1: {same_f1}; "
            f"same TAR@FAR (at-most): {same_tar}; same ROC AUC: {same_auc}")


def run(n: int, reference: bool) -> None:
    scores, mated, folds = make_pairs(n)
    clopper_pearson(1, 2)  # imports scipy.special and scikit-learn outside the timing
    import sklearn.metrics  # noqa: F401
    ours_s, ours_cpu, ours = timed(lambda: evaluate(scores, mated, folds, FOLDS, rule="at-most"))
    print(f"{n:,} pairs, {FOLDS} folds: ours {ours_s:.3f} s (CPU {ours_cpu:.3f} s)")
    if reference:
        ref_s, ref_cpu, ref = timed(lambda: sklearn_reference(scores, mated, folds))
        print(f"  scikit-learn-based reference {ref_s:.3f} s (CPU {ref_cpu:.3f} s) -> ours {ref_s / ours_s:.1f}x "
              f"faster in wall time, {ref_cpu / ours_cpu:.1f}x in CPU time")
        print("  " + compare(ours, ref))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="pairs in the large run (default 10M)")
    parser.add_argument("--quick", action="store_true", help="1M pairs instead of --n")
    parser.add_argument("--no-reference", action="store_true", help="time ours only (the reference is slow)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    run(6000, True)  # LFW-sized
    run(1_000_000 if args.quick else args.n, not args.no_reference)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
