"""Best match in CASIA of N sampled images of a dataset, saved as values.

    python compute_similarities.py INPUT.json --n_comparisons 10000 --casia_file CASIA.json

Writes SimilarityScores/<INPUT stem>_BestMatches_<n>.txt (one best-match similarity a line,
6 decimals, in sampling order, as the paper) and SimilarityScores/<INPUT stem>_BestMatches_<n>.csv
(sample_index, sample_identity, sample_image_name, best_match_index, best_match_identity,
best_match_image_name, similarity: the format of the paper's published Best_Matches files).
"""
import sys
from pathlib import Path

try:
    import faceaudit  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceaudit.cli import casia_script_parser, run_guarded  # noqa: E402


def main(argv=None) -> int:
    parser = casia_script_parser("Find best matches in CASIA and save similarity scores")
    args = parser.parse_args(argv)
    return run_guarded(lambda: _run(args), Path(__file__).name)


def _run(args) -> int:
    from faceaudit.io.files import write_scores
    from faceaudit.stages.leakage import best_matches, load_query_and_reference, write_best_matches_csv

    query, casia = load_query_and_reference(args.input_file, args.casia_file)
    base = Path("SimilarityScores") / f"{Path(args.input_file).stem}_BestMatches_{args.n_comparisons}"
    result = best_matches(query, casia, n_comparisons=args.n_comparisons, device=args.device,
                          checkpoint=base.with_name(base.name + ".partial.npz"))
    txt = write_scores(base.with_name(base.name + ".txt"), result.scores, decimals=6)
    print(f"Similarity scores saved to: {txt}")
    csv_path = write_best_matches_csv(base.with_name(base.name + ".csv"), result, query, casia)
    print(f"Best matches saved to: {csv_path}")
    print(f"\nProcessing complete for {args.input_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
