"""Best match in CASIA of N sampled images of a dataset, as a distribution plot.

    python compare_embeddings.py INPUT.json --n_comparisons 10000 --casia_file CASIA.json

Writes <INPUT stem>_BestMatches_<n>.png and .pdf in the current folder. The sample is the
paper's (random.seed(42); random.sample); the search is exact (faceaudit.search) instead of a
per-query cosine_similarity loop, so the same numbers come out much faster.
"""
import sys
from pathlib import Path

try:
    import faceaudit  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceaudit.cli import casia_script_parser, run_guarded  # noqa: E402


def main(argv=None) -> int:
    parser = casia_script_parser("Find best matches in CASIA and plot similarity distribution")
    args = parser.parse_args(argv)
    return run_guarded(lambda: _run(args), Path(__file__).name)


def _run(args) -> int:
    from faceaudit.stages.leakage import best_matches, compare_embeddings_figure, load_query_and_reference
    from faceaudit.report.plots import save_figure

    query, casia = load_query_and_reference(args.input_file, args.casia_file)
    result = best_matches(query, casia, n_comparisons=args.n_comparisons, device=args.device)
    fig = compare_embeddings_figure(result.scores, Path(args.input_file).stem, Path(args.input_file).name)
    base = Path(f"{Path(args.input_file).stem}_BestMatches_{args.n_comparisons}")
    for path in save_figure(fig, base, formats=("png", "pdf"), dpi=300):
        print(f"Plot saved as: {path}")
    print(f"\nProcessing complete for {args.input_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
