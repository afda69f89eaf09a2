"""Exact search against brute force: ties, duplicates, block sizes, positive-only, bad input."""
import numpy as np
import pytest
import torch

from faceaudit import search
from faceaudit.stages import leakage
from faceaudit.errors import FaceauditError


def brute_best(q, r):
    s = search.exact_scores(q, r)
    i = s.argmax(axis=1)  # numpy: first (lowest) index of the maximum
    return s[np.arange(len(q)), i], i


def brute_top(q, r, k, positive_only=False):
    s = search.exact_scores(q, r)
    qi, ri = np.meshgrid(np.arange(len(q)), np.arange(len(r)), indexing="ij")
    s, qi, ri = s.ravel(), qi.ravel(), ri.ravel()
    if positive_only:
        keep = s > 0
        s, qi, ri = s[keep], qi[keep], ri[keep]
    order = np.lexsort((ri, qi, -s.astype(np.float64)))[:k]
    return s[order], qi[order], ri[order]


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    q = unit(rng.normal(size=(257, 48)))
    r = unit(rng.normal(size=(1501, 48)))
    r[100:110] = r[5]            # duplicate reference vectors: ties at many indices
    r[1400] = r[5]
    q[:4] = r[5]                 # queries whose best match is one of the duplicates
    q[10] = q[11]                # duplicate queries: ties in the global top-K
    r[600] = q[11]
    return q, r


BUDGETS = [3_000, 50_000, 400_000, None]  # from many tiny blocks to a single one


@pytest.mark.parametrize("budget", BUDGETS)
def test_best_match_equals_brute_force(data, budget):
    q, r = data
    found = search.best_match(q, r, device="cpu", memory_budget_bytes=budget, progress=False)
    scores, idx = brute_best(q, r)
    np.testing.assert_array_equal(found.indices, idx)
    np.testing.assert_array_equal(found.scores, scores)
    assert found.scores.dtype == np.float32 and found.indices.dtype == np.int64
    assert (found.indices[:4] == 5).all()  # lowest index among the duplicates


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("positive_only", [False, True])
def test_top_pairs_equal_brute_force(data, budget, positive_only):
    q, r = data
    for k in (1, 7, 60):
        found = search.top_pairs(q, r, k, positive_only=positive_only, device="cpu",
                                 memory_budget_bytes=budget, progress=False)
        s, qi, ri = brute_top(q, r, k, positive_only)
        np.testing.assert_array_equal(found.scores, s)
        np.testing.assert_array_equal(found.query_indices, qi)
        np.testing.assert_array_equal(found.reference_indices, ri)


def brute_top_k(q, r, k):
    s = search.exact_scores(q, r)
    order = np.lexsort((np.broadcast_to(np.arange(len(r)), s.shape), -s.astype(np.float64)), axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), order


@pytest.mark.parametrize("budget", BUDGETS)
def test_top_k_per_query_equals_brute_force(data, budget):
    q, r = data
    for k in (1, 5, 40):
        found = search.top_k(q, r, k, device="cpu", memory_budget_bytes=budget, progress=False)
        s, i = brute_top_k(q, r, k)
        np.testing.assert_array_equal(found.indices, i)
        np.testing.assert_array_equal(found.scores, s)
        assert found.indices.dtype == np.int64 and found.scores.shape == (len(q), k)
    assert (search.top_k(q, r, 12, device="cpu", progress=False).indices[:4, :12]
            == [5, *range(100, 110), 1400]).all()  # the duplicates, lowest index first


def test_top_k_with_ties_everywhere_and_bad_k():
    rng = np.random.default_rng(4)
    q = rng.integers(-2, 3, size=(50, 6)).astype(np.float32)
    r = rng.integers(-2, 3, size=(700, 6)).astype(np.float32)
    for budget in (2_000, None):
        found = search.top_k(q, r, 30, device="cpu", memory_budget_bytes=budget, progress=False)
        s, i = brute_top_k(q, r, 30)
        np.testing.assert_array_equal(found.indices, i)
        np.testing.assert_array_equal(found.scores, s)
    with pytest.raises(FaceauditError, match="larger than the reference set"):
        search.top_k(q, r[:3], 4, device="cpu", progress=False)
    with pytest.raises(FaceauditError, match="k must be > 0"):
        search.top_k(q, r, 0, device="cpu", progress=False)


@pytest.mark.parametrize("budget", [50_000, None])
def test_deferred_rescans_as_on_cuda_equal_brute_force(data, budget, monkeypatch):
    """CUDA scans the flagged rows once per block of queries, not per tile: the same results on CPU."""
    from faceaudit.search import exact

    monkeypatch.setitem(exact.DEFER_RESCAN, "cpu", True)
    q, r = data
    found = search.best_match(q, r, device="cpu", memory_budget_bytes=budget, progress=False)
    scores, idx = brute_best(q, r)
    np.testing.assert_array_equal(found.indices, idx)
    np.testing.assert_array_equal(found.scores, scores)
    ties = np.random.default_rng(3).integers(-2, 3, size=(120, 12)).astype(np.float32)
    found = search.best_match(ties, ties[::-1].copy(), device="cpu", memory_budget_bytes=budget, progress=False)
    scores, idx = brute_best(ties, ties[::-1])
    np.testing.assert_array_equal(found.indices, idx)
    np.testing.assert_array_equal(found.scores, scores)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_paths_stay_exact_run_on_the_cpu(data, precision, monkeypatch):
    """The fp16/bf16 candidate selection (refused on CPU to users: it is slow there) run on the CPU,
    deferred as on CUDA: the error bound still finds every winner."""
    from faceaudit.search import engine, exact

    monkeypatch.setattr(engine, "_resolve_precision", lambda name, device: search.PRECISIONS[name])
    monkeypatch.setitem(exact.DEFER_RESCAN, "cpu", True)
    q, r = data
    for budget in (50_000, None):
        found = search.best_match(q, r, device="cpu", precision=precision, memory_budget_bytes=budget,
                                  progress=False)
        scores, idx = brute_best(q, r)
        np.testing.assert_array_equal(found.indices, idx)
        np.testing.assert_array_equal(found.scores, scores)
        for positive_only in (False, True):
            top = search.top_pairs(q, r, 60, positive_only=positive_only, device="cpu", precision=precision,
                                   memory_budget_bytes=budget, progress=False)
            s, qi, ri = brute_top(q, r, 60, positive_only)
            np.testing.assert_array_equal(top.scores, s)
            np.testing.assert_array_equal(top.query_indices, qi)
            np.testing.assert_array_equal(top.reference_indices, ri)


def test_tensors_are_searched_in_place_with_the_same_results(data):
    q, r = data
    for k, fn in ((None, search.best_match), (9, search.top_pairs)):
        args = (k,) if k else ()
        a = fn(q, r, *args, device="cpu", progress=False)
        b = fn(torch.from_numpy(q), torch.from_numpy(r).double(), *args, device="cpu", progress=False)
        for field in a.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_integer_vectors_have_exact_ties_everywhere():
    """Small integers: every dot product is exact in any order, so ties are real ties."""
    rng = np.random.default_rng(3)
    q = rng.integers(-2, 3, size=(120, 12)).astype(np.float32)
    r = rng.integers(-2, 3, size=(900, 12)).astype(np.float32)
    q[7] = 0
    q[7, 0] = 1  # many references tie with this query
    for budget in (2_000, None):
        found = search.best_match(q, r, device="cpu", memory_budget_bytes=budget, progress=False)
        scores, idx = brute_best(q, r)
        np.testing.assert_array_equal(found.indices, idx)
        np.testing.assert_array_equal(found.scores, scores)
        top = search.top_pairs(q, r, 150, device="cpu", memory_budget_bytes=budget, progress=False)
        s, qi, ri = brute_top(q, r, 150)
        np.testing.assert_array_equal(top.scores, s)
        np.testing.assert_array_equal(top.query_indices, qi)
        np.testing.assert_array_equal(top.reference_indices, ri)


def test_all_identical_vectors():
    q = np.ones((40, 6), np.float32)
    r = np.ones((333, 6), np.float32)
    found = search.best_match(q, r, device="cpu", memory_budget_bytes=2_000, progress=False)
    assert (found.indices == 0).all()
    top = search.top_pairs(q, r, 50, device="cpu", memory_budget_bytes=2_000, progress=False)
    s, qi, ri = brute_top(q, r, 50)
    np.testing.assert_array_equal(top.query_indices, qi)
    np.testing.assert_array_equal(top.reference_indices, ri)


def test_positive_only_can_return_fewer():
    q = np.array([[1, 0]], np.float32)
    r = np.array([[-1, 0], [0.5, 0.5], [0, 1], [1, 0]], np.float32)
    top = search.top_pairs(q, r, 10, positive_only=True, device="cpu", progress=False)
    assert top.reference_indices.tolist() == [3, 1]  # 1.0, 0.5; 0.0 and -1.0 are not positive
    top = search.top_pairs(q, r, 10, device="cpu", progress=False)
    assert top.reference_indices.tolist() == [3, 1, 2, 0]


def test_scores_agree_with_float32_dot(data):
    q, r = data
    found = search.best_match(q, r, device="cpu", progress=False)
    plain = (q @ r.T)[np.arange(len(q)), found.indices]
    np.testing.assert_allclose(found.scores, plain, rtol=0, atol=4e-7)


def test_block_sizes_respect_budget():
    for budget in (10_000, 2**20, 2**28):
        bq, br = search.block_sizes(10_000, 490_000, budget)
        assert bq * br * 7 <= max(budget, 1024 * 7)
    assert search.block_sizes(5, 7, 2**30) == (5, 7)


def test_bad_input():
    q = np.ones((3, 4), np.float32)
    with pytest.raises(FaceauditError, match="dimensions"):
        search.best_match(q, np.ones((3, 5), np.float32), device="cpu", progress=False)
    with pytest.raises(FaceauditError, match="empty"):
        search.best_match(q, np.ones((0, 4), np.float32), device="cpu", progress=False)
    with pytest.raises(FaceauditError, match="K must be > 0"):
        search.top_pairs(q, q, 0, device="cpu", progress=False)
    with pytest.raises(FaceauditError, match="CUDA only"):
        search.best_match(q, q, device="cpu", precision="fp16", progress=False)
    with pytest.raises(FaceauditError, match="unknown precision"):
        search.best_match(q, q, device="cpu", precision="fp8", progress=False)
    with pytest.raises(FaceauditError, match="NaN or infinite"):
        search.best_match(np.full((2, 4), np.nan, np.float32), q, device="cpu", progress=False)
    with pytest.raises(FaceauditError, match="no dimensions"):
        search.best_match(np.ones((2, 0), np.float32), np.ones((3, 0), np.float32), device="cpu", progress=False)


def test_sample_indices_are_the_papers():
    import random

    random.seed(42)
    expected = random.sample(range(10008), 10000)
    got, all_used = leakage.sample_indices(10008, 10000, 42)
    assert got == expected and not all_used
    assert got[:3] == [1824, 409, 4506]  # the first rows of the paper's Best_Matches CSVs
    assert leakage.sample_indices(5, 10) == ([0, 1, 2, 3, 4], True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_low_precision_is_still_exact(data, precision):
    q, r = data
    found = search.best_match(q, r, device="cuda", precision=precision, memory_budget_bytes=50_000,
                              progress=False)
    scores, idx = brute_best(q, r)
    np.testing.assert_array_equal(found.indices, idx)
    np.testing.assert_array_equal(found.scores, scores)
    top = search.top_pairs(q, r, 60, device="cuda", precision=precision, progress=False)
    s, qi, ri = brute_top(q, r, 60)
    np.testing.assert_array_equal(top.scores, s)
    np.testing.assert_array_equal(top.query_indices, qi)
    np.testing.assert_array_equal(top.reference_indices, ri)
