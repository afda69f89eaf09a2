"""Clustering figures: a 2-D projection (t-SNE, or UMAP when installed) of a sample of identities,
coloured by identity and by cluster side by side, and the cluster-size histogram.
"""
from __future__ import annotations

import importlib.util

import matplotlib.pyplot as plt
import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.report import plots  # noqa: F401  (selects the headless Agg backend)

PROJECTIONS = ("auto", "tsne", "umap")
DEFAULT_SEED = 42


def projection_method(name: str = "auto") -> str:
    """``umap`` when asked for or, for ``auto``, when umap-learn is installed; else ``tsne``."""
    if name not in PROJECTIONS:
        raise FaceauditError(f"unknown projection {name!r}; use one of {', '.join(PROJECTIONS)}")
    has_umap = importlib.util.find_spec("umap") is not None
    if name == "umap" and not has_umap:
        raise FaceauditError("--projection umap needs umap-learn: pip install umap-learn (or faceaudit[umap])")
    return "umap" if name == "umap" or (name == "auto" and has_umap) else "tsne"


def project(vectors: np.ndarray, method: str = "tsne", seed: int = DEFAULT_SEED) -> np.ndarray:
    """2-D coordinates of ``vectors`` by cosine distance: scikit-learn's t-SNE (perplexity 30, or
    less for small samples) or umap-learn's UMAP (15 neighbours, or fewer)."""
    n = len(vectors)
    if n < 3:
        return np.zeros((n, 2)) if n < 2 else np.array([[0.0, 0.0], [1.0, 0.0]])
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_neighbors=min(15, n - 1), metric="cosine", random_state=seed)
        return np.asarray(reducer.fit_transform(vectors), dtype=np.float64)
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), metric="cosine", init="pca", random_state=seed)
    # one OpenMP thread: on a busy machine its spinning threads made a 400-point map 7x slower
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(vectors.astype(np.float64))


def _colour(code: int):
    return plt.get_cmap("tab20")(code % 20)


def cluster_colours(identity_codes: np.ndarray, cluster_codes: np.ndarray) -> np.ndarray:
    """Per cluster, the identity code whose colour it takes, or -1 (drawn as a black x).

    A cluster takes the colour of the identity holding most of its points, unless a larger cluster
    already took that identity's colour: an identity split over clusters, or identities merged into
    one, then stand out.
    """
    table = np.zeros((cluster_codes.max() + 1, identity_codes.max() + 1), dtype=np.int64)
    np.add.at(table, (cluster_codes, identity_codes), 1)
    majority, taken = table.argmax(axis=1), set()
    colours = np.full(len(table), -1, dtype=np.int64)
    for c in np.argsort(-table.max(axis=1), kind="stable"):
        if majority[c] not in taken:
            colours[c] = majority[c]
            taken.add(majority[c])
    return colours


def plot_projection(points: np.ndarray, identities: np.ndarray, clusters: np.ndarray, title: str = "",
                    method: str = "tsne"):
    """Two panels of the same 2-D points: coloured by identity (left) and by cluster (right),
    with clusters coloured by :func:`cluster_colours` (20 colours, repeated beyond)."""
    names, id_codes = np.unique(identities, return_inverse=True)
    cluster_ids, cl_codes = np.unique(clusters, return_inverse=True)
    per_cluster = cluster_colours(id_codes, cl_codes)[cl_codes]
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2))
    axes[0].scatter(points[:, 0], points[:, 1], c=[_colour(c) for c in id_codes], s=18, linewidths=0)
    main = per_cluster >= 0
    axes[1].scatter(points[main, 0], points[main, 1], c=[_colour(c) for c in per_cluster[main]], s=18, linewidths=0)
    axes[1].scatter(points[~main, 0], points[~main, 1], c="black", marker="x", s=22, linewidths=1)
    label = "UMAP" if method == "umap" else "t-SNE"
    axes[0].set_title(f"by identity ({len(names)} identities)")
    axes[1].set_title(f"by cluster ({len(cluster_ids)} clusters; x: not an identity's main cluster)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{label} 1")
        ax.set_ylabel(f"{label} 2")
    if len(names) <= 20:
        for code, name in enumerate(names):
            axes[0].scatter([], [], color=_colour(code), label=str(name), s=18)
        axes[0].legend(fontsize=7, loc="best", ncol=2, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_cluster_sizes(cluster_sizes: np.ndarray, identity_sizes: np.ndarray, title: str = ""):
    """Histogram of cluster sizes beside the identity sizes (images per identity), log-spaced bins."""
    cluster_sizes = np.asarray(cluster_sizes)
    identity_sizes = np.asarray(identity_sizes)
    top = int(max(cluster_sizes.max(), identity_sizes.max()))
    if top <= 50:  # one bin per size
        bins = np.arange(1, top + 2) - 0.5
    else:
        bins = np.unique(np.round(np.geomspace(1, top + 1, num=40))) - 0.5
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.hist(cluster_sizes, bins=bins, alpha=0.6, label=f"clusters ({len(cluster_sizes):,})", color="tab:blue")
    ax.hist(identity_sizes, bins=bins, histtype="step", linewidth=2, label=f"identities ({len(identity_sizes):,})",
            color="tab:red")
    if top > 50:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("images per cluster / per identity")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig
