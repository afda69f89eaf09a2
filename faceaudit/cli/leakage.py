"""``faceaudit leakage``, ``closest`` and ``pairs-figure``: stage 3, identity leakage against a reference set."""
from __future__ import annotations

from pathlib import Path

from faceaudit.cli.common import (add_index_options, add_search_options, cosine_type, index_options, positive_int,
                                  search_settings)
from faceaudit.errors import FaceauditError


def add(sub) -> None:
    p = sub.add_parser(
        "leakage", help="best match of every query in a reference set, with a leakage summary",
        description="For a sample of QUERY's images (seed 42, as the paper), the most similar image of the "
                    "reference set (exact search). Writes <stem>_BestMatches_<n>.txt/.csv/.png/.pdf and "
                    "<stem>_leakage_summary.json/.csv (mean, median, 90/99/99.9 %% quantiles, share >= each "
                    "threshold).")
    p.add_argument("query", type=Path, nargs="+",
                   help="query embeddings (.json/.jsonl/.npz), e.g. a synthetic dataset; several files give a "
                        "combined figure and summary table too")
    p.add_argument("--reference", type=Path, required=True,
                   help="reference embeddings, e.g. CASIA-WebFace: a file, or a shard folder (faceaudit shards) "
                        "for sets larger than RAM")
    p.add_argument("--n-comparisons", type=positive_int, default=10000,
                   help="queries sampled (default: %(default)s; all when the set is smaller)")
    p.add_argument("--all", dest="n_comparisons", action="store_const", const=None,
                   help="use every query, in file order")
    p.add_argument("--threshold", type=cosine_type, action="extend", nargs="+", default=[], metavar="T",
                   help="report the share of best matches >= T (repeatable), e.g. the model's FMR1000 threshold")
    p.add_argument("--flag-threshold", type=cosine_type, default=None, metavar="T",
                   help="write <stem>_identity_flags.csv: each query identity, its highest best match, and "
                        "whether any of its images reaches T (flagged as leaked)")
    p.add_argument("--out", type=Path, default=Path("leakage_out"), help="output folder (default: %(default)s)")
    add_index_options(p)
    add_search_options(p)
    p.set_defaults(func=_run_leakage)

    p = sub.add_parser(
        "closest", help="the globally closest query x reference pairs (paper's Top<K>Global JSON)",
        description="The K highest-similarity query x reference pairs. Writes <stem>_Top<K>Global_<n>.json "
                    "(the paper's schema) and <stem>_Top<K>Global_<n>_matches.csv (query_path,casia_path,"
                    "similarity_score, as get_paths.sh).")
    p.add_argument("query", type=Path, help="query embeddings (.json/.jsonl/.npz)")
    p.add_argument("--reference", type=Path, required=True,
                   help="reference embeddings, e.g. CASIA-WebFace: a file or a shard folder")
    p.add_argument("--n-comparisons", type=positive_int, default=None,
                   help="queries sampled with seed 42 (default: all)")
    p.add_argument("--top", type=positive_int, default=100, help="K, the number of pairs (default: %(default)s)")
    p.add_argument("--positive-only", action="store_true",
                   help="only pairs with a similarity > 0, as the paper's find_closest.py")
    p.add_argument("--out", type=Path, default=Path("."), help="output folder (default: the current folder)")
    add_index_options(p)
    add_search_options(p)
    p.set_defaults(func=_run_closest)

    p = sub.add_parser(
        "pairs-figure", help="grid of closest pairs, images read from folders or archives",
        description="Reference images on top, query images below, the similarity between them, for the first "
                    "K rows of a query_path,casia_path,similarity_score CSV. Images are read in place from "
                    "folders, .zip, .tar or .tar.gz/.tgz archives; a missing one is drawn as 'Image not found'.")
    p.add_argument("csv", type=Path, help="CSV with query_path, casia_path, similarity_score")
    p.add_argument("--reference-images", type=Path, required=True, help="reference images: folder or archive")
    p.add_argument("--query-images", type=Path, required=True, help="query images: folder or archive")
    p.add_argument("--samples", type=positive_int, default=5, help="pairs drawn (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("comparison_figures"),
                   help="output folder (default: %(default)s)")
    p.set_defaults(func=_run_pairs_figure)


def _run_leakage(args) -> int:
    from faceaudit.io.shards import load_reference_set
    from faceaudit.stages.leakage import format_summary, run_leakage, write_combined

    stems = [q.stem for q in args.query]
    if len(set(stems)) != len(stems):
        raise FaceauditError("query files must have different names (their outputs are named after them)")
    reference = load_reference_set(args.reference, skip_invalid=args.skip_invalid)
    all_stats, all_scores = [], []
    for query in args.query:
        stats, scores = run_leakage(
            query, args.reference, out_dir=args.out, n_comparisons=args.n_comparisons, thresholds=args.threshold,
            seed=args.seed, skip_invalid=args.skip_invalid, **search_settings(args), reference=reference,
            return_scores=True, flag_threshold=args.flag_threshold, index=args.index, options=index_options(args))
        print(format_summary(stats))
        all_stats.append(stats)
        all_scores.append(scores)
    if len(all_stats) > 1:
        for path in write_combined(args.out, all_stats, all_scores, args.threshold):
            print(f"wrote {path}")
    return 0


def _run_closest(args) -> int:
    from faceaudit.stages.closest import run_closest

    written = run_closest(args.query, args.reference, out_dir=args.out, top=args.top,
                          n_comparisons=args.n_comparisons, positive_only=args.positive_only, seed=args.seed,
                          skip_invalid=args.skip_invalid, **search_settings(args), index=args.index,
                          options=index_options(args))
    for path in written:
        print(f"wrote {path}")
    return 0


def _run_pairs_figure(args) -> int:
    from faceaudit.report.grid import pairs_figure

    path = pairs_figure(args.csv, args.reference_images, args.query_images, args.out, samples=args.samples)
    print(f"wrote {path}")
    return 0
