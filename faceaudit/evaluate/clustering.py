"""Clustering embeddings by identity without an N x N matrix: a k-nearest-neighbour graph cut at a cosine
threshold (exact blocked search), split into connected components or by Chinese Whispers; and
scikit-learn's agglomerative clustering, DBSCAN (on the same graph), HDBSCAN and k-means.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from faceaudit import checks
from faceaudit.errors import FaceauditError

METHODS = ("graph", "agglomerative", "dbscan", "hdbscan", "kmeans")
GRAPH_ALGORITHMS = ("chinese-whispers", "components")
LINKAGES = ("average", "complete", "single")
DEFAULT_K = 30
DEFAULT_MAX_ITERATIONS = 50
DEFAULT_SEED = 42
#: agglomerative clustering and HDBSCAN hold all N^2 / 2 distances (float64): this many embeddings at most
DENSE_LIMIT = 10_000
_MIN_WEIGHT = 1e-6  # Chinese Whispers weighs an edge by its score, at least this


@dataclass
class Clustering:
    """``labels[i]`` is the cluster of embedding ``i``: 0 is the largest cluster (ties: first image)."""

    labels: np.ndarray  # int64 (n,)
    method: str
    settings: dict = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def relabel(labels: np.ndarray) -> np.ndarray:
    """Clusters numbered by size (largest first, ties: the cluster of the earliest image); noise
    (label -1, from DBSCAN and HDBSCAN) becomes one cluster per image."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    noise = labels < 0
    if noise.any():
        labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    _, first, codes = np.unique(labels, return_index=True, return_inverse=True)
    sizes = np.bincount(codes)
    rank = np.empty(len(sizes), dtype=np.int64)
    rank[np.lexsort((first, -sizes))] = np.arange(len(sizes))
    return rank[codes.ravel()]


# ---------------------------------------------------------------- the kNN graph

@dataclass
class KnnGraph:
    """Directed edges ``rows[e] -> cols[e]``: ``cols[e]`` is among the ``k`` most similar other
    embeddings of ``rows[e]`` and their exact cosine score ``scores[e]`` is >= ``threshold``."""

    n: int
    rows: np.ndarray
    cols: np.ndarray
    scores: np.ndarray
    k: int
    threshold: float

    def adjacency(self, values: np.ndarray) -> sparse.csr_matrix:
        """The symmetric (undirected) graph as CSR with ``values`` (> 0: zeros would vanish) per edge;
        an edge found from both ends keeps the larger value."""
        directed = sparse.csr_matrix((values, (self.rows, self.cols)), shape=(self.n, self.n))
        return directed.maximum(directed.T).tocsr()


def knn_graph(vectors: np.ndarray, k: int, threshold: float, *, device: str = "auto", precision: str = "fp32",
              memory_budget_bytes: int | None = None, progress: bool = True) -> KnnGraph:
    """Each embedding linked to those of its ``k`` nearest others (exact, :func:`faceaudit.search.top_k`)
    whose score is >= ``threshold``; ``k`` is capped at N - 1."""
    from faceaudit.search import as_cosines, top_k  # imports torch: only when a graph is built

    n = len(vectors)
    if n < 2:
        raise FaceauditError(f"clustering needs at least 2 embeddings, got {n}")
    k = min(int(k), n - 1)
    found = top_k(vectors, vectors, k + 1, device=device, precision=precision,
                  memory_budget_bytes=memory_budget_bytes, progress=progress, desc="k nearest neighbours")
    others = found.indices != np.arange(n)[:, None]
    others &= np.cumsum(others, axis=1, dtype=np.int32) <= k  # self is usually first, but may be absent
    keep = others & (found.scores >= np.float64(threshold))  # compared in float64
    rows, col_pos = np.nonzero(keep)
    return KnnGraph(n, rows.astype(np.int64), found.indices[rows, col_pos], as_cosines(found.scores[rows, col_pos]),
                    k, float(threshold))


def connected_components(graph: KnnGraph) -> np.ndarray:
    """The connected components of the (undirected) graph."""
    from scipy.sparse import csgraph  # scipy.linalg comes with it: imported when needed

    return csgraph.connected_components(graph.adjacency(np.ones(len(graph.rows))), directed=False)[1]


def _heaviest_label(votes: sparse.csr_matrix) -> np.ndarray:
    """Per row, the column with the largest value (lowest column on ties); -1 for empty rows."""
    counts = np.diff(votes.indptr)
    filled = counts > 0
    best = np.full(votes.shape[0], -1, dtype=np.int64)
    if not filled.any():
        return best
    row_of = np.repeat(np.arange(votes.shape[0]), counts)
    row_max = np.zeros(votes.shape[0])
    row_max[filled] = np.maximum.reduceat(votes.data, votes.indptr[:-1][filled])
    at_max = np.flatnonzero(votes.data == row_max[row_of])
    rows, first = np.unique(row_of[at_max], return_index=True)  # indices are sorted: first = lowest column
    best[rows] = votes.indices[at_max[first]]
    return best


def chinese_whispers(graph: KnnGraph, *, seed: int = DEFAULT_SEED,
                     max_iterations: int = DEFAULT_MAX_ITERATIONS) -> tuple[np.ndarray, int, bool]:
    """Chinese Whispers (Biemann 2006), vectorised: (labels, rounds run, converged).

    Every embedding starts as its own label. In each round every node finds the label carrying the
    largest summed edge weight (the cosine score) among its neighbours (lowest label on ties); a random
    half of the nodes whose label would change adopt it (all at once; the random half stops
    two-node swaps from oscillating). It stops when no label would change, or after ``max_iterations``.
    """
    adjacency = graph.adjacency(np.maximum(graph.scores, _MIN_WEIGHT).astype(np.float64))
    rng = np.random.default_rng(seed)
    labels = np.arange(graph.n, dtype=np.int64)
    for rounds in range(1, max_iterations + 1):
        votes = sparse.csr_matrix((adjacency.data, labels[adjacency.indices], adjacency.indptr),
                                  shape=adjacency.shape, copy=True)
        votes.sum_duplicates()  # sums each label's weights per row and sorts the columns
        heaviest = _heaviest_label(votes)
        changing = (heaviest >= 0) & (heaviest != labels)
        if not changing.any():
            return labels, rounds, True
        adopt = changing & (rng.random(graph.n) < 0.5)
        labels[adopt] = heaviest[adopt]
    return labels, max_iterations, False


# ---------------------------------------------------------------- scikit-learn's methods

def _check_dense(n: int, method: str) -> None:
    if n > DENSE_LIMIT:
        gib = n * (n - 1) / 2 * 8 / 2 ** 30
        raise FaceauditError(f"{method} holds every pairwise distance ({gib:.1f} GiB for {n:,} embeddings); it is "
                             f"limited to {DENSE_LIMIT:,} embeddings: use --method graph")


def agglomerative(vectors: np.ndarray, threshold: float | None, n_clusters: int | None = None,
                  linkage: str = "average") -> np.ndarray:
    """scikit-learn's agglomerative clustering on cosine distances, cut at distance 1 - ``threshold``
    (clusters closer than that merge) or at ``n_clusters`` clusters."""
    from sklearn.cluster import AgglomerativeClustering

    _check_dense(len(vectors), "agglomerative clustering")
    cut = None if n_clusters is not None else 1.0 - threshold
    model = AgglomerativeClustering(n_clusters=n_clusters, distance_threshold=cut, metric="cosine", linkage=linkage)
    return model.fit_predict(vectors)


def dbscan(graph: KnnGraph, min_samples: int) -> np.ndarray:
    """scikit-learn's DBSCAN over the thresholded kNN graph (distance 1 - score, eps 1 - threshold).

    It equals DBSCAN on all pairs when no embedding has more than ``k`` others above the threshold.
    Noise is labelled -1.
    """
    from sklearn.cluster import DBSCAN

    distances = graph.adjacency(2.0 - graph.scores.astype(np.float64))  # 1 + distance: never 0
    distances.data = np.maximum(distances.data - 1.0, 0.0)  # duplicates stay stored, at distance 0
    eps = max(1.0 - graph.threshold, 0.0)
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(distances)


def hdbscan(vectors: np.ndarray, min_cluster_size: int) -> np.ndarray:
    """scikit-learn's HDBSCAN on Euclidean distances of the unit vectors (the order of cosine
    distances); no threshold. Noise is labelled -1."""
    from sklearn.cluster import HDBSCAN

    _check_dense(len(vectors), "HDBSCAN")
    return HDBSCAN(min_cluster_size=min_cluster_size, metric="euclidean", copy=True).fit_predict(vectors)


def kmeans(vectors: np.ndarray, n_clusters: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """scikit-learn's k-means (k-means++ initialisation, one run) on the unit vectors."""
    from sklearn.cluster import KMeans

    if n_clusters > len(vectors):
        raise FaceauditError(f"kmeans: {n_clusters:,} clusters asked for but there are only {len(vectors):,} "
                             "embeddings")
    return KMeans(n_clusters=n_clusters, n_init=1, random_state=seed).fit_predict(vectors)


# ---------------------------------------------------------------- one entry point

def check_methods(method: str, graph_algorithm: str, linkage: str, n_clusters: int | None) -> bool:
    """A one-line error for an unknown method, graph algorithm or linkage; returns whether ``method``
    (with ``n_clusters``) needs a cosine threshold."""
    if method not in METHODS:
        raise FaceauditError(f"unknown clustering method {method!r}; use one of {', '.join(METHODS)}")
    if graph_algorithm not in GRAPH_ALGORITHMS or linkage not in LINKAGES:
        raise FaceauditError(f"unknown graph algorithm {graph_algorithm!r} or linkage {linkage!r}; use "
                             f"{', '.join(GRAPH_ALGORITHMS)} and {', '.join(LINKAGES)}")
    return method in ("graph", "dbscan") or (method == "agglomerative" and n_clusters is None)


def cluster(vectors: np.ndarray, method: str = "graph", *, threshold: float | None = None, k: int = DEFAULT_K,
            graph_algorithm: str = "chinese-whispers", n_clusters: int | None = None, min_samples: int = 5,
            min_cluster_size: int = 5, linkage: str = "average", seed: int = DEFAULT_SEED,
            max_iterations: int = DEFAULT_MAX_ITERATIONS, device: str = "auto", precision: str = "fp32",
            memory_budget_bytes: int | None = None, progress: bool = True) -> Clustering:
    """Cluster unit ``vectors`` with ``method`` (:data:`METHODS`); labels renumbered by :func:`relabel`.

    ``threshold`` (cosine) is needed by graph, dbscan and agglomerative (unless ``n_clusters``);
    ``n_clusters`` is needed by kmeans. ``settings`` records what was used.
    """
    needs_threshold = check_methods(method, graph_algorithm, linkage, n_clusters)
    if needs_threshold and threshold is None:
        raise FaceauditError(f"{method} clustering needs a cosine threshold")
    if threshold is not None:
        threshold = checks.cosine(threshold)
    settings: dict = {}
    if method in ("graph", "dbscan"):
        graph = knn_graph(vectors, k, threshold, device=device, precision=precision,
                          memory_budget_bytes=memory_budget_bytes, progress=progress)
        settings.update(threshold=float(threshold), k=graph.k, edges=len(graph.rows))
        if method == "dbscan":
            labels = dbscan(graph, min_samples)
            settings.update(min_samples=min_samples, noise=int((labels < 0).sum()))
        elif graph_algorithm == "components":
            labels = connected_components(graph)
            settings.update(graph_algorithm=graph_algorithm)
        else:
            labels, rounds, converged = chinese_whispers(graph, seed=seed, max_iterations=max_iterations)
            settings.update(graph_algorithm=graph_algorithm, seed=seed, rounds=rounds, converged=converged)
    elif method == "agglomerative":
        labels = agglomerative(vectors, threshold, n_clusters, linkage)
        settings.update(linkage=linkage, **({"n_clusters": n_clusters} if n_clusters is not None
                                            else {"threshold": float(threshold)}))
    elif method == "hdbscan":
        labels = hdbscan(vectors, min_cluster_size)
        settings.update(min_cluster_size=min_cluster_size, noise=int((labels < 0).sum()))
    else:
        if n_clusters is None:
            raise FaceauditError("kmeans needs the number of clusters")
        labels = kmeans(vectors, n_clusters, seed)
        settings.update(n_clusters=n_clusters, seed=seed)
    return Clustering(relabel(labels), method, settings)
