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


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip malformed embedding lines (counted and reported) instead of failing")


# ---------------------------------------------------------------- variability (stage 2)

def _add_variability(sub) -> None:
    p = sub.add_parser("variability", help="mated vs non-mated scores, metrics (EER, FMR100, FMR1000, d', FDR) and figures")
    p.add_argument("input", type=Path, help="embedding file (.json/.jsonl/.npz)")
    p.set_defaults(func=_run_variability)


def _run_variability(args) -> int:
    raise FaceauditError("variability is not built yet")


# ---------------------------------------------------------------- leakage (stage 3)

def _add_leakage(sub) -> None:
    p = sub.add_parser("leakage", help="best match of every query in a reference set, with a leakage summary")
    p.add_argument("query", type=Path)
    p.set_defaults(func=_run_leakage)
    p = sub.add_parser("closest", help="the globally closest query x reference pairs (paper's Top<K>Global JSON)")
    p.add_argument("query", type=Path)
    p.set_defaults(func=_run_leakage)
    p = sub.add_parser("pairs-figure", help="grid of closest pairs, images read from folders or archives")
    p.add_argument("csv", type=Path)
    p.set_defaults(func=_run_leakage)


def _run_leakage(args) -> int:
    raise FaceauditError("leakage is not built yet")


# ---------------------------------------------------------------- embed (stage 1)

def _add_embed(sub) -> None:
    p = sub.add_parser("embed", help="compute one embedding per image of a dataset folder or archive")
    p.add_argument("dataset", type=Path)
    p.set_defaults(func=_run_embed)


def _run_embed(args) -> int:
    raise FaceauditError("embed is not built yet")


# ---------------------------------------------------------------- models

def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list architectures and weight files; fetch the offline SFace/YuNet models")
    p.set_defaults(func=_run_models)


def _run_models(args) -> int:
    raise FaceauditError("models is not built yet")


# ---------------------------------------------------------------- demo

def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on real faces with a real model")
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    raise FaceauditError("demo is not built yet")


# ---------------------------------------------------------------- entry point

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceaudit", description=__doc__.splitlines()[0])
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
