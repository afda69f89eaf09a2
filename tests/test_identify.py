"""Identification: exact ranks and CMC against brute force (ties included), KNN against
scikit-learn, DIR at FPIR against a slow reference, the splits, the command and its bad input."""
import json
import warnings

import numpy as np
import pytest

from faceaudit import search
from faceaudit.cli import main as cli_main
from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.evaluate import identification as ident
from faceaudit.io.embeddings import EmbeddingSet, save_embeddings
from faceaudit.io.shards import open_shards, write_shards
from faceaudit.stages.identify import run_identify


def clustered(rng, n_ids, per_id, dim, noise=0.6, prefix="p"):
    centers = rng.normal(size=(n_ids, dim))
    counts = rng.integers(1, per_id + 1, size=n_ids) if per_id > 1 else np.ones(n_ids, int)
    codes = np.repeat(np.arange(n_ids), counts)
    vectors = centers[codes] + noise * rng.normal(size=(len(codes), dim))
    return EmbeddingSet.from_arrays(vectors, [f"{prefix}{c:03d}" for c in codes],
                                    [f"{i}.jpg" for i in range(len(codes))])


def brute_ranks(probes, probe_ids, gallery, gallery_ids):
    """The definition, slowly: identity score = best image; rank = 1 + other identities scoring >= it."""
    s = search.exact_scores(probes, gallery)
    ids = np.unique(gallery_ids)
    by_identity = np.stack([s[:, gallery_ids == i].max(axis=1) for i in ids], axis=1)
    mated = by_identity[np.arange(len(probes)), np.searchsorted(ids, probe_ids)]
    others = ids[None, :] != np.asarray(probe_ids)[:, None]
    return mated, 1 + np.sum((by_identity >= mated[:, None]) & others, axis=1)


@pytest.fixture(scope="module")
def gallery_and_probes():
    """A gallery of 1-3 images per identity (in identity runs) and probes with exact ties."""
    rng = np.random.default_rng(5)
    g = clustered(rng, 70, 3, 24)
    probe_codes = rng.integers(0, 70, size=150)
    probes = g.vectors[np.searchsorted(g.identities, [f"p{c:03d}" for c in probe_codes])] \
        + 0.8 * rng.normal(size=(150, 24)).astype(np.float32)
    probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)
    gallery_codes = np.array([int(i[1:]) for i in g.identities])
    a, b = 10, int(np.flatnonzero(gallery_codes > gallery_codes[10] + 1)[0])
    g.vectors[b] = g.vectors[a]                # two identities share an image ...
    probes[:2] = g.vectors[a]                  # ... that two probes show: an exact tie at the top
    probe_codes[:2] = gallery_codes[[a, b]]
    probes[2] = g.vectors[30]                  # a probe equal to another identity's gallery image
    probe_codes[2] = (gallery_codes[30] + 1) % 70
    return probes, np.array([f"p{c:03d}" for c in probe_codes]), g


@pytest.mark.parametrize("budget", [3_000, 40_000, None])
def test_exact_ranks_equal_brute_force(gallery_and_probes, budget):
    probes, probe_ids, g = gallery_and_probes
    uniques, codes = ident.identity_codes(g.identities)
    found = search.mated_ranks(probes, np.searchsorted(uniques, probe_ids), g.vectors, codes, device="cpu",
                               memory_budget_bytes=budget, progress=False)
    mated, ranks = brute_ranks(probes, probe_ids, g.vectors, g.identities)
    np.testing.assert_array_equal(found.scores, mated)
    np.testing.assert_array_equal(found.ranks, ranks)
    assert ranks[0] == ranks[1] == 2 and ranks[2] >= 2  # the tied other identity counts against the probe


def test_exact_ranks_over_shards_split_inside_an_identity(gallery_and_probes, tmp_path):
    probes, probe_ids, g = gallery_and_probes
    write_shards([g], tmp_path / "g", rows_per_shard=17)  # shard borders cut identity runs
    shards = open_shards(tmp_path / "g")
    assert len(shards.vectors.parts()) > 5
    uniques, codes = ident.identity_codes(g.identities)
    found = search.mated_ranks(probes, np.searchsorted(uniques, probe_ids), shards.vectors, codes, device="cpu",
                               memory_budget_bytes=3_000, progress=False)
    np.testing.assert_array_equal(found.ranks, brute_ranks(probes, probe_ids, g.vectors, g.identities)[1])


def test_identities_must_be_contiguous():
    with pytest.raises(FaceauditError, match="next to each other"):
        search.ranks.identity_runs(np.array([0, 0, 1, 0]))


def test_cmc_and_ranks_from_candidate_lists(gallery_and_probes):
    probes, probe_ids, g = gallery_and_probes
    uniques, codes = ident.identity_codes(g.identities)
    mated_codes = np.searchsorted(uniques, probe_ids)
    _, ranks = brute_ranks(probes, probe_ids, g.vectors, g.identities)
    curve = ident.cmc(ranks, 12)
    np.testing.assert_allclose(curve, [np.mean(ranks <= r) for r in range(1, 13)])
    deepest = 6
    depth = (deepest - 1) * int(np.bincount(codes).max()) + 1
    nb = search.top_k(probes, g.vectors, depth, device="cpu", progress=False)
    listed = ident.ranks_from_candidates(codes[nb.indices], nb.scores, mated_codes)
    np.testing.assert_array_equal(np.minimum(listed, deepest + 1)[ranks <= deepest], ranks[ranks <= deepest])
    assert (listed[ranks > depth] == ident.NOT_FOUND).all()


@pytest.mark.parametrize("vote, weights", [("majority", "uniform"), ("weighted", "distance")])
def test_knn_equals_scikit_learn(vote, weights):
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(2)
    data = clustered(rng, 30, 8, 16, noise=0.9)
    split = ident.split_images(len(data), 0.7, seed=42)
    nb = search.top_k(data.vectors[split.probes], data.vectors[split.gallery], 10, device="cpu", progress=False)
    uniques, codes = ident.identity_codes(data.identities[split.gallery])
    ours = uniques[ident.knn_vote(codes[nb.indices], nb.scores, vote)]
    knn = KNeighborsClassifier(n_neighbors=10, metric="cosine", weights=weights)
    knn.fit(data.vectors[split.gallery], data.identities[split.gallery])
    theirs = knn.predict(data.vectors[split.probes])
    np.testing.assert_array_equal(ours, theirs)
    assert 0.2 < np.mean(ours == data.identities[split.probes]) < 1  # a test where votes matter


def test_knn_vote_ties_and_exact_neighbours():
    labels = np.array([[2, 1, 1, 2], [3, 0, 3, 0], [1, 2, 2, 2]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.7, 0.6], [1.0, 0.9, 0.9, 0.9]])
    assert ident.knn_vote(labels, scores, "majority").tolist() == [1, 0, 2]  # ties: smallest class
    assert ident.knn_vote(labels, scores, "weighted").tolist() == [2, 3, 1]  # distance 0 outvotes all


def slow_dir(mated_scores, ranks, non_mated_best, target):
    """DIR at FPIR by the definitions, one candidate threshold at a time."""
    top = float(non_mated_best.max())
    candidates = sorted(set(non_mated_best.tolist()) | {float(np.nextafter(top, np.inf))})
    threshold = max(candidates)
    for t in candidates:  # ascending: the first with a low enough FPIR is the lowest
        if sum(s >= t for s in non_mated_best) / len(non_mated_best) <= target:
            threshold = t
            break
    hits = sum(1 for s, r in zip(mated_scores, ranks) if r == 1 and s >= threshold)
    return threshold, hits / len(mated_scores)


def test_open_set_dir_equals_slow_reference(tmp_path):
    rng = np.random.default_rng(9)
    data = clustered(rng, 60, 5, 16, noise=0.8)
    data.vectors[-1] = data.vectors[0]  # a non-mated probe (if held out) tying a gallery image
    path = tmp_path / "faces.npz"
    save_embeddings(data, path)
    with pytest.warns(FaceauditWarning, match="FPIR 0.01 needs at least 100 non-mated probes"):
        summary = run_identify(path, open_set=0.4, out_dir=tmp_path / "out",
                               options=search.IndexOptions(device="cpu", progress=False), fpirs=(0.3, 0.1, 1e-2))
    split = ident.split_by_identity(data.identities, 1, 0.4, seed=42)
    gallery = split.gallery[np.argsort(data.identities[split.gallery], kind="stable")]
    mated, ranks = brute_ranks(data.vectors[split.probes], data.identities[split.probes], data.vectors[gallery],
                               data.identities[gallery])
    non_mated_best = search.exact_scores(data.vectors[split.held_out], data.vectors[gallery]).max(axis=1)
    assert summary["non_mated_probes"] == len(split.held_out) and summary["mated_probes"] == len(split.probes)
    for row in summary["open_set"]:
        threshold, dir_ = slow_dir(mated, ranks, non_mated_best, row["fpir"])
        assert row["threshold"] == threshold and row["dir"] == dir_
        assert row["fpir_achieved"] <= row["fpir"]
    assert summary["rank_accuracy"]["1"] == np.mean(ranks == 1)
    written = json.loads((tmp_path / "out" / "faces_identification.json").read_text())
    assert written["open_set"] == summary["open_set"] and written["split"]["seed"] == 42
    for name in ("faces_cmc.png", "faces_cmc.csv", "faces_dir_at_fpir.md", "faces_probes.csv",
                 "faces_identification.html"):
        assert (tmp_path / "out" / name).is_file()


def test_split_by_identity_is_seeded_and_per_identity():
    ids = np.repeat([f"i{k}" for k in range(20)], np.arange(1, 21))
    s = ident.split_by_identity(ids, 2, 0.25, seed=7)
    held = set(s.held_out_identities)
    assert len(held) == 5 and not held & set(ids[s.gallery]) and not held & set(ids[s.probes])
    counts = dict(zip(*np.unique(ids[s.gallery], return_counts=True)))
    assert all(counts[i] == min(2, int(i[1:]) + 1) for i in counts)
    assert len(s.gallery) + len(s.probes) + len(s.held_out) == len(ids)
    again = ident.split_by_identity(ids, 2, 0.25, seed=7)
    other = ident.split_by_identity(ids, 2, 0.25, seed=8)
    assert np.array_equal(s.gallery, again.gallery) and not np.array_equal(s.gallery, other.gallery)


def test_command_and_bad_input(tmp_path, capsys):
    rng = np.random.default_rng(4)
    data = clustered(rng, 25, 6, 16, noise=0.5)
    path = tmp_path / "faces.jsonl"
    save_embeddings(data, path)
    out = tmp_path / "out"
    assert cli_main(["identify", str(path), "--out", str(out), "--knn", "3", "--split-images", "0.7",
                     "--device", "cpu", "--no-progress"]) == 0
    assert "rank-1" in capsys.readouterr().out
    with pytest.raises(FaceauditError, match="larger than the gallery"):
        run_identify(path, ranks=(1, 26), out_dir=out, options=search.IndexOptions(device="cpu", progress=False))
    with pytest.raises(FaceauditError, match="larger than the gallery"):
        run_identify(path, knn=26, out_dir=out, options=search.IndexOptions(device="cpu", progress=False))
    assert cli_main(["identify", str(path), "--gallery", str(path), "--open-set", "0.2"]) == 2
    with warnings.catch_warnings(record=True) as caught:  # probes without a gallery image: warned, counted
        warnings.simplefilter("always")
        summary = run_identify(path, split_images=0.1, out_dir=out,
                               options=search.IndexOptions(device="cpu", progress=False), fpirs=(0.5,))
    lost = [w for w in caught if issubclass(w.category, FaceauditWarning) and "no gallery image" in str(w.message)]
    assert lost and f"{summary['non_mated_probes']:,} probe(s)" in str(lost[0].message)
    assert summary["non_mated_probes"] > 0 and summary["open_set"]
