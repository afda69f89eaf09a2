"""Cross-checks of result files for ``faceaudit paper``: schema, counts against the file names,
rank order, sampled best matches against the global top-K, mated scores against the published
genuine mean. Each check states its counts; notes (how the sample was drawn) never fail.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.io.files import read_scores
from faceaudit.stages.closest import CLOSEST_METADATA_KEYS, CLOSEST_RESULT_KEYS
from faceaudit.stages.leakage import BEST_MATCH_COLUMNS, SEED, sample_indices
from faceaudit.stages.paper_data import DatasetResults, IntervalFile, Results

#: two searches of the same pair in float32 (the paper's Best_Matches and Closest files came from
#: different engines) differ by a few units in the last place; 3.6e-7 is the most seen on its data
SCORE_TOLERANCE = 1e-6
MEAN_TOLERANCE = 1e-9
PASS, FAIL, NOTE = "pass", "FAIL", "note"
CHECK_COLUMNS = ("check", "subject", "result", "detail")


@dataclass
class Check:
    check: str    # schema, counts, rank order, max <= top-1, top-K coverage, genuine mean, sampling
    subject: str  # a dataset or a file
    status: str   # PASS, FAIL or NOTE
    detail: str   # what was compared, with the counts

    def row(self) -> list[str]:
        return [self.check, self.subject, self.status, self.detail]


def _check(name: str, subject: str, ok: bool, detail: str) -> Check:
    return Check(name, subject, PASS if ok else FAIL, detail)


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---------------------------------------------------------------- one file at a time

def schema_best_matches(d: DatasetResults) -> Check:
    b = d.best
    rows, distinct = len(b.scores), len(np.unique(b.sample_index))
    columns_ok = b.header == list(BEST_MATCH_COLUMNS)
    in_range = bool(np.all(np.abs(b.scores) <= 1 + SCORE_TOLERANCE)) and bool(np.all(b.sample_index >= 0))
    columns = "as published" if columns_ok else f"{b.header}, not {list(BEST_MATCH_COLUMNS)}"
    detail = (f"{len(b.header)} columns {columns}; {rows:,} rows, {distinct:,} distinct sample_index; similarity in "
              f"[{b.scores.min():.4f}, {b.scores.max():.4f}]")
    return _check("schema", b.path.name, columns_ok and distinct == rows and in_range, detail)


def schema_closest(d: DatasetResults) -> Check:
    c = d.closest
    results = c.document["results"]
    top_ok = list(c.document) == ["metadata", "results"]
    meta_ok = list(c.document["metadata"]) == list(CLOSEST_METADATA_KEYS)
    keys_ok = sum(isinstance(r, dict) and list(r) == list(CLOSEST_RESULT_KEYS) for r in results)
    paths_ok = sum(r.get("query_path") == f"{r.get('query_identity')}/{r.get('query_image_name')}"
                   and r.get("casia_path") == f"{r.get('casia_identity')}/{r.get('casia_image_name')}"
                   for r in results)
    detail = (f"{'metadata and results' if top_ok else list(c.document)}; metadata keys "
              f"{'as published' if meta_ok else list(c.document['metadata'])}; {keys_ok} of {len(results)} "
              f"results with the {len(CLOSEST_RESULT_KEYS)} keys in order; {paths_ok} of {len(results)} paths "
              "are identity/image")
    return _check("schema", c.path.name, top_ok and meta_ok and keys_ok == paths_ok == len(results), detail)


def schema_intervals(table: IntervalFile) -> Check:
    intervals = [i for metrics in table.rows.values() for i in metrics.values()]
    bounded = [i for i in intervals if np.isfinite([i.lower, i.upper]).all()]
    ordered = sum(i.lower <= i.upper for i in bounded)
    inside = sum(i.lower <= i.point <= i.upper for i in bounded)
    columns_ok = list(table.header) == list(table.expected)
    detail = (f"{len(table.rows)} datasets; columns {'as expected' if columns_ok else f'{table.header}'}; "
              f"{ordered} of {len(bounded)} intervals with lower <= upper ({inside} contain their point value"
              f"{'' if len(bounded) == len(intervals) else f'; {len(intervals) - len(bounded)} without bounds'})")
    return _check("schema", table.path.name, columns_ok and ordered == len(bounded), detail)


def counts_best_matches(d: DatasetResults) -> Check:
    b = d.best
    rows = len(b.scores)
    size = _int(d.closest.document["metadata"].get("n_samples_compared")) if d.closest else None
    if rows == b.n_in_name:
        return _check("counts", b.path.name, True, f"{rows:,} rows, as the name says")
    if rows < b.n_in_name and size == rows:
        return _check("counts", b.path.name, True,
                      f"{rows:,} rows for {b.n_in_name:,} in the name: the whole dataset ({size:,} images in "
                      f"{d.closest.path.name}), as the scripts do when it is smaller")
    if rows < b.n_in_name and size is None:
        return Check("counts", b.path.name, NOTE, f"{rows:,} rows for {b.n_in_name:,} in the name; no Top-K file "
                                                  "tells the dataset's size")
    return _check("counts", b.path.name, False, f"{rows:,} rows for {b.n_in_name:,} in the name"
                  + (f" and {size:,} images in {d.closest.path.name}" if size is not None else ""))


def counts_closest(d: DatasetResults) -> Check:
    c = d.closest
    meta = c.document["metadata"]
    n, k, total = (_int(meta.get(key)) for key in ("n_samples_compared", "top_global_matches",
                                                   "total_pairs_considered"))
    results = len(c.document["results"])
    ok = n == c.n_in_name and k == c.k_in_name == results and n is not None and n > 0 \
        and total is not None and total % n == 0
    detail = (f"n_samples_compared {n} (name: {c.n_in_name:,}); top_global_matches {k} (name: {c.k_in_name}); "
              f"{results} results; total_pairs_considered {total}"
              + (f" = {n:,} x {total // n:,}" if ok else " (must be a multiple of n_samples_compared)"))
    return _check("counts", c.path.name, ok, detail)


def rank_order(d: DatasetResults) -> Check:
    c = d.closest
    ranks = [r.get("rank") for r in c.document["results"]]
    in_order = ranks == list(range(1, len(ranks) + 1))
    falling = int(np.count_nonzero(np.diff(c.scores) > 0))
    detail = (f"ranks {'1..' + str(len(ranks)) if in_order else 'not 1, 2, 3, ...'}; "
              f"{len(ranks) - 1 - falling} of {max(len(ranks) - 1, 0)} steps with a non-increasing score")
    return _check("rank order", d.name, in_order and falling == 0, detail)


# ---------------------------------------------------------------- files against each other

def max_below_top1(d: DatasetResults) -> Check:
    top1, largest = float(d.closest.scores[0]), float(d.best.scores.max())
    ok = largest <= top1 + SCORE_TOLERANCE
    detail = (f"largest sampled best match {largest:.7f} {'<=' if ok else '>'} global top-1 {top1:.7f}"
              + (f" (within {SCORE_TOLERANCE:g})" if ok and largest > top1 else ""))
    return _check("max <= top-1", d.name, ok, detail)


def top_k_coverage(d: DatasetResults) -> Check:
    """Every sampled best match scoring above the K-th global pair must be one of the top K, with
    the same score; one within :data:`SCORE_TOLERANCE` of the K-th score may be missing (a tie)."""
    c, b = d.closest, d.best
    k, kth = len(c.scores), float(c.scores[-1])
    if not np.any(b.scores > kth):
        return _check("top-K coverage", d.name, True, f"no sampled best match above the {_ordinal(k)} score "
                                                      f"({kth:.4f}): nothing to find in the top-{k}")
    published = {(str(r.get("query_identity")), str(r.get("query_image_name")), str(r.get("casia_identity")),
                  str(r.get("casia_image_name"))): score for r, score in zip(c.document["results"], c.scores)}
    above = np.flatnonzero(b.scores > kth)
    differences = np.array([abs(published[key] - b.scores[i]) if key in published else np.inf
                            for i, key in zip(above, map(tuple, b.pairs[above].tolist()))])
    found = differences <= SCORE_TOLERANCE
    tied = ~found & (b.scores[above] <= kth + SCORE_TOLERANCE)
    detail = (f"{int(found.sum())} of {len(above)} {d.name} pair{'s' if len(above) > 1 else ''} above the "
              f"{_ordinal(k)} score ({kth:.4f}) found "
              f"in its top-{k} with the same score (largest difference {differences[found].max(initial=0.0):.1e})")
    if tied.any():
        detail += f"; {int(tied.sum())} missing within {SCORE_TOLERANCE:g} of the {_ordinal(k)} score (a tie)"
    return _check("top-K coverage", d.name, bool(np.all(found | tied)), detail)


def genuine_mean(d: DatasetResults) -> Check:
    scores = read_scores(d.mated)
    mean = float(np.mean(scores))
    if "gmean" not in d.intervals:
        return Check("genuine mean", d.name, NOTE, f"mean of {len(scores):,} mated scores {mean:.12f}; "
                                                   "no genuine mean published for it")
    published = d.intervals["gmean"]
    diff = abs(mean - published.point)
    detail = (f"mean of {len(scores):,} mated scores in {d.mated.name} {mean:.12f}, {published.path.name} "
              f"{published.point:.12f} (difference {diff:.1e}, tolerance {MEAN_TOLERANCE:g})")
    return _check("genuine mean", d.name, diff <= MEAN_TOLERANCE, detail)


def sampling_note(d: DatasetResults) -> Check:
    """Which seed-42 draw the sampled images are: the paper's scripts draw random.sample(range(N), n)."""
    index = d.best.sample_index
    n = len(index)
    size = _int(d.closest.document["metadata"].get("n_samples_compared")) if d.closest else None
    identities = f"{len(np.unique(d.best.pairs[:, 0])):,} identities"
    if np.array_equal(index, np.arange(n)):
        whole = "the whole dataset, " if size == n else (f"the first {n:,} of {size:,} rows, " if size else "")
        return Check("sampling", d.name, NOTE, f"sample_index is 0..{n - 1:,}: {whole}in file order ({identities})")
    for total in sorted({m for m in (size, int(index.max()) + 1) if m and m >= n}):
        if np.array_equal(index, sample_indices(total, n, SEED)[0]):
            detail = f"sample_index is random.Random({SEED}).sample(range({total:,}), {n:,})"
            if size and total < size:
                detail += f": rows 0..{total - 1:,} only, not a sample of all {size:,} images ({identities})"
            return Check("sampling", d.name, NOTE, detail)
    return Check("sampling", d.name, NOTE, f"sample_index is not a seed-{SEED} sample of range(N) for the "
                                           "dataset's size nor for its largest index + 1")


# ---------------------------------------------------------------- all of them

def run_checks(results: Results) -> list[Check]:
    """Every check that the files found allow, file checks first, then per dataset."""
    checks = [schema_intervals(t) for t in results.interval_files]
    for d in results.datasets.values():
        if d.best:
            checks += [schema_best_matches(d), counts_best_matches(d)]
        if d.closest:
            checks += [schema_closest(d), counts_closest(d), rank_order(d)]
        if d.best and d.closest:
            checks += [max_below_top1(d), top_k_coverage(d)]
        if d.mated:
            checks.append(genuine_mean(d))
        if d.best:
            checks.append(sampling_note(d))
    return checks


def summary_lines(checks: list[Check]) -> list[str]:
    """One line per kind of check: how many passed, then each failure."""
    lines = []
    for name in dict.fromkeys(c.check for c in checks):
        group = [c for c in checks if c.check == name]
        judged = [c for c in group if c.status != NOTE]
        passed = sum(c.status == PASS for c in judged)
        notes = len(group) - len(judged)
        line = f"{name}: {passed} of {len(judged)} pass" if judged else f"{name}:"
        lines.append(line + (f" ({notes} note{'s' if notes > 1 else ''})" if notes else ""))
        lines += [f"  FAIL {c.subject}: {c.detail}" for c in judged if c.status == FAIL]
    return lines
