"""Plot mated vs non-mated similarity distributions (the replication package's script, on faceaudit).

    python analyze_embeddings.py INPUT.json --n_comparisons 10000

Writes Figures/<INPUT>_MatedVsNonmated_<n>.png under the working directory.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from faceaudit.cli import run_pair_script  # noqa: E402
from faceaudit.stages.variability import analyze_embeddings  # noqa: E402


def main(argv=None) -> int:
    return run_pair_script(analyze_embeddings, "Plot mated and non-mated similarity distributions.", argv)


if __name__ == "__main__":
    raise SystemExit(main())
