"""``faceaudit verify``, ``verification`` and ``report``: two-image checks, verification numbers as papers
report them (k-fold accuracy, TAR@FAR, ROC/DET), and many datasets' results on one page."""
from __future__ import annotations

from pathlib import Path

from faceaudit.cli.common import add_skip_invalid, cosine_type, non_negative_int, positive_int, seed_type
from faceaudit.errors import FaceauditError

RULE_HELP = ("how an operating point is read off the ROC for TAR@FAR: 'nearest' (pyeer: the FAR nearest the "
             "target, lowest threshold on ties) or 'at-most' (bob.measure: the highest TAR with FAR <= target); "
             "default: %(default)s")


def add(sub) -> None:
    from faceaudit.faces import ALIGNERS

    p = sub.add_parser(
        "verify", help="are two face photos the same person? (cosine score against a documented threshold)",
        description="Embed two images (or each pair of a CSV) and print the cosine score and the decision at the "
                    "threshold: --threshold, else the model's documented one (SFace: its FMR = 1e-3 point on "
                    "YuNet-aligned real faces), and where that threshold came from.")
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="two image files")
    p.add_argument("--pairs", type=Path, default=None,
                   help="CSV of image1,image2[,label] rows (optional header) to check at once")
    p.add_argument("--output", type=Path, default=None,
                   help="with --pairs: the results CSV (default: <pairs name>_verified.csv in the current folder)")
    p.add_argument("--arch", default="sface", help="architecture (default: %(default)s, fetched with "
                   "`faceaudit models fetch sface`; see `faceaudit models list`)")
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the architecture's in Models/)")
    p.add_argument("--align", choices=("none", *ALIGNERS), default="yunet",
                   help="detect and align the face first (default: %(default)s; 'none' for already aligned crops)")
    p.add_argument("--threshold", type=cosine_type, default=None,
                   help="decision threshold on the cosine score (default: the model's documented threshold)")
    p.add_argument("--models-dir", type=Path, default=Path("Models"),
                   help="where model files are (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--flip-tta", action="store_true", help="sum the embeddings of each image and its mirror image")
    p.add_argument("--skip-missing", action="store_true",
                   help="with --pairs: skip pairs whose image is missing, unreadable or shows no face (counted)")
    p.set_defaults(func=_run_verify)

    p = sub.add_parser(
        "verification", help="10-fold accuracy, F1 threshold, TAR@FAR, EER, ROC and DET of an embedding file",
        description="Verification numbers as face-recognition papers report them, on a pair protocol (LFW "
                    "pairs.txt, or a CSV path1,path2,label / identity1,image1,identity2,image2,label) or on "
                    "--sample N mated and N non-mated pairs in identity-disjoint folds. Writes Verification/"
                    "<stem>_verification.json and .csv (every number), _pairs.csv, _roc.csv and ROC / DET figures.")
    p.add_argument("input", type=Path, help="embedding file (.json/.jsonl/.npz)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--pairs", type=Path, default=None, help="pair protocol: LFW pairs.txt or a CSV")
    source.add_argument("--sample", type=positive_int, default=None,
                        help="sample N mated and N non-mated pairs in identity-disjoint folds (the default, N=10000)")
    p.add_argument("--folds", type=positive_int, default=None,
                   help="number of folds (default: the pairs file's own, else 10)")
    p.add_argument("--rule", choices=("nearest", "at-most"), default="nearest", help=RULE_HELP)
    p.add_argument("--threshold", type=cosine_type, default=None,
                   help="also report the rates at this fixed threshold (default: the model's documented threshold, "
                        "when the embeddings' metadata names a model that has one)")
    p.add_argument("--bootstrap", type=non_negative_int, default=None,
                   help="bootstrap resamples for the 95%% CIs of EER, FMR100, FMR1000, AUC ...; 0 skips them "
                        "(default: 1000 up to 200k scores, then fewer)")
    p.add_argument("--seed", type=seed_type, default=42, help="seed of fold assignment, sampling and bootstrap (default: 42)")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out (and count) pairs naming images that are not in the embeddings")
    p.add_argument("--out", type=Path, default=Path("."), help="output folder for Verification/ (default: .)")
    p.add_argument("--no-figures", action="store_true", help="skip the ROC and DET figures")
    add_skip_invalid(p)
    p.set_defaults(func=_run_verification)

    p = sub.add_parser(
        "report", help="many datasets on one page: one table and overlay figures from result folders",
        description="Gather every dataset's results (variability, verification, leakage) under the given output "
                    "folders into one table (datasets.csv / .md), one static page (report.html / report.md) and "
                    "overlay figures: ROC, DET, a grid of mated / non-mated densities, best matches.")
    p.add_argument("folders", type=Path, nargs="+", metavar="DIR", help="output folders of faceaudit runs")
    p.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: %(default)s)")
    p.add_argument("--title", default="faceaudit report", help="page title (default: %(default)s)")
    p.add_argument("--no-pdf", action="store_true", help="write the figures as PNG only (default: PNG and PDF)")
    p.set_defaults(func=_run_report)


def _run_verify(args) -> int:
    from faceaudit.stages.verify import verify_images, verify_pair_file

    if args.pairs is None and len(args.images) != 2:
        raise FaceauditError(f"give two images (got {len(args.images)}) or --pairs CSV")
    if args.pairs is not None and args.images:
        raise FaceauditError("give either two images or --pairs CSV, not both")
    if args.output is not None and args.pairs is None:
        raise FaceauditError("--output goes with --pairs")
    options = dict(arch=args.arch, weights=args.weights, threshold=args.threshold,
                   align=None if args.align == "none" else args.align, device=args.device,
                   models_dir=args.models_dir, flip_tta=args.flip_tta, skip_missing=args.skip_missing)
    if args.pairs is not None:
        output = args.output or Path(f"{args.pairs.stem}_verified.csv")
        result = verify_pair_file(args.pairs, output, **options)
        print(f"threshold {result['threshold']:.4f}: {result['threshold_source']}")
        print(f"wrote {result['output']}")
        return 0
    options["skip_missing"] = False
    result = verify_images([(str(args.images[0]), str(args.images[1]))], **options)
    score = float(result["scores"][0])
    aligned = f"faces aligned with {args.align}" if args.align != "none" else "images used as they are"
    print(f"score {score:.4f} (cosine similarity of {result['model']['arch']} embeddings; {aligned})")
    print(f"threshold {result['threshold']:.4f}: {result['threshold_source']}")
    print("same person" if result["same_person"][0] else "different people")
    return 0


def _run_verification(args) -> int:
    from faceaudit.stages.verification import run

    result = run(args.input, args.pairs, sample=args.sample, n_folds=args.folds, out_dir=args.out, rule=args.rule,
                 threshold=args.threshold, seed=args.seed, bootstrap=args.bootstrap, skip_missing=args.skip_missing,
                 skip_invalid=args.skip_invalid, figures=not args.no_figures, echo=print)
    paths = result["paths"]
    for path in [paths["json"], paths["csv"], paths["pairs"], paths["roc"], *paths["figures"]]:
        print(f"wrote {path}")
    return 0


def _run_report(args) -> int:
    from faceaudit.stages.report import run_report

    run_report(args.folders, args.out, title=args.title, formats=("png",) if args.no_pdf else ("png", "pdf"), echo=print)
    return 0
