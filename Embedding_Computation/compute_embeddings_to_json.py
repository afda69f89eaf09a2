"""The paper's embedding script: one ArcFace embedding per image of ./Dataset -> ./embeddings.json.

With no arguments it does what the replication package's script did: reads the
weights ``./Models/ArcFace_R100_MS1MV3.pth`` and the images of ``./Dataset/``
(one sub-folder per identity), and writes ``./embeddings.json``: one
``{"identity", "image_name", "embedding"}`` JSON object a line, values rounded
to 5 decimals. Paths are relative to the working directory.

Unlike the original it runs in batches (all cores, or the GPU; fp32 unless ``--precision``
says otherwise), reads
``.zip``/``.tar.gz`` datasets in place, lists unreadable images in
``embeddings.json.errors.tsv`` instead of stopping, and resumes an interrupted
run when started again (``--overwrite`` starts over, as the original always did).
It is a thin wrapper over ``faceaudit embed`` (``faceaudit.embed.embed_dataset``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import faceaudit  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceaudit.checks import EMBED_PRECISIONS  # noqa: E402
from faceaudit.cli import positive_int, run_guarded  # noqa: E402

# the original script's constants
FOLDER_PATH = "Models"
MODEL_NAME = "ArcFace_R100_MS1MV3.pth"
DATASET_PATH = "Dataset"
OUTPUT_JSON = "embeddings.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Compute one L2-normalised embedding per image of a dataset (paper's stage 1).")
    parser.add_argument("--model_path", type=Path, default=None,
                        help=f"weights file (default: the --arch's file in {FOLDER_PATH}/, "
                             f"{FOLDER_PATH}/{MODEL_NAME} for iresnet100, as the original)")
    parser.add_argument("--dataset_dir", type=Path, default=Path(DATASET_PATH),
                        help="dataset folder of identity sub-folders, or a .zip/.tar/.tar.gz of one "
                             "(default: %(default)s)")
    parser.add_argument("--output_file", type=Path, default=Path(OUTPUT_JSON),
                        help="output JSON Lines file, or .npz (default: %(default)s)")
    parser.add_argument("--arch", default="iresnet100", help="architecture (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--precision", choices=EMBED_PRECISIONS, default="fp32",
                        help="fp32 (default: the CPU's numbers on every device); tf32, bf16, fp16 on CUDA for speed")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="images per batch (default: 64 on CPU, 256 on CUDA)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding processes (default: 1 on CPU, up to 8 on CUDA)")
    parser.add_argument("--flip-tta", action="store_true", help="add the mirror image's embedding")
    parser.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        from faceaudit.embed import embed_dataset, format_summary

        print("Starting dataset processing...")
        summary = embed_dataset(args.dataset_dir, args.output_file, arch=args.arch, weights=args.model_path,
                                device=args.device, batch_size=args.batch_size, workers=args.workers,
                                flip_tta=args.flip_tta, overwrite=args.overwrite,
                                progress=not args.no_progress, models_dir=FOLDER_PATH,
                                weights_option="--model_path", precision=args.precision)
        if summary.get("rank", 0) == 0:
            print(format_summary(summary))
        return 0

    return run_guarded(run, Path(__file__).name)


if __name__ == "__main__":
    raise SystemExit(main())
