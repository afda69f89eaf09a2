"""Argument parsing shared by the paper's scripts (``Mated_vs_non-mated/``, ``CASIA_compare/``),
which keep the replication package's names, arguments and defaults."""
from __future__ import annotations

import argparse
from typing import Callable, Sequence

from faceaudit.cli.common import positive_int, run_guarded, seed_type


def run_pair_script(stage: Callable, description: str, argv: Sequence[str] | None = None) -> int:
    """The paper's two Mated_vs_non-mated scripts that read one embedding file: same arguments, one stage each.

    ``stage(json_file_path, n_comparisons, out_dir, seed, exhaustive=, skip_invalid=)`` is
    :func:`faceaudit.stages.variability.compute_similarities` or :func:`~faceaudit.stages.variability.analyze_embeddings`.
    """
    from faceaudit.stages.variability import DEFAULT_N_COMPARISONS

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("json_file_path", type=str, help="Path to the input JSON file.")
    parser.add_argument("--n_comparisons", type=positive_int, default=DEFAULT_N_COMPARISONS,
                        help=f"Number of comparisons to compute (default: {DEFAULT_N_COMPARISONS})")
    parser.add_argument("--seed", type=seed_type, default=42, help="random seed (default: 42)")
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
