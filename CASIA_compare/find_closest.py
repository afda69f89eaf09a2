"""The globally closest (highest-similarity) pairs between N sampled images of a dataset and CASIA.

    python find_closest.py INPUT.json --n_comparisons N --top_global 100 --casia_file CASIA.json

Writes <INPUT stem>_Top<K>Global_<n>.json in the current folder: "metadata" (input_file,
n_samples_compared, top_global_matches, total_pairs_considered = samples x CASIA size) and
"results" (rank, similarity_score, query_identity, query_image_name, query_path, casia_identity,
casia_image_name, casia_path). Positive similarities only, as the paper. Exact search; ties go
to the lower query row, then the lower CASIA row.
"""
import sys
from pathlib import Path

try:
    import faceaudit  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceaudit.cli import casia_script_parser, positive_int, run_guarded  # noqa: E402


def main(argv=None) -> int:
    parser = casia_script_parser("Find top N highest similarity pairs globally")
    parser.add_argument("--top_global", type=positive_int, default=100,
                        help="Number of highest similarity pairs to save globally (default: 100)")
    parser.add_argument("--batch_size", type=int, default=1000,
                        help="Accepted for compatibility; blocks are sized from the memory budget")
    parser.add_argument("--load_batch_size", type=int, default=50000,
                        help="Accepted for compatibility; files are read in one streaming pass")
    args = parser.parse_args(argv)
    return run_guarded(lambda: _run(args), Path(__file__).name)


def _run(args) -> int:
    from faceaudit.stages.closest import run_closest

    written = run_closest(args.input_file, args.casia_file, out_dir=".", top=args.top_global,
                          n_comparisons=args.n_comparisons, positive_only=True, device=args.device,
                          input_label=args.input_file, paths_csv=False)
    print(f"Results saved to: {written[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
