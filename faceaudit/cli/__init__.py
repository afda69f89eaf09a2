"""The ``faceaudit`` command: one sub-command per stage; parse, then call the library.

Each command group lives in its own module here (``add(sub)`` registers its parser,
``run_*(args)`` calls the library). Errors (:class:`FaceauditError`) become one line on
stderr and exit code 2; Ctrl-C exits 130 after the stage has kept what it finished.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from faceaudit.version import __version__
from faceaudit.cli import (cluster, demo, embed, identify, leakage, models, paper, train, variability,
                           verification)
from faceaudit.cli.common import cosine_type, non_negative_int, positive_int, run_guarded, seed_type
from faceaudit.cli.paper_scripts import casia_script_parser, run_pair_script

COMMAND_GROUPS = (embed, variability, verification, leakage, identify, paper, cluster, train, models, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceaudit",
        description="Can a (synthetic) face dataset stand in for real faces? Embeddings, mated vs non-mated "
                    "variability with pyeer-exact metrics, and identity leakage against a reference set.",
        epilog="Run 'faceaudit COMMAND --help' for a command's options; 'faceaudit demo' shows them all on real faces.")
    parser.add_argument("--version", action="version", version=f"faceaudit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.func(args), "faceaudit")


__all__ = ["build_parser", "casia_script_parser", "cosine_type", "main", "non_negative_int", "positive_int",
           "run_guarded", "run_pair_script", "seed_type"]
