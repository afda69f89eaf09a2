"""Identity leakage: how close does each image of a (synthetic) dataset come to a real reference set?

- :func:`best_matches`: sample ``n`` query images as the paper does (seed 42) and find
  each one's most similar reference image (exact search, :mod:`faceaudit.search`);
- :func:`summary`: mean, median, 90/99/99.9 % quantiles of those best-match scores and
  the fraction (and count) of queries at or above each threshold;
- :func:`closest_pairs`: the globally closest query x reference pairs, in the schema of
  the paper's ``<stem>_Top<K>Global_<n>.json``.

The writers produce the paper's file formats: the best-match CSV of its ``Best_Matches``
folder, the Top-K JSON of its ``Closest`` folder and the ``query_path,casia_path,similarity_score``
CSV that ``get_paths.sh`` makes from it.
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from faceaudit import search
from faceaudit.checkpoint import Checkpoint, fingerprint
from faceaudit.embeddings import EmbeddingSet, FaceauditWarning
from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_write, write_csv, write_json

BEST_MATCH_COLUMNS = ("sample_index", "sample_identity", "sample_image_name", "best_match_index",
                      "best_match_identity", "best_match_image_name", "similarity")
CLOSEST_RESULT_KEYS = ("rank", "similarity_score", "query_identity", "query_image_name", "query_path",
                       "casia_identity", "casia_image_name", "casia_path")
CLOSEST_METADATA_KEYS = ("input_file", "n_samples_compared", "top_global_matches", "total_pairs_considered")
PATHS_COLUMNS = ("query_path", "casia_path", "similarity_score")
QUANTILES = (0.90, 0.99, 0.999)
SEED = 42
#: queries searched between two checkpoints of a long run
CHECKPOINT_QUERIES = 1 << 16


@dataclass
class BestMatchResult:
    """Row ``i``: query ``sample_indices[i]`` best matches reference ``reference_indices[i]`` with ``scores[i]``."""

    sample_indices: np.ndarray     # int64 (n,): rows of the query set, in sampling order
    scores: np.ndarray             # float32 (n,)
    reference_indices: np.ndarray  # int64 (n,)


def load_query_and_reference(query_file: str | os.PathLike, reference_file: str | os.PathLike,
                             log=print) -> tuple[EmbeddingSet, EmbeddingSet]:
    """Both embedding files, announced as the paper's CASIA scripts do."""
    from faceaudit.embeddings import load_embeddings

    log(f"Loading embeddings from {query_file}...")
    query = load_embeddings(query_file)
    log(f"Loaded {len(query)} input embeddings")
    log(f"Loading embeddings from {reference_file}...")
    reference = load_embeddings(reference_file)
    log(f"Loaded {len(reference)} CASIA embeddings")
    return query, reference


def _loaded(eset: EmbeddingSet | None, path: str | os.PathLike, skip_invalid: bool) -> EmbeddingSet:
    """``eset`` when the caller already loaded ``path``, else ``path`` read now."""
    from faceaudit.embeddings import load_embeddings

    return eset if eset is not None else load_embeddings(path, skip_invalid=skip_invalid)


def _check_pair(query: EmbeddingSet, reference: EmbeddingSet) -> None:
    if len(reference) == 0:
        raise FaceauditError("the reference set is empty")
    if len(query) == 0:
        raise FaceauditError("the query set is empty")
    if query.dim != reference.dim:
        raise FaceauditError(f"query vectors have {query.dim} dimensions but reference vectors have "
                             f"{reference.dim}; both sets must come from the same model")


def sample_queries(n_total: int, n: int | None, seed: int = SEED, source: str = "query set") -> np.ndarray:
    """The paper's sample of ``n`` rows (``random.seed(seed); random.sample(range(n_total), n)``).

    ``None`` takes every row in order; ``n`` larger than the set takes every row, with a warning.
    """
    if n is None:
        return np.arange(n_total, dtype=np.int64)
    if int(n) <= 0:
        raise FaceauditError(f"the number of comparisons must be > 0, got {n}")
    indices, all_used = search.sample_indices(n_total, int(n), seed)
    if all_used:
        warnings.warn(f"{source}: only {n_total} embeddings available, using all of them", FaceauditWarning,
                      stacklevel=2)
    return np.asarray(indices, dtype=np.int64)


def _store(checkpoint: str | os.PathLike | None, n_queries: int, *key_parts) -> Checkpoint | None:
    """A checkpoint only where the work spans several chunks."""
    if checkpoint is None or n_queries <= CHECKPOINT_QUERIES:
        return None
    return Checkpoint(checkpoint, fingerprint(*key_parts))


def _chunks(n: int, done: int, progress: bool, desc: str):
    """(start, stop) of the query chunks still to search, with a bar over all of them."""
    bar = tqdm(total=n, initial=done, desc=desc, unit="query", disable=not progress or n <= CHECKPOINT_QUERIES,
               leave=False)
    try:
        for start in range(done, n, CHECKPOINT_QUERIES):
            stop = min(start + CHECKPOINT_QUERIES, n)
            yield start, stop
            bar.update(stop - start)
    finally:
        bar.close()


def best_matches(query: EmbeddingSet, reference: EmbeddingSet, *, n_comparisons: int | None = None,
                 seed: int = SEED, device: str = "auto", precision: str = "fp32",
                 memory_budget_bytes: int | None = None, progress: bool = True,
                 checkpoint: str | os.PathLike | None = None) -> BestMatchResult:
    """Each sampled query's most similar reference image (exact; ties: lowest reference index).

    Queries are searched in chunks of :data:`CHECKPOINT_QUERIES`; with ``checkpoint`` (a file
    path) finished chunks are saved there, an interrupted run resumes from them, and the
    file is removed at the end.
    """
    _check_pair(query, reference)
    picked = sample_queries(len(query), n_comparisons, seed, query.metadata.get("source_file", "query set"))
    n = len(picked)
    store = _store(checkpoint, n, "best", picked, query.vectors, reference.vectors, precision)
    saved = store.load() if store else None
    scores, indices = np.empty(n, dtype=np.float32), np.empty(n, dtype=np.int64)
    done = 0
    if saved is not None:
        done = int(saved["done"])
        scores[:done], indices[:done] = saved["scores"], saved["indices"]
    for start, stop in _chunks(n, done, progress, "best matches"):
        found = search.best_match(query.vectors[picked[start:stop]], reference.vectors, device=device,
                                  precision=precision, memory_budget_bytes=memory_budget_bytes,
                                  progress=progress, desc=f"best matches of queries {start + 1:,}-{stop:,}")
        scores[start:stop], indices[start:stop] = found.scores, found.indices
        if store and stop < n:
            store.save(done=np.int64(stop), scores=scores[:stop], indices=indices[:stop])
    if store:
        store.clear()
    return BestMatchResult(picked, scores, indices)


def best_match_rows(result: BestMatchResult, query: EmbeddingSet, reference: EmbeddingSet) -> Iterable[list]:
    """Rows of the paper's Best_Matches CSV (:data:`BEST_MATCH_COLUMNS`); scores as float32 widened to float."""
    for qi, score, ri in zip(result.sample_indices.tolist(), result.scores.tolist(),
                             result.reference_indices.tolist()):
        yield [qi, query.identities[qi], query.image_names[qi], ri, reference.identities[ri],
               reference.image_names[ri], repr(float(score))]


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


# ---------------------------------------------------------------- globally closest pairs

def _top_pairs_in_chunks(queries: np.ndarray, references: np.ndarray, k: int, positive_only: bool, device: str,
                         precision: str, memory_budget_bytes: int | None, progress: bool,
                         checkpoint: str | os.PathLike | None) -> search.TopPairs:
    """Global top-K over query chunks: the K best of the chunks' own top-K lists, resumable."""
    n = len(queries)
    store = _store(checkpoint, n, "top", k, positive_only, queries, references, precision)
    saved = store.load() if store else None
    best = (np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64))
    done = 0
    if saved is not None:
        done, best = int(saved["done"]), (saved["scores"], saved["query_indices"], saved["reference_indices"])
    for start, stop in _chunks(n, done, progress, "closest pairs"):
        found = search.top_pairs(queries[start:stop], references, k, positive_only=positive_only, device=device,
                                 precision=precision, memory_budget_bytes=memory_budget_bytes, progress=progress,
                                 desc=f"closest pairs of queries {start + 1:,}-{stop:,}")
        s, q, r = (np.concatenate(pair) for pair in zip(best, (found.scores, found.query_indices + start,
                                                               found.reference_indices)))
        order = np.lexsort((r, q, -s.astype(np.float64)))[:k]  # score desc, then query, then reference
        best = (s[order], q[order], r[order])
        if store and stop < n:
            store.save(done=np.int64(stop), scores=best[0], query_indices=best[1], reference_indices=best[2])
    if store:
        store.clear()
    return search.TopPairs(*best)


def closest_pairs(query: EmbeddingSet, reference: EmbeddingSet, *, top: int = 100,
                  n_comparisons: int | None = None, seed: int = SEED, positive_only: bool = False,
                  device: str = "auto", precision: str = "fp32", memory_budget_bytes: int | None = None,
                  progress: bool = True, input_file: str | None = None,
                  checkpoint: str | os.PathLike | None = None) -> dict:
    """The ``top`` highest query x reference pairs as the paper's Top-K JSON document.

    Ties: score descending, then query row, then reference row. ``total_pairs_considered``
    is (queries compared) x (reference size); the original wrote queries x K.
    ``checkpoint``: as in :func:`best_matches`.
    """
    if int(top) <= 0:
        raise FaceauditError(f"K (the number of closest pairs) must be > 0, got {top}")
    _check_pair(query, reference)
    picked = np.sort(sample_queries(len(query), n_comparisons, seed,
                                    query.metadata.get("source_file", "query set")))
    found = _top_pairs_in_chunks(query.vectors[picked], reference.vectors, int(top), positive_only, device,
                                 precision, memory_budget_bytes, progress, checkpoint)
    if len(found) < top:
        kind = "positive " if positive_only else ""
        warnings.warn(f"only {len(found)} {kind}pairs found, fewer than the {top} asked for", FaceauditWarning,
                      stacklevel=2)
    results = []
    for rank, (score, qpos, ri) in enumerate(zip(found.scores.tolist(), found.query_indices.tolist(),
                                                 found.reference_indices.tolist()), 1):
        qi = int(picked[qpos])
        q_id, q_name = str(query.identities[qi]), str(query.image_names[qi])
        r_id, r_name = str(reference.identities[ri]), str(reference.image_names[ri])
        results.append({"rank": rank, "similarity_score": float(score), "query_identity": q_id,
                        "query_image_name": q_name, "query_path": f"{q_id}/{q_name}",
                        "casia_identity": r_id, "casia_image_name": r_name, "casia_path": f"{r_id}/{r_name}"})
    metadata = {"input_file": str(input_file if input_file is not None else query.metadata.get("source_file", "")),
                "n_samples_compared": int(len(picked)), "top_global_matches": int(top),
                "total_pairs_considered": int(len(picked)) * int(len(reference))}
    return {"metadata": metadata, "results": results}


def format_closest_json(document: dict) -> str:
    """The paper's layout: metadata indented, one compact result object a line. Valid JSON."""
    meta = document["metadata"]
    lines = ["{", '  "metadata": {']
    items = [f"    {json.dumps(k)}: {json.dumps(meta[k])}" for k in meta]
    lines.append(",\n".join(items))
    lines += ["  },", '  "results": [']
    results = [json.dumps(r, separators=(",", ":"), allow_nan=False) for r in document["results"]]
    if results:
        lines.append(",\n".join(results))
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def write_closest_json(path: str | os.PathLike, document: dict) -> Path:
    text = format_closest_json(document)
    json.loads(text)  # never write what a JSON reader would refuse
    with atomic_write(path) as out:
        out.write(text)
    return Path(path)


def read_closest_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise FaceauditError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FaceauditError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise FaceauditError(f"{path}: expected an object with a 'results' list")
    for number, result in enumerate(document["results"], 1):
        missing = [k for k in PATHS_COLUMNS if not isinstance(result, dict) or k not in result]
        if missing:
            raise FaceauditError(f"{path}: result {number} lacks {', '.join(missing)}")
    return document


def write_paths_csv(path: str | os.PathLike, document: dict) -> Path:
    """``query_path,casia_path,similarity_score``, strings quoted as jq's @csv does."""
    with atomic_write(path, newline="") as out:
        out.write(",".join(PATHS_COLUMNS) + "\n")
        writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        for r in document["results"]:
            writer.writerow([str(r["query_path"]), str(r["casia_path"]), float(r["similarity_score"])])
    return Path(path)


# ---------------------------------------------------------------- the figure

def plot_best_matches(scores: Mapping[str, np.ndarray], title: str | None = None,
                      thresholds: Sequence[tuple[str, float]] = ()):
    """KDE of best-match similarities per dataset, thresholds as vertical lines."""
    from faceaudit.plots import plot_distributions

    if title is None:
        names = ", ".join(scores)
        title = f"Distribution of best-match similarities ({names})"
    return plot_distributions(dict(scores), title, xlabel="Cosine similarity (best match)",
                              thresholds=list(thresholds))


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
                query: EmbeddingSet | None = None, reference: EmbeddingSet | None = None,
                return_scores: bool = False, flag_threshold: float | None = None):
    """Best matches of a sample of QUERY in REFERENCE: scores, CSV, KDE figure and summary files.

    Returns the summary with ``files`` (the paths written) added; with ``return_scores``,
    (summary, best-match scores).
    ``query``/``reference``: the sets already loaded from those files, so none is parsed twice.
    ``flag_threshold``: also write ``<stem>_identity_flags.csv`` (:func:`identity_flags`) and
    list the flagged query identities in the summary.
    """
    from faceaudit.files import write_scores
    from faceaudit.plots import save_figure

    if n_comparisons is not None and int(n_comparisons) <= 0:
        raise FaceauditError(f"--n-comparisons must be > 0, got {n_comparisons}")
    query = _loaded(query, query_file, skip_invalid)
    reference = _loaded(reference, reference_file, skip_invalid)
    out = Path(out_dir)
    stem = _stem(query_file)
    n_label = n_comparisons if n_comparisons is not None else len(query)
    base = out / f"{stem}_BestMatches_{n_label}"
    result = best_matches(query, reference, n_comparisons=n_comparisons, seed=seed, device=device,
                          precision=precision, memory_budget_bytes=memory_budget_bytes, progress=progress,
                          checkpoint=base.with_name(base.name + ".partial.npz"))
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
    from faceaudit.plots import save_figure

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


def run_closest(query_file: str | os.PathLike, reference_file: str | os.PathLike, *, out_dir=".",
                top: int = 100, n_comparisons: int | None = None, positive_only: bool = False,
                seed: int = SEED, device: str = "auto", precision: str = "fp32", skip_invalid: bool = False,
                memory_budget_bytes: int | None = None, progress: bool = True,
                input_label: str | None = None, paths_csv: bool = True,
                query: EmbeddingSet | None = None, reference: EmbeddingSet | None = None) -> list[Path]:
    """The Top-K JSON ``<stem>_Top<K>Global_<n>.json`` and its paths CSV ``..._matches.csv``.

    ``query``/``reference``: the sets already loaded from those files, so none is parsed twice.
    """

    if int(top) <= 0:
        raise FaceauditError(f"K must be > 0, got {top}")
    if n_comparisons is not None and int(n_comparisons) <= 0:
        raise FaceauditError(f"the number of comparisons must be > 0, got {n_comparisons}")
    query = _loaded(query, query_file, skip_invalid)
    reference = _loaded(reference, reference_file, skip_invalid)
    n_label = n_comparisons if n_comparisons is not None else len(query)
    base = Path(out_dir) / f"{_stem(query_file)}_Top{top}Global_{n_label}"
    document = closest_pairs(query, reference, top=top, n_comparisons=n_comparisons, seed=seed,
                             positive_only=positive_only, device=device, precision=precision,
                             memory_budget_bytes=memory_budget_bytes, progress=progress,
                             input_file=input_label if input_label is not None else str(query_file),
                             checkpoint=base.with_name(base.name + ".partial.npz"))
    written = [write_closest_json(base.with_name(base.name + ".json"), document)]
    if paths_csv:
        written.append(write_paths_csv(base.with_name(base.name + "_matches.csv"), document))
    return written
