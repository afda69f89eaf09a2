"""``faceaudit cluster``: do a dataset's embeddings group by its identity labels? Clusters, their scores
against the labels, the identities merged into one cluster or split across several, and figures.

Outputs, under ``out_dir``, named ``<stem>_<method>_...`` (``<stem>``: the input's name up to its first
dot; ``<method>``: ``graph``, ``graph-components``, ``agglomerative``, ``dbscan``, ``hdbscan``, ``kmeans``):
``_clusters.csv`` (each image's cluster), ``_metrics.json`` (settings and scores),
``_merged_identities.csv``, ``_split_identities.csv``, ``_projection.png/.pdf`` and
``_cluster_sizes.png/.pdf``.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from faceaudit import checks
from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.evaluate import clustering as methods
from faceaudit.evaluate.clustering_metrics import (MERGED_COLUMNS, SPLIT_COLUMNS, clustering_scores, contingency,
                                                   merged_identities, split_identities)
from faceaudit.io.embeddings import EmbeddingSet
from faceaudit.io.files import jsonable, write_csv, write_json
from faceaudit.stages.variability import load
from faceaudit.version import __version__

DEFAULT_OUT = "cluster_out"
DEFAULT_TOP = 100
SAMPLE_IDENTITIES = 20
SAMPLE_IMAGES_PER_IDENTITY = 20  # with 20 identities: a t-SNE of <= 400 points, seconds
FLAGGED_IN_SAMPLE = 2  # the top merged pairs and split identities put in the projection's sample first
SHOWN = 10  # findings printed on the console

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def resolve_threshold(threshold: float | None, eset: EmbeddingSet, name: str) -> tuple[float, str]:
    """(threshold, where it came from): ``threshold`` when given, else the default of the model
    recorded as ``arch`` in the embeddings' metadata; without either it is an error."""
    from faceaudit.models import model_threshold

    if threshold is not None:
        return float(threshold), "--threshold"
    value, source = model_threshold(eset.metadata.get("arch"), "default", "default threshold")
    if value is None:
        raise FaceauditError(f"{name}: {source}; pass --threshold T, a cosine similarity in [-1, 1] (e.g. the "
                             "FMR1000 threshold that `faceaudit variability` reports)")
    return value, source


def check_embeddings(eset: EmbeddingSet, name: str) -> None:
    """Labels that a clustering can be scored against, and finite vectors."""
    finite = np.isfinite(eset.vectors).all(axis=1)
    if not finite.all():
        raise FaceauditError(f"{name}: row {int(np.argmin(finite)) + 1} has NaN or infinite values")
    n_ids = len(np.unique(eset.identities))
    if n_ids < 2:
        raise FaceauditError(f"{name}: every image has the same identity ({eset.identities[0]!r}); clustering is "
                             "scored against at least 2 identities")
    if n_ids == len(eset):
        raise FaceauditError(f"{name}: every image has its own identity ({n_ids:,} identities for {len(eset):,} "
                             "images); there are no same-identity pairs for a clustering to recover")


def _label(method: str, graph_algorithm: str) -> str:
    return "graph-components" if method == "graph" and graph_algorithm == "components" else method


def projection_sample(identities: np.ndarray, first: list[str], n_identities: int, seed: int,
                      per_identity: int = SAMPLE_IMAGES_PER_IDENTITY) -> np.ndarray:
    """Rows of ``n_identities`` identities: those in ``first`` (in order), then a seeded random choice;
    at most ``per_identity`` (seeded) images of each."""
    rng = np.random.default_rng(seed)
    names, codes = np.unique(identities, return_inverse=True)
    chosen = list(dict.fromkeys(first))[:n_identities]
    rest = np.setdiff1d(names, chosen)
    chosen += list(rng.choice(rest, size=min(len(rest), n_identities - len(chosen)), replace=False))
    rows = rng.permutation(np.flatnonzero(np.isin(identities, chosen)))
    rows = rows[np.argsort(codes[rows], kind="stable")]
    starts = np.searchsorted(codes[rows], codes[rows])
    return np.sort(rows[np.arange(len(rows)) - starts < per_identity])


def _figures(eset, labels, table, findings_first, base: Path, title: str, projection: str, n_identities: int,
             seed: int) -> list[Path]:
    from faceaudit.report.clusters import plot_cluster_sizes, plot_projection, project
    from faceaudit.report.plots import save_figure

    rows = projection_sample(eset.identities, findings_first, n_identities, seed)
    points = project(eset.vectors[rows], projection, seed)
    fig = plot_projection(points, eset.identities[rows], labels[rows], method=projection,
                          title=f"{title}: {len(rows):,} images of {len(np.unique(eset.identities[rows]))} identities")
    files = save_figure(fig, base.with_name(base.name + "_projection"), formats=("png", "pdf"))
    fig = plot_cluster_sizes(table.cluster_sizes, table.identity_sizes, title=title)
    return files + save_figure(fig, base.with_name(base.name + "_cluster_sizes"), formats=("png", "pdf"))


def _check_options(method, graph_algorithm, linkage, threshold, n_clusters, seed, counts: dict) -> bool:
    """Every option checked before any work; warns of options ``method`` ignores. Returns whether
    ``method`` needs a threshold."""
    needs_threshold = methods.check_methods(method, graph_algorithm, linkage, n_clusters)
    if threshold is not None:
        checks.cosine(threshold, "--threshold")
    checks.seed(seed)
    for what, value in {**counts, "--n-clusters": 1 if n_clusters is None else n_clusters}.items():
        if int(value) <= 0:
            raise FaceauditError(f"{what} must be > 0, got {value}")
    unused = [option for option, given, used in (("--threshold", threshold is not None, needs_threshold),
                                                 ("--n-clusters", n_clusters is not None,
                                                  method in ("kmeans", "agglomerative"))) if given and not used]
    if unused:
        warnings.warn(f"{method} does not use {' or '.join(unused)}", FaceauditWarning, stacklevel=3)
    return needs_threshold


def run(source, method: str = "graph", out_dir=DEFAULT_OUT, *, threshold: float | None = None,
        k: int = methods.DEFAULT_K, graph_algorithm: str = "chinese-whispers", n_clusters: int | None = None,
        min_samples: int = 5, min_cluster_size: int = 5, linkage: str = "average",
        max_iterations: int = methods.DEFAULT_MAX_ITERATIONS, seed: int = methods.DEFAULT_SEED,
        top: int = DEFAULT_TOP, figures: bool = True, projection: str = "auto",
        sample_identities: int = SAMPLE_IDENTITIES, device: str = "auto", precision: str = "fp32",
        memory_budget_bytes: int | None = None, progress: bool = True, skip_invalid: bool = False,
        stem: str | None = None, echo: Echo = _quiet) -> dict:
    """Cluster one embedding file (or :class:`EmbeddingSet`), score it against the identity labels,
    and write every output (named after ``stem``, default the input's). Returns the JSON's content
    with the written ``paths``."""
    needs_threshold = _check_options(method, graph_algorithm, linkage, threshold, n_clusters, seed, {
        "--k": k, "--top": top, "--sample-identities": sample_identities, "--min-samples": min_samples,
        "--min-cluster-size": min_cluster_size, "--max-iterations": max_iterations})
    if figures:
        from faceaudit.report.clusters import projection_method
        projection = projection_method(projection)
    eset, default_stem = load(source, skip_invalid)
    stem = stem or default_stem
    name = str(eset.metadata.get("source_file", stem))
    check_embeddings(eset, name)
    n_ids = len(np.unique(eset.identities))
    source_of_threshold = None
    if needs_threshold:
        threshold, source_of_threshold = resolve_threshold(threshold, eset, name)
    elif method == "kmeans":
        n_clusters = n_ids if n_clusters is None else n_clusters
    label = _label(method, graph_algorithm)
    echo(f"{stem}: {len(eset):,} images of {n_ids:,} identities; clustering with {label}"
         + (f" at cosine >= {threshold:.4f} ({source_of_threshold})" if source_of_threshold else ""))

    started = time.perf_counter()
    result = methods.cluster(eset.vectors, method, threshold=threshold, k=k, graph_algorithm=graph_algorithm,
                             n_clusters=n_clusters, min_samples=min_samples, min_cluster_size=min_cluster_size,
                             linkage=linkage, seed=seed, max_iterations=max_iterations, device=device,
                             precision=precision, memory_budget_bytes=memory_budget_bytes, progress=progress)
    clustered = time.perf_counter()
    table = contingency(eset.identities, result.labels)
    scores = clustering_scores(eset.identities, result.labels, table)
    split = split_identities(table)
    merged, left_out = merged_identities(table, top)
    scored = time.perf_counter()

    out = Path(out_dir)
    base = out / f"{stem}_{label}"
    paths = {"clusters": write_csv(base.with_name(base.name + "_clusters.csv"), ("identity", "image_name", "cluster"),
                                   zip(eset.identities.tolist(), eset.image_names.tolist(), result.labels.tolist())),
             "merged_identities": write_csv(base.with_name(base.name + "_merged_identities.csv"), MERGED_COLUMNS,
                                            merged),
             "split_identities": write_csv(base.with_name(base.name + "_split_identities.csv"), SPLIT_COLUMNS,
                                           split)}
    if figures:
        first = [name for row in merged[:FLAGGED_IN_SAMPLE] for name in row[:2]]
        first += [row[0] for row in split[:FLAGGED_IN_SAMPLE]]
        paths["figures"] = _figures(eset, result.labels, table, first, base, f"{stem}, {label}", projection,
                                    sample_identities, seed)
    report = {"dataset": stem, "input": eset.metadata.get("source_file"), "method": method, "label": label,
              "arch": eset.metadata.get("arch"), "threshold_source": source_of_threshold,
              "settings": result.settings, "scores": scores, "merged_pairs_listed": len(merged),
              "merged_left_out": left_out, "split_identities": len(split),
              "seconds": {"cluster": clustered - started, "score": scored - clustered},
              "projection": projection if figures else None, "faceaudit_version": __version__}
    json_path = base.with_name(base.name + "_metrics.json")
    report["paths"] = {key: [str(p) for p in value] if isinstance(value, list) else str(value)
                       for key, value in paths.items()} | {"metrics": str(json_path)}
    write_json(json_path, jsonable(report))
    echo("\n".join(summary_lines(report, merged, split)))
    return report


def summary_lines(report: dict, merged: list[list], split: list[list]) -> list[str]:
    """The console summary: scores, then the top findings."""
    s = report["scores"]
    lines = [f"  {s['clusters']:,} clusters for {s['identities']:,} identities "
             f"({s['singleton_clusters']:,} single-image clusters)",
             f"  NMI {s['nmi']:.4f}  ARI {s['ari']:.4f}  Fowlkes-Mallows {s['fowlkes_mallows']:.4f} "
             "(geometric mean of pairwise precision and recall; the source project's \"pairwise F1\")",
             f"  pairwise precision {s['pairwise_precision']:.4f}  recall {s['pairwise_recall']:.4f}  "
             f"F1 {s['pairwise_f1']:.4f}",
             f"  BCubed   precision {s['bcubed_precision']:.4f}  recall {s['bcubed_recall']:.4f}  "
             f"F1 {s['bcubed_f1']:.4f}"]
    lines.append(f"  identity pairs sharing a cluster: {report['merged_pairs_listed']:,} listed"
                 + (" (the most merged first)" if merged else ""))
    for a, b, na, nb, _, pairs, share in merged[:SHOWN]:
        lines.append(f"    {a} + {b}: {share:.0%} of their {na * nb:,} cross pairs in one cluster "
                     f"({'look like one person' if share >= 0.5 else 'partly merged'})")
    lines.append(f"  identities split across clusters: {report['split_identities']:,}")
    for identity, images, clusters, _, largest, share in split[:SHOWN]:
        lines.append(f"    {identity}: {images:,} images in {clusters:,} clusters, {share:.0%} in the largest")
    lines += [f"  wrote {p}" for value in report["paths"].values() for p in (value if isinstance(value, list)
                                                                          else [value])]
    return lines
