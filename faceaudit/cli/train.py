"""``faceaudit train`` (a recognition network on a face dataset, measured on held-out identities after
every epoch) and ``faceaudit export`` (its backbone in fp16 and int8, with a size / speed / accuracy table)."""
from __future__ import annotations

import argparse
from pathlib import Path

from faceaudit.cli.common import positive_int, seed_type


def _val_identities(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count or a fraction") from None
    if value.is_integer() and "." not in text and value >= 0:
        return int(value)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"a count >= 0 or a fraction in (0, 1), got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add(sub) -> None:
    from faceaudit.faces import ALIGNERS
    from faceaudit.train.augment import AUGMENTATIONS, NOTEBOOK
    from faceaudit.train.loop import SCHEDULES
    from faceaudit.train.losses import LOSSES

    p = sub.add_parser(
        "train", help="train a recognition network on a face dataset; verification on held-out identities per epoch",
        description="Train a face-recognition backbone on DATASET (a folder of identity sub-folders, or a .zip/.tar "
                    "of one, read in place) with a margin (ArcFace, CosFace) or contrastive loss, holding out a "
                    "seeded set of identities on which the EER, k-fold accuracy and F1 threshold are measured after "
                    "every epoch. RUN_DIR gets backbone.pth (InsightFace layout: faceaudit embed --arch ARCH "
                    "--weights RUN_DIR/backbone.pth), checkpoint.pth, metrics.csv, curves.png/.pdf, summary.json. "
                    "A killed run resumes from its last finished epoch when the same command is run again. "
                    "Multi-GPU: torchrun --nproc_per_node N -m faceaudit train ...")
    p.add_argument("dataset", type=Path, help="dataset folder, .zip, .tar or .tar.gz")
    p.add_argument("-o", "--output", dest="run_dir", type=Path, required=True, help="the run folder (RUN_DIR)")
    p.add_argument("--arch", default="mobilefacenet", help="backbone (default: %(default)s; iresnet18/34/50/100/200, "
                   "any trainable architecture of `faceaudit models list`)")
    p.add_argument("--loss", choices=LOSSES, default="arcface", help="objective (default: %(default)s)")
    p.add_argument("--scale", type=float, default=None, help="logit scale s of the margin losses (default: 16)")
    p.add_argument("--margin", type=float, default=None,
                   help="margin m (default: arcface 0.3 rad, cosface 0.35, contrastive 1.0 in unit-vector distance)")
    p.add_argument("--epochs", type=positive_int, default=15, help="epochs (default: %(default)s = hold + t-max)")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="images per batch per process, or pairs with --loss contrastive (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default: %(default)s)")
    p.add_argument("--min-lr", type=_non_negative_float, default=1e-3, help="the cosine's end (default: %(default)s)")
    p.add_argument("--momentum", type=_non_negative_float, default=0.5, help="SGD momentum (default: %(default)s)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.0, help="(default: %(default)s)")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                   help="cosine: --lr for --hold epochs, then a half cosine to --min-lr over --t-max epochs "
                        "(default: %(default)s)")
    p.add_argument("--hold", type=int, default=10, help="epochs at --lr before the cosine (default: %(default)s)")
    p.add_argument("--t-max", type=positive_int, default=5, help="epochs of the cosine (default: %(default)s)")
    p.add_argument("--augment", default="notebook",
                   help=f"one augmentation per image, drawn from this comma-separated list: {', '.join(AUGMENTATIONS)}; "
                        f"'notebook' = {','.join(NOTEBOOK)} (default); 'none'")
    p.add_argument("--val-identities", type=_val_identities, default=0.1,
                   help="identities held out for evaluation: a count or a fraction (default: %(default)s; "
                        "at least 4, or 0 for no evaluation)")
    p.add_argument("--val-pairs", type=positive_int, default=10000,
                   help="mated and non-mated pairs of each evaluation set (default: %(default)s; small sets use all)")
    p.add_argument("--eval-images", type=positive_int, default=2000,
                   help="images of whole identities embedded per evaluation set each epoch (default: %(default)s)")
    p.add_argument("--pairs-per-epoch", type=positive_int, default=None,
                   help="--loss contrastive: positive pairs per epoch (default: every mated pair, as the Siamese tool)")
    p.add_argument("--init", type=Path, default=None,
                   help="fine-tune from this backbone (any file `faceaudit embed --arch ARCH --weights` loads, e.g. "
                        "--arch arcface-mbf --init Models/w600k_mbf.onnx); the margin head starts at each training "
                        "identity's mean embedding")
    p.add_argument("--align", choices=("none", *ALIGNERS), default="none",
                   help="detect and align faces first (default: none: the images are used as they are)")
    p.add_argument("--models-dir", type=Path, default=Path("Models"), help="aligner model files (default: %(default)s)")
    p.add_argument("--seed", type=seed_type, default=42, help="split, order, augmentation and init seed (default: 42)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=None, help="augmentation processes (default: 0 on CPU, up to 8 on CUDA)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: every core)")
    p.add_argument("--overwrite", action="store_true", help="start over in a RUN_DIR that holds another run")
    p.add_argument("--no-figures", action="store_true", help="no curves figure")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_train)

    e = sub.add_parser(
        "export", help="a trained backbone in fp16 and int8, with size, speed and verification against fp32",
        description="Write RUN_DIR/export/backbone_fp16.pth (half-precision state_dict) and backbone_int8.pt "
                    "(post-training static int8 quantization for CPU, calibrated on a sample of training faces; "
                    "TorchScript: faceaudit embed --arch torchscript --weights ...), and a table (export.csv/.md) "
                    "of size on disk, images per second on this machine and verification on the held-out "
                    "identities of the run, against the fp32 backbone.")
    e.add_argument("run_dir", type=Path, help="a folder made by faceaudit train")
    e.add_argument("--precision", nargs="+", choices=("fp16", "int8"), default=["fp16", "int8"],
                   help="formats to export (default: both)")
    e.add_argument("--calibration", type=positive_int, default=256,
                   help="training faces that calibrate int8 (default: %(default)s)")
    e.add_argument("--batch-size", type=positive_int, default=32, help="batch of the speed test (default: %(default)s)")
    e.add_argument("--seconds", type=float, default=5.0, help="time spent timing each format (default: %(default)s)")
    e.add_argument("--device", default="cpu", help="where fp32 and fp16 are timed (int8 is CPU-only; default: cpu)")
    e.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: every core)")
    e.set_defaults(func=_run_export)


def _run_train(args) -> int:
    from faceaudit.stages.train import run

    run(args.dataset, args.run_dir, arch=args.arch, loss=args.loss, scale=args.scale, margin=args.margin,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr, momentum=args.momentum,
        weight_decay=args.weight_decay, schedule=args.schedule, hold=args.hold, t_max=args.t_max,
        augment=args.augment, val_identities=args.val_identities, val_pairs=args.val_pairs,
        eval_images=args.eval_images, pairs_per_epoch=args.pairs_per_epoch, init=args.init,
        align=args.align, models_dir=args.models_dir, seed=args.seed, device=args.device, workers=args.workers,
        threads=args.threads, overwrite=args.overwrite, progress=not args.no_progress, figures=not args.no_figures)
    return 0


def _run_export(args) -> int:
    from faceaudit.stages.export import run

    run(args.run_dir, precisions=args.precision, calibration=args.calibration, batch_size=args.batch_size,
        seconds=args.seconds, device=args.device, threads=args.threads)
    return 0
