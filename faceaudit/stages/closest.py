"""The globally closest query x reference pairs, in the paper's ``Closest`` format.

- :func:`closest_pairs`: the K highest-similarity pairs over a (sampled) query set, as the
  document of the paper's ``<stem>_Top<K>Global_<n>.json``;
- its writers: that JSON, laid out as the paper's files, and the
  ``query_path,casia_path,similarity_score`` CSV that ``get_paths.sh`` makes from it;
- :func:`run_closest`: both files for one query file (the CLI, ``find_closest.py``, the demo).
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path

import numpy as np

from faceaudit import search
from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.io.embeddings import EmbeddingSet
from faceaudit.io.files import atomic_write, read_json
from faceaudit.io.shards import ShardSet
from faceaudit.stages.leakage import SEED, check_pair, loaded, sample_queries

CLOSEST_RESULT_KEYS = ("rank", "similarity_score", "query_identity", "query_image_name", "query_path",
                       "casia_identity", "casia_image_name", "casia_path")
CLOSEST_METADATA_KEYS = ("input_file", "n_samples_compared", "top_global_matches", "total_pairs_considered")
PATHS_COLUMNS = ("query_path", "casia_path", "similarity_score")


def closest_pairs(query: EmbeddingSet, reference: EmbeddingSet | ShardSet, *, top: int = 100,
                  n_comparisons: int | None = None, seed: int = SEED, positive_only: bool = False,
                  device: str = "auto", precision: str = "fp32", memory_budget_bytes: int | None = None,
                  progress: bool = True, input_file: str | None = None,
                  checkpoint: str | os.PathLike | None = None, index: str = "exact",
                  options: search.IndexOptions | None = None) -> dict:
    """The ``top`` highest query x reference pairs as the paper's Top-K JSON document.

    Ties: score descending, then query row, then reference row. ``total_pairs_considered``
    is (queries compared) x (reference size); the original wrote queries x K.
    ``checkpoint``: as in :func:`best_matches`. ``index``: another search backend: the K best
    pairs among each query's K nearest it finds (:func:`faceaudit.search.top_pairs_index`).
    """
    if int(top) <= 0:
        raise FaceauditError(f"K (the number of closest pairs) must be > 0, got {top}")
    check_pair(query, reference)
    picked = np.sort(sample_queries(len(query), n_comparisons, seed,
                                    query.metadata.get("source_file", "query set")))
    if index == "exact":
        found = search.top_pairs_resumable(query.vectors[picked], reference.vectors, int(top),
                                           positive_only=positive_only, checkpoint=checkpoint, device=device,
                                           precision=precision, memory_budget_bytes=memory_budget_bytes,
                                           progress=progress)
    else:
        options = options or search.IndexOptions(device=device, precision=precision, seed=seed,
                                                 memory_budget_bytes=memory_budget_bytes, progress=progress)
        found = search.top_pairs_index(index, query.vectors[picked], reference.vectors,
                                       min(int(top), len(reference)), positive_only=positive_only, options=options)
    if len(found) < top:
        kind = "positive " if positive_only else ""
        warnings.warn(f"only {len(found)} {kind}pairs found, fewer than the {top} asked for", FaceauditWarning,
                      stacklevel=2)
    results = []
    scores = search.as_cosines(found.scores)  # cosines shown to users never exceed 1
    for rank, (score, qpos, ri) in enumerate(zip(scores.tolist(), found.query_indices.tolist(),
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
    if not path.is_file():
        raise FaceauditError(f"{path}: file not found")
    document = read_json(path, "a Top-K JSON file")
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



def run_closest(query_file: str | os.PathLike, reference_file: str | os.PathLike, *, out_dir=".",
                top: int = 100, n_comparisons: int | None = None, positive_only: bool = False,
                seed: int = SEED, device: str = "auto", precision: str = "fp32", skip_invalid: bool = False,
                memory_budget_bytes: int | None = None, progress: bool = True,
                input_label: str | None = None, paths_csv: bool = True,
                query: EmbeddingSet | None = None, reference: EmbeddingSet | ShardSet | None = None,
                index: str = "exact", options: search.IndexOptions | None = None) -> list[Path]:
    """The Top-K JSON ``<stem>_Top<K>Global_<n>.json`` and its paths CSV ``..._matches.csv``.

    ``query``/``reference``: the sets already loaded from those files, so none is parsed twice.
    """

    if int(top) <= 0:
        raise FaceauditError(f"K must be > 0, got {top}")
    if n_comparisons is not None and int(n_comparisons) <= 0:
        raise FaceauditError(f"the number of comparisons must be > 0, got {n_comparisons}")
    query = loaded(query, query_file, skip_invalid)
    reference = loaded(reference, reference_file, skip_invalid)
    n_label = n_comparisons if n_comparisons is not None else len(query)
    base = Path(out_dir) / f"{Path(query_file).stem}_Top{top}Global_{n_label}"
    document = closest_pairs(query, reference, top=top, n_comparisons=n_comparisons, seed=seed,
                             positive_only=positive_only, device=device, precision=precision,
                             memory_budget_bytes=memory_budget_bytes, progress=progress,
                             input_file=input_label if input_label is not None else str(query_file),
                             checkpoint=base.with_name(base.name + ".partial.npz"), index=index,
                             options=options)
    written = [write_closest_json(base.with_name(base.name + ".json"), document)]
    if paths_csv:
        written.append(write_paths_csv(base.with_name(base.name + "_matches.csv"), document))
    return written
