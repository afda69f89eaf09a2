"""Identity leakage: how close does each image of a (synthetic) dataset come to a real reference set?

- :func:`best_matches`: sample ``n`` query images as the paper does (seed 42) and find
  each one's most similar reference image (exact search, :mod:`faceaudit.search`);
- :func:`summary`: mean, median, 90/99/99.9 % quantiles of those best-match scores and
  the fraction (and count) of queries at or above each threshold;
- :func:`identity_flags`: per query identity, its highest best match and whether it leaks;
- :func:`run_leakage`: all of it for one query file, in the paper's ``Best_Matches`` CSV format
  plus figure and summary files. The globally closest pairs are :mod:`.closest`.
"""
from __future__ import annotations

import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from faceaudit import checks, search
from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.io.embeddings import EmbeddingSet
from faceaudit.io.files import write_csv, write_json, write_scores
from faceaudit.io.shards import ShardSet, load_reference_set
from faceaudit.report.plots import plot_distributions, save_figure

BEST_MATCH_COLUMNS = ("sample_index", "sample_identity", "sample_image_name", "best_match_index",
                      "best_match_identity", "best_match_image_name", "similarity")
QUANTILES = (0.90, 0.99, 0.999)
SEED = 42


@dataclass
class BestMatchResult:
    """Row ``i``: query ``sample_indices[i]`` best matches reference ``reference_indices[i]`` with ``scores[i]``."""

    sample_indices: np.ndarray     # int64 (n,): rows of the query set, in sampling order
    scores: np.ndarray             # float32 (n,)
    reference_indices: np.ndarray  # int64 (n,)


def load_query_and_reference(query_file: str | os.PathLike, reference_file: str | os.PathLike,
                             log=print) -> tuple[EmbeddingSet, EmbeddingSet]:
    """Both embedding files, announced as the paper's CASIA scripts do."""
    log(f"Loading embeddings from {query_file}...")
    query = load_reference_set(query_file)
    log(f"Loaded {len(query)} input embeddings")
    log(f"Loading embeddings from {reference_file}...")
    reference = load_reference_set(reference_file)
    log(f"Loaded {len(reference)} CASIA embeddings")
    return query, reference


def loaded(eset: EmbeddingSet | ShardSet | None, path: str | os.PathLike,
           skip_invalid: bool) -> EmbeddingSet | ShardSet:
    """``eset`` when the caller already loaded ``path``, else ``path`` read now (a shard folder is mapped)."""
    return eset if eset is not None else load_reference_set(path, skip_invalid=skip_invalid)


def check_pair(query: EmbeddingSet, reference: EmbeddingSet) -> None:
    if len(reference) == 0:
        raise FaceauditError("the reference set is empty")
    if len(query) == 0:
        raise FaceauditError("the query set is empty")
    if query.dim != reference.dim:
        raise FaceauditError(f"query vectors have {query.dim} dimensions but reference vectors have "
                             f"{reference.dim}; both sets must come from the same model")


def sample_indices(total: int, n: int, seed: int = SEED) -> tuple[list[int], bool]:
    """The paper's sample: ``random.seed(seed); random.sample(range(total), n)``.

    Returns (indices, all_used); when ``n > total`` every index is used in order,
    as the original scripts do (they warn).
    """
    checks.seed(seed)
    if n <= 0:
        raise FaceauditError(f"the number of comparisons must be > 0, got {n}")
    if total < n:
        return list(range(total)), True
    return random.Random(seed).sample(range(total), n), False


def sample_queries(n_total: int, n: int | None, seed: int = SEED, source: str = "query set") -> np.ndarray:
    """:func:`sample_indices` as an array; ``None`` takes every row in order; ``n`` larger than
    the set takes every row, with a warning.
    """
    if n is None:
        return np.arange(n_total, dtype=np.int64)
    if int(n) <= 0:
        raise FaceauditError(f"the number of comparisons must be > 0, got {n}")
    indices, all_used = sample_indices(n_total, int(n), seed)
    if all_used:
        warnings.warn(f"{source}: only {n_total} embeddings available, using all of them", FaceauditWarning,
                      stacklevel=2)
    return np.asarray(indices, dtype=np.int64)


def best_matches(query: EmbeddingSet, reference: EmbeddingSet | ShardSet, *, n_comparisons: int | None = None,
                 seed: int = SEED, device: str = "auto", precision: str = "fp32",
                 memory_budget_bytes: int | None = None, progress: bool = True,
                 checkpoint: str | os.PathLike | None = None, index: str = "exact",
                 options: search.IndexOptions | None = None) -> BestMatchResult:
    """Each sampled query's most similar reference image (exact; ties: lowest reference index).

    Scores are cosines, clamped to [-1, 1] (:func:`faceaudit.search.as_cosines`).

    ``checkpoint``: a file path where finished chunks of a long search are saved, so that a
    rerun resumes (:func:`faceaudit.search.best_match_resumable`). ``index``: another search
    backend (:func:`faceaudit.search.best_match_index`, with ``options``); queries it finds no
    candidate for are left out, with a warning.
    """
    check_pair(query, reference)
    picked = sample_queries(len(query), n_comparisons, seed, query.metadata.get("source_file", "query set"))
    if index == "exact":
        found = search.best_match_resumable(query.vectors, reference.vectors, rows=picked, checkpoint=checkpoint,
                                            device=device, precision=precision,
                                            memory_budget_bytes=memory_budget_bytes, progress=progress)
        return BestMatchResult(picked, search.as_cosines(found.scores), found.indices)
    options = options or search.IndexOptions(device=device, precision=precision, seed=seed,
                                             memory_budget_bytes=memory_budget_bytes, progress=progress)
    found = search.best_match_index(index, query.vectors[picked], reference.vectors, options)
    hit = found.indices >= 0
    if not hit.all():
        warnings.warn(f"--index {index}: no candidate found for {int((~hit).sum()):,} of {len(hit):,} queries; "
                      "they are left out", FaceauditWarning, stacklevel=2)
    return BestMatchResult(picked[hit], search.as_cosines(found.scores[hit]), found.indices[hit])


def best_match_rows(result: BestMatchResult, query: EmbeddingSet, reference: EmbeddingSet) -> Iterable[list]:
    """Rows of the paper's Best_Matches CSV (:data:`BEST_MATCH_COLUMNS`); scores as float32 widened to float."""
    qi, ri = result.sample_indices, result.reference_indices
    columns = (qi.tolist(), query.identities[qi].tolist(), query.image_names[qi].tolist(), ri.tolist(),
               reference.identities[ri].tolist(), reference.image_names[ri].tolist(),
               [repr(float(s)) for s in result.scores.tolist()])  # gathered once: shards answer arrays fast
    return (list(row) for row in zip(*columns))


def write_best_matches_csv(path: str | os.PathLike, result: BestMatchResult, query: EmbeddingSet,
                           reference: EmbeddingSet) -> Path:
    return write_csv(path, BEST_MATCH_COLUMNS, best_match_rows(result, query, reference))


# ---------------------------------------------------------------- summary

def summary(scores: np.ndarray, thresholds: Sequence[float] | Mapping[str, float] = (),
            name: str | None = None) -> dict:
    """Mean, median, 90/99/99.9 % quantiles (linear interpolation), and per threshold the
    count and fraction of scores ``>=`` it (a match at that operating point)."""
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0:
        raise FaceauditError("no scores to summarise")
    items = list(thresholds.items()) if isinstance(thresholds, Mapping) else [(None, t) for t in thresholds]
    out = {"dataset": name, "n": int(values.size), "mean": float(values.mean()),
           "median": float(np.median(values)), "std": float(values.std()),
           "min": float(values.min()), "max": float(values.max())}
    for q in QUANTILES:
        out[_quantile_key(q)] = float(np.quantile(values, q))
    above = []
    for label, t in items:
        count = int(np.count_nonzero(values >= float(t)))
        entry = {"threshold": float(t), "count": count, "fraction": count / values.size}
        if label is not None:
            entry["label"] = str(label)
        above.append(entry)
    out["above_threshold"] = above
    if name is None:
        out.pop("dataset")
    return out


def _quantile_key(q: float) -> str:
    return "q" + f"{q * 100:g}".replace(".", "_")


def summary_rows(summaries: Sequence[dict]) -> tuple[list[str], list[list]]:
    """Header and rows of the summary CSV: one row per dataset, one count/fraction pair per threshold."""
    thresholds = []
    for s in summaries:
        for a in s["above_threshold"]:
            if a["threshold"] not in thresholds:
                thresholds.append(a["threshold"])
    header = ["dataset", "n", "mean", "median", "std", "min", "max"] + [_quantile_key(q) for q in QUANTILES]
    for t in thresholds:
        header += [f"count_ge_{t:g}", f"fraction_ge_{t:g}"]
    rows = []
    for s in summaries:
        row = [s.get("dataset", ""), s["n"], *(s[k] for k in header[2:7 + len(QUANTILES)])]
        by_t = {a["threshold"]: a for a in s["above_threshold"]}
        for t in thresholds:
            a = by_t.get(t)
            row += [a["count"], a["fraction"]] if a else ["", ""]
        rows.append(row)
    return header, rows


def write_summary(json_path: str | os.PathLike, csv_path: str | os.PathLike, summaries: Sequence[dict]) -> None:
    write_json(json_path, list(summaries) if len(summaries) != 1 else summaries[0])
    header, rows = summary_rows(summaries)
    write_csv(csv_path, header, rows)


# ---------------------------------------------------------------- the figure

def plot_best_matches(scores: Mapping[str, np.ndarray], title: str | None = None,
                      thresholds: Sequence[tuple[str, float]] = (), **options):
    """KDE of best-match similarities per dataset, thresholds as vertical lines.

    ``options`` go to :func:`faceaudit.report.plots.plot_distributions` (``xlim``, ``curves``).
    """
    if title is None:
        names = ", ".join(scores)
        title = f"Distribution of best-match similarities ({names})"
    return plot_distributions(dict(scores), title, xlabel="Cosine similarity (best match)",
                              thresholds=list(thresholds), **options)


def compare_embeddings_figure(scores: np.ndarray, label: str, source_name: str, curve=None):
    """The figure of ``compare_embeddings.py``: one dataset's best-match KDE with its mean +- std
    as a line, x in [0, 1]. ``curve``: its (x, density) from :func:`kde_curve`, if already computed."""
    scores = np.asarray(scores, dtype=np.float64)
    mean, std = float(np.mean(scores)), float(np.std(scores))
    return plot_best_matches({label: scores}, thresholds=[(f"Mean ({mean:.3f} ± {std:.3f})", mean)],
                             title=f"Distribution of Best Match Similarities\n({len(scores)} samples from {source_name})",
                             xlim=(0.0, 1.0), curves=None if curve is None else [curve])


# ---------------------------------------------------------------- whole commands (CLI, paper scripts, demo)

def _stem(path: str | os.PathLike) -> str:
    return Path(path).stem


IDENTITY_FLAG_COLUMNS = ("identity", "images", "max_similarity", "matched_reference_identity",
                         "matched_reference_image_name", "images_above_threshold", "flagged")


def identity_flags(result: BestMatchResult, query: EmbeddingSet, reference: EmbeddingSet,
                   threshold: float) -> list[dict]:
    """Per sampled query identity (sorted): its highest best match, whom it hits, and the flag.

    An identity is flagged as leaked when any of its sampled images has a best match
    ``>= threshold``; ``images_above_threshold`` says how many do.
    """
    identities = query.identities[result.sample_indices]
    uniques, codes = np.unique(identities, return_inverse=True)
    order = np.lexsort((-result.scores.astype(np.float64), codes))  # by identity, best score first
    top = order[np.searchsorted(codes[order], np.arange(len(uniques)))]
    images = np.bincount(codes, minlength=len(uniques))
    above = np.bincount(codes, weights=result.scores >= threshold, minlength=len(uniques)).astype(np.int64)
    matched = result.reference_indices[top]
    return [{"identity": str(identity), "images": int(count), "max_similarity": float(score),
             "matched_reference_identity": str(reference.identities[ri]),
             "matched_reference_image_name": str(reference.image_names[ri]),
             "images_above_threshold": int(n_above), "flagged": bool(n_above > 0)}
            for identity, count, score, ri, n_above in zip(uniques, images, result.scores[top], matched, above)]


def run_leakage(query_file: str | os.PathLike, reference_file: str | os.PathLike, *, out_dir="leakage_out",
                n_comparisons: int | None = 10000, thresholds: Sequence[float] = (), seed: int = SEED,
                device: str = "auto", precision: str = "fp32", skip_invalid: bool = False,
                memory_budget_bytes: int | None = None, progress: bool = True,
                query: EmbeddingSet | None = None, reference: EmbeddingSet | ShardSet | None = None,
                return_scores: bool = False, flag_threshold: float | None = None, index: str = "exact",
                options: search.IndexOptions | None = None):
    """Best matches of a sample of QUERY in REFERENCE: scores, CSV, KDE figure and summary files.

    Returns the summary with ``files`` (the paths written) added; with ``return_scores``,
    (summary, best-match scores).
    ``query``/``reference``: the sets already loaded from those files, so none is parsed twice.
    ``flag_threshold``: also write ``<stem>_identity_flags.csv`` (:func:`identity_flags`) and
    list the flagged query identities in the summary. ``index``/``options``: as :func:`best_matches`.
    """
    if n_comparisons is not None and int(n_comparisons) <= 0:
        raise FaceauditError(f"--n-comparisons must be > 0, got {n_comparisons}")
    thresholds = checks.cosines(thresholds, "--threshold")
    if flag_threshold is not None:
        flag_threshold = checks.cosine(flag_threshold, "--flag-threshold")
    checks.seed(seed)
    query = loaded(query, query_file, skip_invalid)
    reference = loaded(reference, reference_file, skip_invalid)
    out = Path(out_dir)
    stem = _stem(query_file)
    n_label = n_comparisons if n_comparisons is not None else len(query)
    base = out / f"{stem}_BestMatches_{n_label}"
    result = best_matches(query, reference, n_comparisons=n_comparisons, seed=seed, device=device,
                          precision=precision, memory_budget_bytes=memory_budget_bytes, progress=progress,
                          checkpoint=base.with_name(base.name + ".partial.npz"), index=index, options=options)
    files = [write_scores(base.with_name(base.name + ".txt"), result.scores),
             write_best_matches_csv(base.with_name(base.name + ".csv"), result, query, reference)]
    labelled = [(f"threshold {i + 1}" if len(thresholds) > 1 else "threshold", float(t))
                for i, t in enumerate(thresholds)]
    fig = plot_best_matches({stem: result.scores},
                            title=f"Best match in {_stem(reference_file)} of {len(result.scores):,} samples "
                                  f"of {Path(query_file).name}",
                            thresholds=labelled)
    files += save_figure(fig, base, formats=("png", "pdf"))
    stats = summary(result.scores, [float(t) for t in thresholds], name=stem)
    stats["reference"] = str(reference_file)
    stats["reference_size"] = len(reference)
    if index != "exact":
        stats["index"] = index
    if flag_threshold is not None:
        flags = identity_flags(result, query, reference, flag_threshold)
        files.append(write_csv(out / f"{stem}_identity_flags.csv", IDENTITY_FLAG_COLUMNS,
                               [[row[c] for c in IDENTITY_FLAG_COLUMNS] for row in flags]))
        stats["flag_threshold"] = float(flag_threshold)
        stats["flagged_identities"] = [row["identity"] for row in flags if row["flagged"]]
    json_path, csv_path = out / f"{stem}_leakage_summary.json", out / f"{stem}_leakage_summary.csv"
    write_summary(json_path, csv_path, [stats])
    files += [json_path, csv_path]
    stats["files"] = [str(f) for f in files]
    return (stats, result.scores) if return_scores else stats


def write_combined(out_dir, all_stats: Sequence[dict], all_scores: Sequence[np.ndarray],
                   thresholds: Sequence[float] = ()) -> list[Path]:
    """For several datasets: one KDE figure and one summary table (JSON and CSV) over all of them."""
    out = Path(out_dir)
    labelled = [(f"threshold {i + 1}" if len(thresholds) > 1 else "threshold", float(t))
                for i, t in enumerate(thresholds)]
    fig = plot_best_matches({s["dataset"]: v for s, v in zip(all_stats, all_scores)}, thresholds=labelled,
                            title="Best-match similarities in the reference set")
    files = save_figure(fig, out / "BestMatches_all", formats=("png", "pdf"))
    clean = [{k: v for k, v in s.items() if k != "files"} for s in all_stats]
    write_summary(out / "leakage_summary.json", out / "leakage_summary.csv", clean)
    return files + [out / "leakage_summary.json", out / "leakage_summary.csv"]


def format_summary(stats: dict) -> str:
    lines = [f"{stats.get('dataset', 'queries')}: best match of {stats['n']:,} queries in "
             f"{stats.get('reference', 'the reference set')}",
             f"  mean {stats['mean']:.4f}  median {stats['median']:.4f}  "
             + "  ".join(f"{k} {stats[k]:.4f}" for k in (_quantile_key(q) for q in QUANTILES))
             + f"  max {stats['max']:.4f}"]
    for a in stats["above_threshold"]:
        lines.append(f"  >= {a['threshold']:.4f}: {a['count']:,} ({100 * a['fraction']:.2f} %)")
    if "flagged_identities" in stats:
        flagged = stats["flagged_identities"]
        lines.append(f"  identities with a best match >= {stats['flag_threshold']:.4f}: {len(flagged):,}"
                     + (f" ({', '.join(flagged[:10])}{', ...' if len(flagged) > 10 else ''})" if flagged else ""))
    for f in stats.get("files", []):
        lines.append(f"  wrote {f}")
    return "\n".join(lines)


