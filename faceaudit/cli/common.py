"""What every entry point shares: one-line errors and exit codes, argument types, shared options."""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Callable

from faceaudit import checks
from faceaudit.errors import FaceauditError, Interrupted


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
    except Interrupted as exc:  # a stage that kept work says what and where
        print(f"{prog}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_skip_invalid(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip malformed embedding lines (counted and reported) instead of failing")


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_search_options(p: argparse.ArgumentParser) -> None:
    """The options of every command that searches a reference set."""
    p.add_argument("--seed", type=seed_type, default=42, help="sampling seed (default: %(default)s, as the paper)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="matmul precision for candidate selection; winners are always re-scored exactly "
                        "(fp16/bf16: CUDA only)")
    p.add_argument("--memory-budget-mb", type=positive_int, default=None,
                   help="memory for the similarity blocks (default: 512 on CPU, 2048 on CUDA)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_skip_invalid(p)


def _argument_type(check, name: str, parse=str):
    """An argparse type from a :mod:`faceaudit.checks` function (its message becomes argparse's)."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        try:
            return check(value)
        except FaceauditError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = name
    return convert


#: argparse types: a seed (integer >= 0) and a cosine threshold (finite, in [-1, 1])
seed_type = _argument_type(checks.seed, "seed", parse=int)
cosine_type = _argument_type(checks.cosine, "cosine threshold")


def add_index_options(p: argparse.ArgumentParser, default: str = "exact") -> None:
    """``--index`` and the settings of its backends (every command that searches a reference set)."""
    from faceaudit.search.backend import IndexOptions
    from faceaudit.search.index import INDEX_KINDS

    d = IndexOptions()
    p.add_argument("--index", choices=INDEX_KINDS, default=default,
                   help="search backend (default: %(default)s). exact: blocked, exact; lsh: random-hyperplane LSH "
                        "with multi-probe (the challenge notebook's); faiss-flat/faiss-ivf/faiss-hnsw: FAISS "
                        "(pip install 'faceaudit[faiss]'). Every backend's scores are re-computed exactly")
    p.add_argument("--lsh-bits", type=positive_int, default=d.lsh_bits, help="LSH hyperplanes (default: %(default)s)")
    p.add_argument("--lsh-radius", type=non_negative_int, default=d.lsh_radius,
                   help="LSH: probe every bucket within this Hamming distance (default: %(default)s)")
    p.add_argument("--lsh-tables", type=positive_int, default=d.lsh_tables,
                   help="LSH: independent hash tables, lists merged (default: %(default)s)")
    p.add_argument("--ivf-lists", type=positive_int, default=None,
                   help="faiss-ivf: inverted lists (default: 4 x sqrt(references))")
    p.add_argument("--ivf-probe", type=positive_int, default=d.ivf_probe,
                   help="faiss-ivf: lists searched per query (default: %(default)s)")
    p.add_argument("--hnsw-m", type=positive_int, default=d.hnsw_m, help="faiss-hnsw: graph degree (default: %(default)s)")
    p.add_argument("--hnsw-ef-search", type=positive_int, default=d.hnsw_ef_search,
                   help="faiss-hnsw: search breadth (default: %(default)s)")


def search_settings(args) -> dict:
    """The keyword arguments of a search from :func:`add_search_options`' flags."""
    return dict(device=args.device, precision=args.precision, progress=not args.no_progress,
                memory_budget_bytes=args.memory_budget_mb and args.memory_budget_mb << 20)


def index_options(args):
    from faceaudit.search.backend import IndexOptions

    return IndexOptions(**search_settings(args), seed=args.seed, lsh_bits=args.lsh_bits,
                        lsh_radius=args.lsh_radius, lsh_tables=args.lsh_tables, ivf_lists=args.ivf_lists,
                        ivf_probe=args.ivf_probe, hnsw_m=args.hnsw_m, hnsw_ef_search=args.hnsw_ef_search)
