"""How well a clustering recovers identity labels: NMI, ARI and Fowlkes-Mallows (scikit-learn), pairwise
and BCubed precision/recall/F1 from the sparse contingency table, and the audit findings (identities
merged into one cluster, identities split across clusters).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from faceaudit.errors import FaceauditWarning

#: label pairs enumerated at most for the merged-identities table (a giant cluster of m identities
#: holds m(m-1)/2 of them); the clusters with the most identities are left out beyond it
MAX_LABEL_PAIRS = 4_000_000


@dataclass
class Contingency:
    """The non-zero cells of the identity x cluster table, sorted by identity then cluster.

    Cell ``c`` holds ``counts[c]`` images of identity ``rows[c]`` in cluster ``cols[c]``;
    ``names`` are the identities, in the order of their codes.
    """

    rows: np.ndarray           # int64 identity code per cell
    cols: np.ndarray           # int64 cluster code per cell
    counts: np.ndarray         # int64 images per cell
    identity_sizes: np.ndarray  # int64 images per identity
    cluster_sizes: np.ndarray   # int64 images per cluster
    names: np.ndarray           # identity names

    @property
    def n(self) -> int:
        return int(self.identity_sizes.sum())


def contingency(identities, clusters) -> Contingency:
    """The contingency table of identity labels (any values) against cluster ids (integers)."""
    names, rows = np.unique(np.asarray(identities), return_inverse=True)
    cluster_ids, cols = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = len(cluster_ids)
    cells, counts = np.unique(rows.astype(np.int64) * n_clusters + cols, return_counts=True)
    return Contingency(cells // n_clusters, cells % n_clusters, counts.astype(np.int64),
                       np.bincount(rows, minlength=len(names)).astype(np.int64),
                       np.bincount(cols, minlength=n_clusters).astype(np.int64), names)


def _pairs(sizes: np.ndarray) -> int:
    sizes = sizes.astype(np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def pairwise_scores(table: Contingency) -> dict:
    """Pairwise precision, recall, F1 over unordered image pairs.

    Precision: of the pairs put in one cluster, the share with one identity; recall: of the
    same-identity pairs, the share put in one cluster; F1: their harmonic mean. With no pair
    in any cluster (all singletons) precision is 1 (no false merge), by convention.
    """
    correct, clustered, same = _pairs(table.counts), _pairs(table.cluster_sizes), _pairs(table.identity_sizes)
    precision = correct / clustered if clustered else 1.0
    recall = correct / same if same else 1.0
    return {"pairwise_precision": precision, "pairwise_recall": recall, "pairwise_f1": _f1(precision, recall),
            "same_identity_pairs": same, "same_cluster_pairs": clustered, "correct_pairs": correct}


def bcubed_scores(table: Contingency) -> dict:
    """BCubed precision, recall, F1 (Bagga & Baldwin; Amigo et al. 2009), averaged over images.

    An image's precision is the share of its cluster with its identity, its recall the share of
    its identity in its cluster (both counting the image itself).
    """
    squared = table.counts.astype(np.float64) ** 2
    precision = float((squared / table.cluster_sizes[table.cols]).sum() / table.n)
    recall = float((squared / table.identity_sizes[table.rows]).sum() / table.n)
    return {"bcubed_precision": precision, "bcubed_recall": recall, "bcubed_f1": _f1(precision, recall)}


def clustering_scores(identities, clusters, table: Contingency | None = None) -> dict:
    """Every score of a clustering against the identity labels, as one flat dict.

    NMI (arithmetic normalisation), ARI and Fowlkes-Mallows are scikit-learn's. Fowlkes-Mallows is
    the geometric mean of pairwise precision and recall (the source project reported it as
    "pairwise F1"); ``pairwise_f1`` here is the harmonic mean.
    """
    from sklearn.metrics import adjusted_rand_score, fowlkes_mallows_score, normalized_mutual_info_score

    table = contingency(identities, clusters) if table is None else table
    true_codes = np.repeat(table.rows, table.counts)  # the same partitions, one entry per image
    pred_codes = np.repeat(table.cols, table.counts)
    scores = {"images": table.n, "identities": len(table.identity_sizes), "clusters": len(table.cluster_sizes),
              "singleton_clusters": int((table.cluster_sizes == 1).sum()),
              "nmi": float(normalized_mutual_info_score(true_codes, pred_codes)),
              "ari": float(adjusted_rand_score(true_codes, pred_codes)),
              "fowlkes_mallows": float(fowlkes_mallows_score(true_codes, pred_codes))}
    scores.update(pairwise_scores(table))
    scores.update(bcubed_scores(table))
    return scores


# ---------------------------------------------------------------- audit findings

SPLIT_COLUMNS = ("identity", "images", "clusters", "largest_cluster", "largest_cluster_images",
                 "largest_cluster_share")
MERGED_COLUMNS = ("identity_a", "identity_b", "images_a", "images_b", "shared_clusters", "merged_image_pairs",
                  "merged_share")


def split_identities(table: Contingency) -> list[list]:
    """Per identity found in more than one cluster: its images, clusters, and its largest cluster
    (the lowest cluster code among equals) with the share of its images there.

    Sorted by clusters (most first), then that share (smallest first), then name.
    """
    starts = np.searchsorted(table.rows, np.arange(len(table.identity_sizes)))  # every identity has a cell
    spread = np.diff(np.append(starts, len(table.rows)))
    largest = np.maximum.reduceat(table.counts, starts)
    at_max = table.counts == largest[table.rows]
    first = np.unique(table.rows[at_max], return_index=True)[1]
    main = table.cols[np.flatnonzero(at_max)[first]]
    share = largest / table.identity_sizes
    chosen = np.flatnonzero(spread > 1)
    order = chosen[np.lexsort((table.names[chosen], share[chosen], -spread[chosen]))]
    return [[str(table.names[i]), int(table.identity_sizes[i]), int(spread[i]), int(main[i]), int(largest[i]),
             float(share[i])] for i in order]


def _within_group_pairs(group_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, second) positions of every pair p < q inside consecutive groups of the given sizes."""
    group_sizes = group_sizes.astype(np.int64)
    group_start = np.repeat(np.cumsum(group_sizes) - group_sizes, group_sizes)
    position = np.arange(group_sizes.sum()) - group_start
    partners = np.repeat(group_sizes, group_sizes) - position - 1  # later members of the same group
    first = np.repeat(np.arange(len(position)), partners)
    offset = np.arange(len(first)) - np.repeat(np.cumsum(partners) - partners, partners)
    return first, first + 1 + offset


def merged_identities(table: Contingency, top: int | None = None,
                      max_label_pairs: int = MAX_LABEL_PAIRS) -> tuple[list[list], dict]:
    """Identity pairs that share clusters, the most merged first, and a note on what was left out.

    ``merged_image_pairs`` counts the image pairs (one of each identity) put in one cluster;
    ``merged_share`` divides it by all such pairs (1.0: the two identities are clustered as one
    person). Sorted by share, then image pairs (both descending), then names. Clusters holding
    so many identities that their pairs exceed ``max_label_pairs`` are left out (with a warning)
    and reported in the returned note.
    """
    by_cluster = np.lexsort((table.rows, table.cols))
    cols = table.cols[by_cluster]
    members = np.bincount(cols, minlength=len(table.cluster_sizes))  # identities per cluster
    pair_counts = members * (members - 1) // 2
    dropped = np.zeros(len(members), dtype=bool)
    if pair_counts.sum() > max_label_pairs:  # leave out the clusters with the most identities
        order = np.argsort(-members, kind="stable")
        excess = np.cumsum(pair_counts[order])
        cut = int(np.searchsorted(excess, pair_counts.sum() - max_label_pairs))
        dropped[order[:cut + 1]] = True
    note = {"clusters_left_out": int(dropped.sum()),
            "identities_in_them": [int(m) for m in members[dropped]][:20]}
    if dropped.any():
        warnings.warn(f"{int(dropped.sum())} cluster(s) hold so many identities (up to {int(members.max()):,}) that "
                      "their identity pairs are not listed; the threshold is probably too low for this set",
                      FaceauditWarning, stacklevel=2)
    keep = ~dropped[cols]
    cells = by_cluster[keep]
    first, second = _within_group_pairs(members[~dropped & (members > 0)])
    a, b = table.rows[cells[first]], table.rows[cells[second]]
    weight = table.counts[cells[first]] * table.counts[cells[second]]
    n_ids = len(table.identity_sizes)
    keys, inverse = np.unique(a * n_ids + b, return_inverse=True)
    merged = np.bincount(inverse, weights=weight).astype(np.int64)
    clusters = np.bincount(inverse).astype(np.int64)
    a, b = keys // n_ids, keys % n_ids
    share = merged / (table.identity_sizes[a] * table.identity_sizes[b])
    order = np.lexsort((table.names[b], table.names[a], -merged, -share))
    if top is not None:
        order = order[:top]
    rows = [[str(table.names[i]), str(table.names[j]), int(table.identity_sizes[i]), int(table.identity_sizes[j]),
             int(c), int(m), float(s)] for i, j, c, m, s in zip(a[order], b[order], clusters[order], merged[order],
                                                                 share[order])]
    return rows, note
