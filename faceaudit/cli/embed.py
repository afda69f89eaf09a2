"""``faceaudit embed``: stage 1, one embedding per image of a dataset folder or archive."""
from __future__ import annotations

import argparse
from pathlib import Path

from faceaudit.checks import EMBED_PRECISIONS
from faceaudit.cli.common import positive_int


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


def _input_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        size = tuple(int(part) for part in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size HxW (e.g. 112x112) or N")
    return size


def add(sub) -> None:
    from faceaudit.faces import ALIGNERS

    p = sub.add_parser(
        "embed", help="compute one embedding per image of a dataset folder or archive",
        description="One L2-normalised embedding per image of DATASET (a folder of identity sub-folders, "
                    "or a .zip/.tar/.tar.gz of one, read in place), written as the paper's JSON Lines "
                    "(or .npz). An interrupted run resumes when the same command is run again; "
                    "unreadable images are listed in OUTPUT.errors.tsv. Several GPUs (or processes): "
                    "torchrun --nproc-per-node N -m faceaudit embed ... writes the same output.")
    p.add_argument("dataset", type=Path, help="dataset folder, .zip, .tar or .tar.gz")
    p.add_argument("-o", "--output", type=Path, default=Path("embeddings.jsonl"),
                   help="output .jsonl/.json (paper format, + .meta.json sidecar) or .npz "
                        "(default: %(default)s)")
    p.add_argument("--arch", default="iresnet100", help="architecture (default: %(default)s; "
                   "see `faceaudit models`)")
    p.add_argument("--weights", type=Path, default=None,
                   help="weights file (default: the architecture's file in Models/, e.g. "
                        "Models/ArcFace_R100_MS1MV3.pth for iresnet100; required by --arch onnx and torchscript)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=EMBED_PRECISIONS, default="fp32",
                   help="fp32 (default: float32 with TF32 off, the CPU's numbers on every device); on CUDA "
                        "also tf32, bf16 or fp16 for speed (an fp16 batch with NaN/inf is redone in fp32)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per batch (default: 64 on CPU, 256 on CUDA)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: 1 on CPU, up to 8 on CUDA; 0 decodes in-process)")
    p.add_argument("--flip-tta", action="store_true",
                   help="sum the embeddings of each image and its mirror image (InsightFace evaluation)")
    p.add_argument("--align", choices=("none", *ALIGNERS), default="none",
                   help="detect the largest face and warp it to the ArcFace template first (yunet: OpenCV's YuNet; "
                        "scrfd: InsightFace's SCRFD); images without a face are listed as errors")
    onnx = p.add_argument_group("--arch onnx", "what the ONNX graph's own input size and normalisation are "
                                               "replaced with (recorded in the output's metadata)")
    onnx.add_argument("--input-size", type=_input_size, default=None, metavar="HxW",
                      help="input height x width, e.g. 112x112 or 112 (default: the graph's, else 112x112)")
    onnx.add_argument("--input-mean", type=float, default=None, metavar="M",
                      help="the network sees (pixel - M) / S for pixels 0..255 (default: 127.5, or 0 when the graph "
                           "starts with its own Sub and Mul)")
    onnx.add_argument("--input-std", type=float, default=None, metavar="S",
                      help="see --input-mean (default: 127.5, or 1 when the graph normalises itself)")
    onnx.add_argument("--channel-order", choices=("RGB", "BGR"), default=None,
                      help="channel order the network expects (default: RGB, as InsightFace; AdaFace wants BGR)")
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
        progress=not args.no_progress, precision=args.precision,
        preprocessing={"input_size": args.input_size, "mean": args.input_mean, "std": args.input_std,
                       "channel_order": args.channel_order})
    if summary.get("rank", 0) == 0:  # under torchrun, rank 0 speaks for the run
        print(format_summary(summary))
    return 0
