"""``faceaudit paper``: the paper's figures, tables and cross-checks from its published results,
with your own leakage, closest and variability outputs beside them."""
from __future__ import annotations

from pathlib import Path

from faceaudit.cli.common import cosine_type

FAILED_CHECK_EXIT = 1


def add(sub) -> None:
    p = sub.add_parser(
        "paper", help="the paper's figures and tables from its published results (and yours), with cross-checks",
        description="Reads result folders: the paper's published data (Best_Matches/, Closest/, CI/, "
                    "Control10k_mated_similarities.txt) and/or the outputs of 'faceaudit leakage', 'closest' and "
                    "'variability' (files are found by name in each folder and its direct sub-folders). Writes "
                    "leakage_table.csv/.md, intervals.csv/.md, checks.csv/.md, figures/ (per-dataset best-match "
                    "KDEs, their overlay, forest plots of the 95% intervals) and paper_results.md/.html.",
        epilog="Exit codes: 0 done (failed cross-checks are reported), 1 with --strict when a cross-check "
               "failed, 2 unreadable input.")
    p.add_argument("folders", type=Path, nargs="+", metavar="DATA_DIR",
                   help="result folders; give the paper's first: datasets of later folders are highlighted. "
                        "A dataset name found twice gets its folder's name in brackets")
    p.add_argument("--out", type=Path, default=Path("paper_out"), help="output folder (default: %(default)s)")
    p.add_argument("--threshold", dest="thresholds", type=cosine_type, nargs="+", default=[0.4, 0.5, 0.6], metavar="T",
                   help="leakage table: share of sampled images whose best match is >= T (default: 0.4 0.5 0.6)")
    p.add_argument("--formats", nargs="+", choices=("png", "pdf", "svg"), default=["png", "pdf"],
                   help="figure formats (default: png pdf)")
    p.add_argument("--no-figures", dest="formats", action="store_const", const=[],
                   help="tables, cross-checks and page only (seconds instead of a minute)")
    p.add_argument("--strict", action="store_true", help=f"exit with code {FAILED_CHECK_EXIT} if any cross-check fails")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_paper)


def _run_paper(args) -> int:
    from faceaudit.stages.paper import run_paper

    result = run_paper(args.folders, args.out, thresholds=args.thresholds, formats=args.formats,
                       progress=not args.no_progress)
    print("cross-checks:")
    for line in result["check_lines"]:
        print(f"  {line}")
    print(f"wrote {len(result['files'])} files under {args.out}; the page: {result['page']}")
    if result["failed"]:
        print(f"{result['failed']} cross-check(s) failed; see {args.out / 'checks.md'}")
        return FAILED_CHECK_EXIT if args.strict else 0
    return 0
