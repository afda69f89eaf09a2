"""Metrics and threshold figures for every score-file pair in ./SimilarityScores (replication package).

    python analyze_embeddings_with_metrics.py

Prints EER, FMR100, FMR1000 (pyeer 0.5.6 definitions) and more, writes
Figures_with_metrics/big_<name>_MatedVsNonmated.pdf/.png and Metrics/All_Datasets_metrics.csv.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from faceaudit.cli import run_guarded, seed_type  # noqa: E402
from faceaudit.stages.variability import analyze_score_dir  # noqa: E402


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Metrics and figures for every pair of score files.")
    parser.add_argument("--bootstrap", type=_non_negative, default=None,
                        help="bootstrap resamples for 95%% CIs; 0 skips them "
                             "(default: 1000 up to 200k scores, then fewer, at least 100)")
    parser.add_argument("--seed", type=seed_type, default=42, help="bootstrap seed (default: 42)")
    args = parser.parse_args(argv)

    def work() -> int:
        analyze_score_dir(".", bootstrap=args.bootstrap, seed=args.seed)
        return 0

    return run_guarded(work, parser.prog)


if __name__ == "__main__":
    raise SystemExit(main())
