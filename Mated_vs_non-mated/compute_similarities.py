"""Compute mated and non-mated similarity scores (the replication package's script, on faceaudit).

    python compute_similarities.py INPUT.json --n_comparisons 10000

Writes SimilarityScores/<INPUT>_mated_similarities.txt and ..._non_mated_similarities.txt
under the working directory. Pairs are drawn uniformly without replacement, seeded.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from faceaudit.cli import positive_int, run_guarded  # noqa: E402
from faceaudit.variability import DEFAULT_N_COMPARISONS, compute_similarities  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Compute mated and non-mated similarity scores.")
    parser.add_argument("json_file_path", type=str, help="Path to the input JSON file.")
    parser.add_argument("--n_comparisons", type=positive_int, default=DEFAULT_N_COMPARISONS,
                        help=f"Number of comparisons to compute (default: {DEFAULT_N_COMPARISONS})")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--exhaustive", action="store_true", help="use every pair instead of sampling")
    parser.add_argument("--skip-invalid", action="store_true", help="skip malformed lines instead of failing")
    args = parser.parse_args(argv)

    def work() -> int:
        compute_similarities(args.json_file_path, args.n_comparisons, ".", args.seed,
                             exhaustive=args.exhaustive, skip_invalid=args.skip_invalid)
        return 0

    return run_guarded(work, parser.prog)


if __name__ == "__main__":
    raise SystemExit(main())
