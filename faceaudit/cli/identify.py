"""``faceaudit identify`` (rank-k, CMC, KNN, DIR at FPIR) and ``faceaudit shards`` (reference sets
larger than RAM as memory-mapped shards)."""
from __future__ import annotations

import argparse
from pathlib import Path

from faceaudit.cli.common import add_index_options, add_search_options, add_skip_invalid, index_options, positive_int


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def rank_list(text: str) -> list[int]:
    try:
        ranks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ranks") from None
    if not ranks or min(ranks) <= 0:
        raise argparse.ArgumentTypeError(f"ranks must be > 0, got {text!r}")
    return ranks


def add(sub) -> None:
    from faceaudit.evaluate.identification import VOTES
    from faceaudit.io.shards import DEFAULT_ROWS_PER_SHARD
    from faceaudit.stages.identify import DEFAULT_CMC_RANKS

    p = sub.add_parser(
        "identify", help="identification: rank-k accuracy, CMC, KNN accuracy, open-set DIR at FPIR",
        description="Closed-set identification (rank-k accuracy and the CMC curve), the challenge notebook's "
                    "k-nearest-neighbour accuracy, and open-set DIR at FPIR 1e-1/1e-2/1e-3. By default one "
                    "seeded random image per identity is the gallery and the rest are probes. Writes "
                    "<stem>_identification.json/.md/.html, <stem>_rank_accuracy.csv/.md, <stem>_cmc.csv/.png/.pdf, "
                    "<stem>_dir_at_fpir.csv/.md (open set) and <stem>_probes.csv. Rank = 1 + the number of other "
                    "gallery identities scoring >= the probe's own (ties count against the probe).")
    p.add_argument("embeddings", type=Path, help="embeddings (.json/.jsonl/.npz): split, or all probes with --gallery")
    p.add_argument("--gallery", type=Path, default=None,
                   help="a separate gallery: embedding file or shard folder (faceaudit shards); every embedding "
                        "is then a probe, and probes of identities the gallery lacks are the open-set probes")
    p.add_argument("--gallery-per-identity", type=positive_int, default=1, metavar="N",
                   help="gallery images per identity, chosen at random (default: %(default)s)")
    p.add_argument("--split-images", type=fraction, default=None, metavar="FRACTION",
                   help="instead, split all images at random: FRACTION to the gallery, the rest probes "
                        "(the challenge notebook: 0.7, with --knn 10)")
    p.add_argument("--ranks", type=rank_list, default=None,
                   help="ranks reported, comma-separated (default: 1,5,10, those the gallery has identities for)")
    p.add_argument("--cmc-ranks", type=positive_int, default=DEFAULT_CMC_RANKS,
                   help="length of the CMC curve (default: %(default)s, at most the gallery's identities)")
    p.add_argument("--knn", type=positive_int, default=None, metavar="K",
                   help="also the accuracy of a K-nearest-neighbour vote (scikit-learn's KNeighborsClassifier, "
                        "cosine)")
    p.add_argument("--vote", choices=VOTES, default="majority",
                   help="KNN vote: majority (uniform) or weighted by 1 / cosine distance (default: %(default)s)")
    p.add_argument("--open-set", type=fraction, default=None, metavar="FRACTION",
                   help="hold this share of identities out of the gallery and report DIR at FPIR 1e-1, 1e-2, 1e-3")
    p.add_argument("--out", type=Path, default=Path("identify_out"), help="output folder (default: %(default)s)")
    add_index_options(p)
    add_search_options(p)
    p.set_defaults(func=_run_identify)

    p = sub.add_parser(
        "shards", help="write embedding files as memory-mapped .npy shards (reference sets larger than RAM)",
        description="Write the rows of one or more embedding files, in order, as a shard folder: shards.json and "
                    "part-NNNNN.npy (float32 unit vectors) with .identities.npy and .image_names.npy beside each. "
                    "leakage, closest (--reference) and identify (--gallery) read such a folder piece by piece. "
                    "One input file is in memory at a time.")
    p.add_argument("inputs", type=Path, nargs="+", help="embedding files (.json/.jsonl/.npz)")
    p.add_argument("--out", type=Path, required=True, help="the shard folder to write")
    p.add_argument("--rows-per-shard", type=positive_int, default=DEFAULT_ROWS_PER_SHARD,
                   help="rows per shard (default: %(default)s, 2 GiB at 512 dimensions)")
    p.add_argument("--append", action="store_true", help="add the rows after those of an existing shard folder")
    add_skip_invalid(p)
    p.set_defaults(func=_run_shards)


def _run_identify(args) -> int:
    from faceaudit.stages.identify import format_summary, run_identify

    summary = run_identify(args.embeddings, gallery_file=args.gallery, gallery_per_identity=args.gallery_per_identity,
                           split_images=args.split_images, ranks=args.ranks, cmc_ranks=args.cmc_ranks,
                           knn=args.knn, vote=args.vote, open_set=args.open_set, index=args.index,
                           options=index_options(args), out_dir=args.out, skip_invalid=args.skip_invalid)
    print(format_summary(summary))
    return 0


def _run_shards(args) -> int:
    from faceaudit.io.embeddings import load_embeddings
    from faceaudit.io.shards import open_shards, write_shards

    sets = (load_embeddings(path, skip_invalid=args.skip_invalid) for path in args.inputs)
    manifest = write_shards(sets, args.out, rows_per_shard=args.rows_per_shard, append=args.append)
    written = open_shards(args.out, check_norms=False)
    print(f"wrote {manifest}: {len(written):,} rows x {written.dim} in {len(written.vectors.parts())} shard(s)")
    return 0
