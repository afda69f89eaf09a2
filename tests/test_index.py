"""Search backends behind one interface: exact scores and order from every backend, LSH against a
slow per-query version of the notebook's method, shards against one array, FAISS's IndexShards."""
import sys

import numpy as np
import pytest

from faceaudit import search
from faceaudit.errors import FaceauditError
from faceaudit.io.embeddings import EmbeddingSet
from faceaudit.io.shards import open_shards, write_shards
from faceaudit.search import IndexOptions
from faceaudit.search.lsh import LSHIndex, hamming_masks, popcount


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    centers = rng.normal(size=(60, 32))
    r = unit(np.repeat(centers, 20, axis=0) + 0.7 * rng.normal(size=(1200, 32)))
    q = unit(centers[rng.integers(0, 60, 90)] + 0.7 * rng.normal(size=(90, 32)))
    r[700] = r[3]  # a duplicate: ties broken by the lower index
    q[0] = r[3]
    return q, r


def needs(kind):
    if kind.startswith("faiss"):
        pytest.importorskip("faiss", reason="the FAISS backends need the faiss extra")


#: settings under which each backend finds every true neighbour
COMPLETE = {"exact": {}, "lsh": {"lsh_bits": 10, "lsh_radius": 10}, "faiss-flat": {},
            "faiss-ivf": {"ivf_lists": 8, "ivf_probe": 8}, "faiss-hnsw": {"hnsw_ef_search": 1200}}


@pytest.mark.parametrize("kind", search.INDEX_KINDS)
def test_every_backend_gives_exact_scores_in_one_order(data, kind):
    needs(kind)
    q, r = data
    found = search.search_index(kind, q, r, 7, IndexOptions(device="cpu", progress=False, **COMPLETE[kind]))
    exact = search.top_k(q, r, 7, device="cpu", progress=False)
    np.testing.assert_array_equal(found.indices, exact.indices)
    np.testing.assert_array_equal(found.scores, exact.scores)
    assert found.indices[0, :2].tolist() == [3, 700]


@pytest.mark.parametrize("kind", ["lsh", "faiss-ivf", "faiss-hnsw"])
def test_approximate_backends_find_most_neighbours(data, kind):
    needs(kind)
    q, r = data
    opts = IndexOptions(device="cpu", progress=False, lsh_bits=12, lsh_radius=3, ivf_lists=16, ivf_probe=4,
                        hnsw_ef_search=16)
    found = search.search_index(kind, q, r, 5, opts)
    valid = found.indices >= 0
    np.testing.assert_array_equal(found.scores[valid],
                                  search.exact_pair_scores(q, r, np.nonzero(valid)[0], found.indices[valid]))
    exact = search.top_k(q, r, 1, device="cpu", progress=False)
    recall = np.mean(found.indices[:, 0] == exact.indices[:, 0])
    assert 0.5 < recall <= 1, recall


def slow_lsh(q, r, planes, bits, radius, k):
    """The notebook's method one query at a time: sign-bit buckets, buckets within the Hamming
    radius, candidates ranked by cosine."""
    weights = 1 << np.arange(bits)
    r_codes = ((r @ planes.T) > 0).astype(np.int64) @ weights
    out = []
    for v in q:
        code = int(((v @ planes.T) > 0).astype(np.int64) @ weights)
        cand = [j for j, c in enumerate(r_codes) if bin(code ^ int(c)).count("1") <= radius]
        scores = search.exact_scores(v[None], r[cand])[0] if cand else np.empty(0)
        ranked = sorted(zip(-scores.astype(np.float64), cand))[:k]
        out.append([j for _, j in ranked] + [-1] * (k - len(ranked)))
    return np.array(out)


@pytest.mark.parametrize("bits, radius", [(9, 2), (16, 1)])
def test_lsh_equals_the_notebooks_method_done_slowly(data, bits, radius):
    q, r = data
    opts = IndexOptions(device="cpu", progress=False, lsh_bits=bits, lsh_radius=radius, seed=3)
    planes = LSHIndex.prepare(r, opts)
    found = search.search_index("lsh", q, r, 6, opts)
    np.testing.assert_array_equal(found.indices, slow_lsh(q, r, planes, bits, radius, 6))
    if bits == 16:
        assert (found.indices == -1).any()  # some queries have fewer than 6 candidates: padded


def test_hamming_masks_and_popcount():
    masks = hamming_masks(16, 3)
    assert len(masks) == 1 + 16 + 120 + 560 and len(np.unique(masks)) == len(masks)
    assert popcount(masks).max() == 3
    x = np.array([0, 1, 2**62 + 3, 2**40 - 1])
    assert popcount(x).tolist() == [0, 1, 3, 40]
    with pytest.raises(FaceauditError, match="lower the radius"):
        hamming_masks(62, 12)


@pytest.mark.parametrize("kind", ["exact", "lsh", "faiss-ivf", "faiss-hnsw"])
def test_sharded_search_equals_one_array(data, tmp_path, kind):
    needs(kind)
    q, r = data
    eset = EmbeddingSet(r, [f"i{j // 20}" for j in range(len(r))], [f"{j}.jpg" for j in range(len(r))])
    write_shards([eset], tmp_path, rows_per_shard=500)
    shards = open_shards(tmp_path)
    opts = IndexOptions(device="cpu", progress=False, ivf_lists=16, ivf_probe=3, lsh_bits=12, lsh_radius=2,
                        hnsw_ef_search=1200)
    whole = search.search_index(kind, q, r, 5, opts)
    parts = search.search_index(kind, q, shards.vectors, 5, opts)
    if kind == "faiss-hnsw":  # one graph per shard, each searched completely: the exact neighbours
        whole = search.top_k(q, r, 5, device="cpu", progress=False)
    np.testing.assert_array_equal(parts.indices, whole.indices)
    np.testing.assert_array_equal(parts.scores, whole.scores)


def test_faiss_index_shards_agree_with_our_shard_merge(data, tmp_path):
    faiss = pytest.importorskip("faiss", reason="the FAISS backends need the faiss extra")
    from faceaudit.search.faiss_backend import FaissIVF

    q, r = data
    opts = IndexOptions(device="cpu", progress=False, ivf_lists=16, ivf_probe=3)
    eset = EmbeddingSet(r, ["x"] * len(r), [str(j) for j in range(len(r))])
    write_shards([eset], tmp_path, rows_per_shard=400)
    shards = open_shards(tmp_path)
    trained = FaissIVF.prepare(shards.vectors, opts)
    index_shards = faiss.IndexShards(r.shape[1], False, True)  # not threaded, successive ids
    subs = [FaissIVF(part, opts, trained) for _, part in shards.vectors.parts()]
    for sub in subs:
        index_shards.add_shard(sub.index)
    _, theirs = index_shards.search(q, 5)
    ours = search.search_index("faiss-ivf", q, shards.vectors, 5, opts)
    assert [set(row) for row in theirs.tolist()] == [set(row) for row in ours.indices.tolist()]


def test_missing_faiss_names_the_extra(data, monkeypatch):
    q, r = data
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(FaceauditError, match=r"faceaudit\[faiss\]"):
        search.search_index("faiss-ivf", q, r, 3, IndexOptions(device="cpu", progress=False))
    with pytest.raises(FaceauditError, match="unknown index"):
        search.search_index("annoy", q, r, 3)


def test_best_match_and_top_pairs_through_the_interface(data):
    q, r = data
    opts = IndexOptions(device="cpu", progress=False)
    best = search.best_match_index("exact", q, r, opts)
    direct = search.best_match(q, r, device="cpu", progress=False)
    np.testing.assert_array_equal(best.indices, direct.indices)
    np.testing.assert_array_equal(best.scores, direct.scores)
    for positive_only in (False, True):
        pairs = search.top_pairs_index("exact", q, r, 40, positive_only=positive_only, options=opts)
        direct = search.top_pairs(q, r, 40, positive_only=positive_only, device="cpu", progress=False)
        np.testing.assert_array_equal(pairs.scores, direct.scores)
        np.testing.assert_array_equal(pairs.query_indices, direct.query_indices)
        np.testing.assert_array_equal(pairs.reference_indices, direct.reference_indices)
