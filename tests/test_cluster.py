"""Clustering: scores equal scikit-learn's and brute-force pair counts, the graph methods equal their
all-pairs definitions, Chinese Whispers equals a slow reference, and `faceaudit cluster` end to end."""
import csv
import itertools
import json
import math

import numpy as np
import pytest

from faceaudit.cli import main as cli_main
from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.evaluate import clustering
from faceaudit.evaluate.clustering_metrics import (clustering_scores, contingency, merged_identities,
                                                   split_identities)
from faceaudit.io.embeddings import EmbeddingSet, save_embeddings
from faceaudit.search import exact_scores
from faceaudit.stages import cluster as stage


def identity_blobs(rng, n_ids, per_id, dim, noise):
    centres = rng.normal(size=(n_ids, dim))
    vectors = np.repeat(centres, per_id, axis=0) + noise * rng.normal(size=(n_ids * per_id, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), np.repeat([f"id{i:02d}" for i in range(n_ids)], per_id)


def random_partitions(seed, n=70):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 9, n).astype(str)
    clusters = rng.integers(0, 12, n)
    clusters[:5] = 100 + np.arange(5)  # a few singletons
    return labels, clusters


def partition(labels):
    """A partition as a set of frozensets of indices, whatever the label values."""
    groups = {}
    for i, label in enumerate(np.asarray(labels).tolist()):
        groups.setdefault(label, set()).add(i)
    return {frozenset(g) for g in groups.values()}


# ---------------------------------------------------------------- scores

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_scikit_learn_and_brute_force_pair_counts(seed):
    from sklearn import metrics

    labels, clusters = random_partitions(seed)
    s = clustering_scores(labels, clusters)
    assert s["nmi"] == pytest.approx(metrics.normalized_mutual_info_score(labels, clusters), abs=1e-12)
    assert s["ari"] == pytest.approx(metrics.adjusted_rand_score(labels, clusters), abs=1e-12)
    assert s["fowlkes_mallows"] == pytest.approx(metrics.fowlkes_mallows_score(labels, clusters), abs=1e-12)
    # pairwise: every unordered pair, counted one by one
    pairs = list(itertools.combinations(range(len(labels)), 2))
    same_id = sum(labels[i] == labels[j] for i, j in pairs)
    same_cl = sum(clusters[i] == clusters[j] for i, j in pairs)
    both = sum(labels[i] == labels[j] and clusters[i] == clusters[j] for i, j in pairs)
    assert (s["same_identity_pairs"], s["same_cluster_pairs"], s["correct_pairs"]) == (same_id, same_cl, both)
    assert s["pairwise_precision"] == pytest.approx(both / same_cl, rel=1e-15)
    assert s["pairwise_recall"] == pytest.approx(both / same_id, rel=1e-15)
    p, r = both / same_cl, both / same_id
    assert s["pairwise_f1"] == pytest.approx(2 * p * r / (p + r), rel=1e-14)
    assert s["fowlkes_mallows"] == pytest.approx(math.sqrt(p * r), rel=1e-12)  # the geometric mean, not F1
    assert s["fowlkes_mallows"] != pytest.approx(s["pairwise_f1"], rel=1e-6)
    # BCubed: per image, the share of its cluster with its identity and of its identity in its cluster
    n = len(labels)
    precision = np.mean([np.sum((clusters == clusters[i]) & (labels == labels[i])) / np.sum(clusters == clusters[i])
                         for i in range(n)])
    recall = np.mean([np.sum((clusters == clusters[i]) & (labels == labels[i])) / np.sum(labels == labels[i])
                      for i in range(n)])
    assert s["bcubed_precision"] == pytest.approx(precision, rel=1e-13)
    assert s["bcubed_recall"] == pytest.approx(recall, rel=1e-13)
    assert s["bcubed_f1"] == pytest.approx(2 * precision * recall / (precision + recall), rel=1e-13)
    assert (s["images"], s["identities"], s["clusters"]) == (n, len(set(labels)), len(set(clusters)))
    assert s["singleton_clusters"] == sum(np.sum(clusters == c) == 1 for c in set(clusters))


def test_scores_at_the_extremes():
    labels = np.repeat(["a", "b", "c"], 4)
    perfect = clustering_scores(labels, np.repeat([7, 3, 5], 4))
    assert all(perfect[k] == 1.0 for k in ("nmi", "ari", "fowlkes_mallows", "pairwise_f1", "bcubed_f1"))
    singletons = clustering_scores(labels, np.arange(12))
    assert singletons["pairwise_precision"] == 1.0 and singletons["pairwise_recall"] == 0.0
    assert singletons["pairwise_f1"] == 0.0 and singletons["bcubed_precision"] == 1.0
    assert singletons["bcubed_recall"] == pytest.approx(0.25)
    one = clustering_scores(labels, np.zeros(12))
    assert one["pairwise_recall"] == 1.0 and one["pairwise_precision"] == pytest.approx(18 / 66)
    assert one["bcubed_precision"] == pytest.approx(1 / 3) and one["bcubed_recall"] == 1.0


@pytest.mark.parametrize("seed", [0, 3])
def test_findings_equal_a_brute_force_count(seed):
    labels, clusters = random_partitions(seed, n=50)
    table = contingency(labels, clusters)
    ids = sorted(set(labels))
    cluster_codes = {c: i for i, c in enumerate(sorted(set(clusters)))}
    # split: per identity, the clusters it spans and its largest
    expected_split = []
    for name in ids:
        mine = clusters[labels == name]
        counts = {cluster_codes[c]: int(np.sum(mine == c)) for c in set(mine)}
        largest = max(counts.values())
        main = min(c for c, v in counts.items() if v == largest)
        if len(counts) > 1:
            expected_split.append([name, len(mine), len(counts), main, largest, largest / len(mine)])
    expected_split.sort(key=lambda r: (-r[2], r[5], r[0]))
    assert split_identities(table) == expected_split
    # merged: per identity pair, the image pairs (one of each) in one cluster
    expected = []
    for a, b in itertools.combinations(ids, 2):
        ia, ib = np.flatnonzero(labels == a), np.flatnonzero(labels == b)
        merged = sum(clusters[i] == clusters[j] for i in ia for j in ib)
        shared = len(set(clusters[ia]) & set(clusters[ib]))
        if merged:
            expected.append([a, b, len(ia), len(ib), shared, merged, merged / (len(ia) * len(ib))])
    expected.sort(key=lambda r: (-r[6], -r[5], r[0], r[1]))
    rows, note = merged_identities(table)
    assert rows == expected and note["clusters_left_out"] == 0
    assert merged_identities(table, top=3)[0] == expected[:3]


def test_merged_pairs_are_bounded_when_one_cluster_holds_everyone():
    labels = np.repeat([f"p{i}" for i in range(30)], 2)
    clusters = np.zeros(60, dtype=int)
    clusters[:4] = [1, 1, 2, 2]  # p0 and p1 alone in their own clusters
    with pytest.warns(FaceauditWarning, match="too low"):
        rows, note = merged_identities(contingency(labels, clusters), max_label_pairs=10)
    assert note["clusters_left_out"] == 1 and note["identities_in_them"] == [28]
    assert rows == []


# ---------------------------------------------------------------- methods

def test_relabel_orders_by_size_and_splits_noise():
    assert clustering.relabel(np.array([5, 9, 9, -1, 5, 9, -1, 2])).tolist() == [1, 0, 0, 2, 1, 0, 3, 4]


def test_knn_graph_equals_brute_force():
    rng = np.random.default_rng(4)
    vectors, _ = identity_blobs(rng, 8, 5, 16, 0.6)
    vectors[7] = vectors[3]  # a duplicate: ties break to the lower index
    k, threshold = 6, 0.3
    graph = clustering.knn_graph(vectors, k, threshold, device="cpu", progress=False)
    scores = exact_scores(vectors, vectors).astype(np.float64)
    expected = set()
    for i in range(len(vectors)):
        others = [j for j in np.lexsort((np.arange(len(vectors)), -scores[i])) if j != i][:k]
        expected |= {(i, j) for j in others if scores[i, j] >= threshold}
    assert set(zip(graph.rows.tolist(), graph.cols.tolist())) == expected
    assert np.array_equal(graph.scores, scores[graph.rows, graph.cols].astype(np.float32))


def test_graph_components_with_every_neighbour_equal_single_linkage():
    from sklearn.cluster import AgglomerativeClustering

    rng = np.random.default_rng(5)
    vectors, _ = identity_blobs(rng, 10, 6, 24, 0.7)
    threshold = 0.45
    ours = clustering.cluster(vectors, "graph", threshold=threshold, k=len(vectors), graph_algorithm="components",
                              device="cpu", progress=False)
    single = AgglomerativeClustering(n_clusters=None, distance_threshold=1 - threshold, metric="cosine",
                                     linkage="single").fit_predict(vectors)
    assert partition(ours.labels) == partition(single)
    assert 1 < ours.n_clusters < len(vectors)


def test_dbscan_on_the_graph_equals_dbscan_on_all_pairs():
    from sklearn.cluster import DBSCAN

    rng = np.random.default_rng(6)
    vectors, _ = identity_blobs(rng, 10, 6, 24, 0.8)
    outliers = rng.normal(size=(7, 24)).astype(np.float32)
    vectors = np.vstack([vectors, outliers / np.linalg.norm(outliers, axis=1, keepdims=True)])
    vectors[-4:] = vectors[-1]  # four copies of an outlier: a cluster only if distance 0 counts
    threshold = 0.5
    ours = clustering.cluster(vectors, "dbscan", threshold=threshold, k=len(vectors), min_samples=4, device="cpu",
                              progress=False)
    reference = DBSCAN(eps=1 - threshold, min_samples=4, metric="cosine").fit_predict(vectors)
    assert ours.settings["noise"] == int((reference < 0).sum()) == 3
    assert len(set(ours.labels[-4:].tolist())) == 1
    assert partition(ours.labels) == partition(clustering.relabel(reference))


def slow_chinese_whispers(n, edges, seed, max_iterations):
    """The same rule, node by node: the heaviest neighbour label (lowest on ties); a random half of the
    nodes that would change adopt it."""
    rng = np.random.default_rng(seed)
    weights = {}
    for (i, j), w in edges.items():
        weights[(i, j)] = weights[(j, i)] = max(w, weights.get((i, j), -np.inf), weights.get((j, i), -np.inf))
    labels = list(range(n))
    for _ in range(max_iterations):
        proposal = list(labels)
        for i in range(n):
            votes = {}
            for (a, b), w in weights.items():
                if a == i:
                    votes[labels[b]] = votes.get(labels[b], 0.0) + w
            if votes:
                top = max(votes.values())
                proposal[i] = min(label for label, v in votes.items() if v == top)
        changing = [proposal[i] != labels[i] for i in range(n)]
        if not any(changing):
            return labels, True
        coin = rng.random(n) < 0.5
        labels = [proposal[i] if changing[i] and coin[i] else labels[i] for i in range(n)]
    return labels, False


@pytest.mark.parametrize("seed", [0, 7])
def test_chinese_whispers_equals_a_slow_reference(seed):
    rng = np.random.default_rng(seed)
    vectors, _ = identity_blobs(rng, 6, 5, 12, 0.9)
    graph = clustering.knn_graph(vectors, 5, 0.25, device="cpu", progress=False)
    labels, rounds, converged = clustering.chinese_whispers(graph, seed=seed, max_iterations=40)
    edges = {(int(i), int(j)): float(max(s, 1e-6)) for i, j, s in zip(graph.rows, graph.cols, graph.scores)}
    expected, expected_converged = slow_chinese_whispers(len(vectors), edges, seed, 40)
    assert labels.tolist() == expected and converged == expected_converged
    # labels travel along edges only: a whisper cluster never spans two components
    components = clustering.connected_components(graph)
    assert all(len(set(components[labels == c])) == 1 for c in set(labels.tolist()))


def test_chinese_whispers_resists_a_false_link_that_merges_components():
    rng = np.random.default_rng(8)
    vectors, labels = identity_blobs(rng, 12, 8, 32, 0.35)
    # one image of id00 made half id01: a false link that connects two identities
    vectors[0] = vectors[0] + vectors[8]
    vectors[0] /= np.linalg.norm(vectors[0])
    common = dict(threshold=0.5, k=10, device="cpu", progress=False)  # above every non-mated score but one
    components = clustering.cluster(vectors, "graph", graph_algorithm="components", **common)
    whispers = clustering.cluster(vectors, "graph", **common)
    assert clustering_scores(labels, components.labels)["clusters"] == 11
    assert clustering_scores(labels, whispers.labels)["clusters"] == 12
    assert clustering_scores(labels, whispers.labels)["nmi"] > clustering_scores(labels, components.labels)["nmi"]
    assert whispers.settings["converged"] and whispers.settings["seed"] == 42


def test_sklearn_methods_recover_separated_identities():
    rng = np.random.default_rng(9)
    vectors, labels = identity_blobs(rng, 8, 6, 32, 0.3)
    for method, options in (("agglomerative", {"threshold": 0.5}), ("agglomerative", {"n_clusters": 8}),
                            ("hdbscan", {"min_cluster_size": 3}), ("kmeans", {"n_clusters": 8})):
        result = clustering.cluster(vectors, method, **options)
        assert partition(result.labels) == partition(labels), method


def test_method_errors():
    vectors = np.eye(4, dtype=np.float32)
    with pytest.raises(FaceauditError, match="clusters asked for but there are only 4"):
        clustering.cluster(vectors, "kmeans", n_clusters=5)
    with pytest.raises(FaceauditError, match=r"\[-1, 1\]"):
        clustering.cluster(vectors, "graph", threshold=1.5)
    with pytest.raises(FaceauditError, match="needs a cosine threshold"):
        clustering.cluster(vectors, "dbscan")
    with pytest.raises(FaceauditError, match="limited to"):
        clustering._check_dense(clustering.DENSE_LIMIT + 1, "HDBSCAN")


# ---------------------------------------------------------------- the stage and the command

def test_projection_sample_and_cluster_colours():
    from faceaudit.report.clusters import cluster_colours

    identities = np.repeat([f"p{i}" for i in range(30)], np.arange(1, 31))  # p{i} has i + 1 images
    rows = stage.projection_sample(identities, ["p29", "p3", "p29"], 5, seed=1, per_identity=7)
    picked = identities[rows]
    assert np.all(np.diff(rows) > 0) and len(set(picked)) == 5 and {"p29", "p3"} <= set(picked)
    assert all(np.sum(picked == name) == min(7, int(name[1:]) + 1) for name in set(picked))
    assert np.array_equal(rows, stage.projection_sample(identities, ["p29", "p3"], 5, seed=1, per_identity=7))
    # identity 0 split over clusters 0 and 2, identities 1 and 2 merged in cluster 1
    identity_codes = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    cluster_codes = np.array([0, 0, 0, 2, 1, 1, 1, 1, 1])
    assert cluster_colours(identity_codes, cluster_codes).tolist() == [0, 2, -1]


@pytest.fixture(scope="module")
def blobs_file(tmp_path_factory):
    """An SFace-labelled file: 12 identities x 6 images; id01 is a near copy of id00 (identity collapse),
    id02's images come from two different faces (identity drift)."""
    rng = np.random.default_rng(10)
    centres = rng.normal(size=(13, 128))
    centres[1] = centres[0] + 0.05 * rng.normal(size=128)
    which = np.repeat(np.arange(12), 6)
    which[12:15] = 12  # half of id02 is another face
    vectors = centres[which] + 0.25 * rng.normal(size=(72, 128))
    eset = EmbeddingSet.from_arrays(vectors, np.repeat([f"id{i:02d}" for i in range(12)], 6),
                                    [f"{i % 6}.png" for i in range(72)], {"arch": "sface"})
    path = tmp_path_factory.mktemp("cluster") / "blobs.jsonl"
    save_embeddings(eset, path)
    return path


def test_cluster_command_writes_scores_findings_and_figures(blobs_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["cluster", str(blobs_file), "--out", str(out), "--device", "cpu", "--no-progress",
                     "--projection", "tsne"]) == 0
    console = capsys.readouterr().out
    assert "sface's default: FMR = 1e-3" in console and "id00 + id01: 100% of their 36 cross pairs" in console
    assert "id02: 6 images in 2 clusters, 50% in the largest" in console
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"blobs_graph_{s}" for s in (
        "clusters.csv", "metrics.json", "merged_identities.csv", "split_identities.csv", "projection.png",
        "projection.pdf", "cluster_sizes.png", "cluster_sizes.pdf"))
    report = json.loads((out / "blobs_graph_metrics.json").read_text())
    assert report["settings"]["threshold"] == pytest.approx(0.3916) and report["settings"]["k"] == 30
    assert report["threshold_source"].startswith("sface's default")
    with open(out / "blobs_graph_clusters.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 72 and rows[0] == {"identity": "id00", "image_name": "0.png", "cluster": rows[0]["cluster"]}
    expected = clustering_scores([r["identity"] for r in rows], [int(r["cluster"]) for r in rows])
    assert report["scores"] == pytest.approx(expected)
    assert report["scores"]["clusters"] == 12 and report["scores"]["identities"] == 12
    with open(out / "blobs_graph_merged_identities.csv") as handle:
        merged = list(csv.reader(handle))
    assert merged[1][:2] == ["id00", "id01"] and float(merged[1][6]) == 1.0


@pytest.mark.parametrize("method", ["graph-components", "dbscan", "agglomerative", "hdbscan", "kmeans"])
def test_every_method_runs_from_the_command(blobs_file, tmp_path, method):
    args = ["--method", "graph", "--graph-algorithm", "components"] if method == "graph-components" else \
        ["--method", method]
    assert cli_main(["cluster", str(blobs_file), "--out", str(tmp_path), "--no-figures", "--device", "cpu",
                     "--no-progress", "--min-samples", "3", "--min-cluster-size", "3", *args]) == 0
    report = json.loads((tmp_path / f"blobs_{method}_metrics.json").read_text())
    assert report["label"] == method and 0.8 < report["scores"]["nmi"] <= 1.0
    if method == "kmeans":
        assert report["settings"]["n_clusters"] == 12 and report["threshold_source"] is None


def _bad_file(tmp_path, name, vectors, ids, metadata=None):
    path = tmp_path / name
    save_embeddings(EmbeddingSet(np.asarray(vectors, np.float32), ids, [f"{i}.png" for i in range(len(ids))],
                                 metadata or {}), path)
    return path


def test_bad_input_is_one_line_and_exit_code_2(blobs_file, tmp_path, capsys):
    rng = np.random.default_rng(11)
    unit = rng.normal(size=(6, 8))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    cases = {
        "every image has the same identity": _bad_file(tmp_path, "one.npz", unit, ["a"] * 6),
        "every image has its own identity": _bad_file(tmp_path, "own.npz", unit, list("abcdef")),
        "no 'arch' metadata": _bad_file(tmp_path, "noarch.npz", unit, list("aabbcc")),
        "has no default threshold": _bad_file(tmp_path, "ts.npz", unit, list("aabbcc"), {"arch": "torchscript"}),
    }
    nan = unit.copy()
    nan[2, 3] = np.nan
    cases["row 3 has NaN"] = _bad_file(tmp_path, "nan.npz", nan, list("aabbcc"))
    for message, path in cases.items():
        capsys.readouterr()
        assert cli_main(["cluster", str(path), "--out", str(tmp_path / "o"), "--no-figures"]) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and str(path) in err[0], err
    capsys.readouterr()
    assert cli_main(["cluster", str(blobs_file), "--method", "kmeans", "--n-clusters", "73", "--out",
                     str(tmp_path / "o"), "--no-figures"]) == 2
    assert "73 clusters asked for but there are only 72 embeddings" in capsys.readouterr().err
    for threshold in ("1.5", "-1.01", "nan"):
        with pytest.raises(SystemExit) as stop:
            cli_main(["cluster", str(blobs_file), "--threshold", threshold])
        assert stop.value.code == 2
    assert "[-1, 1]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written by a failed run
    with pytest.raises(FaceauditError, match=r"\[-1, 1\]"):
        stage.run(blobs_file, threshold=2.0)
