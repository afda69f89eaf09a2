"""Compute mated and non-mated similarity scores (the replication package's script, on faceaudit).

    python compute_similarities.py INPUT.json --n_comparisons 10000

Writes SimilarityScores/<INPUT>_mated_similarities.txt and ..._non_mated_similarities.txt
under the working directory. Pairs are drawn uniformly without replacement, seeded.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from faceaudit.cli import run_pair_script  # noqa: E402
from faceaudit.stages.variability import compute_similarities  # noqa: E402


def main(argv=None) -> int:
    return run_pair_script(compute_similarities, "Compute mated and non-mated similarity scores.", argv)


if __name__ == "__main__":
    raise SystemExit(main())
