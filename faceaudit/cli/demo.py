"""``faceaudit demo``: the whole pipeline on real faces with a real model."""
from __future__ import annotations

from pathlib import Path


def add(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on real faces with a real model "
                                    "(InsightFace's ArcFace MobileFaceNet on SCRFD-aligned ORL/Olivetti faces)")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--data", type=Path, default=None,
                   help="folder of identity sub-folders (default: $DEMO_DATA, ../shared/data/orl, "
                        "else scikit-learn's Olivetti faces)")
    p.add_argument("--models-dir", type=Path, default=Path("Models"))
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from faceaudit.stages.demo import run_demo

    run_demo(args.out, args.data, args.models_dir, args.device)
    return 0
