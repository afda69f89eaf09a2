"""Side-by-side figure of the closest pairs: CASIA images on top, the dataset's images below.

    python plot_similar.py SIMILAR_IMAGES.csv --casia-file CASIA.zip --other-file OTHER.zip --samples 5

The CSV has query_path, casia_path, similarity_score (get_paths.sh). The image sets may be
.zip, .tar, .tar.gz/.tgz archives or folders; members are read in place (nothing is extracted)
and unsafe members are refused. Writes <output-dir>/comparison_<OTHER>_<n>_samples.png.
"""
import argparse
import sys
from pathlib import Path

try:
    import faceaudit  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceaudit.cli import run_guarded  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Generate image similarity comparison figures")
    parser.add_argument("csv_file", help="Path to CSV file with similarity data")
    parser.add_argument("--casia-file", default="CASIA.zip", help="Path to CASIA archive file (default: CASIA.zip)")
    parser.add_argument("--other-file", required=True, help="Path to other archive file")
    parser.add_argument("--samples", type=int, default=5, help="Number of samples to process (default: 5)")
    parser.add_argument("--output-dir", default="comparison_figures",
                        help="Output directory for figures (default: comparison_figures)")
    args = parser.parse_args(argv)
    return run_guarded(lambda: _run(args), Path(__file__).name)


def _run(args) -> int:
    from faceaudit.report.grid import pairs_figure, read_pairs_csv

    pairs = read_pairs_csv(args.csv_file, args.samples)
    for i, pair in enumerate(pairs, 1):
        print(f"Sample {i}/{len(pairs)}: query {pair.query_path}  CASIA {pair.reference_path}  "
              f"similarity {pair.score:.4f}")
    path = pairs_figure(pairs, args.casia_file, args.other_file, args.output_dir, samples=args.samples)
    print(f"Created comparison grid: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
