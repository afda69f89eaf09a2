"""``faceaudit variability``: stage 2, mated vs non-mated scores, metrics and figures."""
from __future__ import annotations

from pathlib import Path

from faceaudit.cli.common import add_skip_invalid, non_negative_int, positive_int, seed_type


def add(sub) -> None:
    p = sub.add_parser("variability", help="mated vs non-mated scores, metrics (EER, FMR100, FMR1000, d', FDR) and figures",
                       description="Sample mated and non-mated pairs, score them, and write the score files, "
                                   "both figures, the metrics CSV and a metrics JSON.")
    p.add_argument("input", type=Path, help="embedding file (.json/.jsonl/.npz)")
    p.add_argument("--n-comparisons", type=positive_int, default=10000,
                   help="pairs of each kind to sample, uniformly without replacement (default: 10000)")
    p.add_argument("--seed", type=seed_type, default=42, help="random seed for sampling and bootstrap (default: 42)")
    p.add_argument("--bootstrap", type=non_negative_int, default=None,
                   help="bootstrap resamples for the 95%% CIs; 0 skips them (default: 1000 up to 200k scores, "
                        "then fewer, at least 100, to bound the time)")
    p.add_argument("--out", type=Path, default=Path("."),
                   help="output folder for SimilarityScores/, Figures/, Figures_with_metrics/, Metrics/ (default: .)")
    p.add_argument("--exhaustive", action="store_true",
                   help="use every mated and non-mated pair instead of sampling (if they fit in memory)")
    add_skip_invalid(p)
    p.set_defaults(func=_run_variability)


def _run_variability(args) -> int:
    from faceaudit.stages.variability import run
    result = run(args.input, args.n_comparisons, args.out, seed=args.seed, bootstrap=args.bootstrap,
                 exhaustive=args.exhaustive, skip_invalid=args.skip_invalid, echo=print)
    for key, path in result["paths"].items():
        print(f"{key}: {path}")
    return 0
