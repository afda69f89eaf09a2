"""Pair sampling: exact pair spaces, uniformity (chi-square), seeds, O(N + n) memory, bad input."""
import itertools
import tracemalloc
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from faceaudit.evaluate import pairs as P
from faceaudit.errors import FaceauditWarning
from faceaudit.errors import FaceauditError
from faceaudit.evaluate.pairs import count_pairs, sample_distinct, sample_pairs

IDS = np.array(list("aaabbcddddeb"))  # sizes a3 b3 c1 d4 e1, rows of b not contiguous


def _truth(ids, same):
    return {(i, j) for i, j in itertools.combinations(range(len(ids)), 2) if (ids[i] == ids[j]) == same}


def _as_set(pairs):
    return {tuple(sorted(p)) for p in pairs.tolist()}


@pytest.mark.parametrize("chunk", [5, 1 << 22])
def test_exhaustive_lists_every_pair_once(monkeypatch, chunk):
    monkeypatch.setattr(P, "_EXHAUSTIVE_CHUNK", chunk)
    s = sample_pairs(IDS, None, exhaustive=True)
    assert len(s.mated) == s.total_mated == len(_truth(IDS, True)) == 3 + 3 + 6
    assert len(s.non_mated) == s.total_non_mated == len(_truth(IDS, False))
    assert _as_set(s.mated) == _truth(IDS, True)
    assert _as_set(s.non_mated) == _truth(IDS, False)
    assert count_pairs(IDS) == (s.total_mated, s.total_non_mated)


def test_samples_are_valid_distinct_and_seeded():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 300, 5000)
    a = sample_pairs(ids, 2000, seed=1)
    b = sample_pairs(ids, 2000, seed=1)
    c = sample_pairs(ids, 2000, seed=2)
    assert np.array_equal(a.mated, b.mated) and np.array_equal(a.non_mated, b.non_mated)
    assert not np.array_equal(a.mated, c.mated)
    assert (ids[a.mated[:, 0]] == ids[a.mated[:, 1]]).all()
    assert (a.mated[:, 0] != a.mated[:, 1]).all()
    assert (ids[a.non_mated[:, 0]] != ids[a.non_mated[:, 1]]).all()
    assert len(_as_set(a.mated)) == 2000 and len(_as_set(a.non_mated)) == 2000  # without replacement


def test_default_seed_is_fixed():
    assert P.DEFAULT_SEED == 42
    a, b = sample_pairs(IDS, 4), sample_pairs(IDS, 4)
    assert np.array_equal(a.mated, b.mated) and np.array_equal(a.non_mated, b.non_mated)


@pytest.mark.parametrize("kind", ["mated", "non_mated"])
def test_single_draw_is_uniform_over_all_pairs(kind):
    """n=1 over many seeds: every pair of the kind equally likely (chi-square)."""
    truth = sorted(_truth(IDS, kind == "mated"))
    runs = 3000
    counts = Counter(tuple(sorted(getattr(sample_pairs(IDS, 1, seed=s), kind)[0].tolist())) for s in range(runs))
    assert set(counts) == set(truth)
    observed = [counts[p] for p in truth]
    assert chisquare(observed).pvalue > 1e-4


@pytest.mark.parametrize("n", [3, 9])  # 9 of 12 mated pairs takes the complement path
def test_subsets_are_uniform(n):
    """Each n-subset of the 12 mated pairs equally likely: inclusion of each pair and of pair couples."""
    truth = sorted(_truth(IDS, True))
    runs = 3000
    single = Counter()
    for s in range(runs):
        chosen = _as_set(sample_pairs(IDS, n, seed=s).mated)
        assert len(chosen) == n
        single.update(chosen)
    observed = [single[p] for p in truth]
    assert sum(observed) == runs * n
    assert chisquare(observed).pvalue > 1e-4


def test_sample_distinct_uniform_over_subsets():
    for total, n in ((6, 2), (6, 5)):
        rng = np.random.default_rng(11)
        counts = Counter(tuple(sample_distinct(rng, total, n).tolist()) for _ in range(3000))
        assert len(counts) == len(list(itertools.combinations(range(total), n)))
        assert chisquare(list(counts.values())).pvalue > 1e-4


def test_sample_distinct_large_and_sorted():
    rng = np.random.default_rng(0)
    got = sample_distinct(rng, 10 ** 15, 100_000)
    assert got.size == 100_000 and np.all(np.diff(got) > 0) and got.min() >= 0 and got.max() < 10 ** 15
    got = sample_distinct(rng, 1000, 999)
    assert got.size == 999 and np.unique(got).size == 999


def test_fewer_pairs_than_asked_uses_all_with_warning():
    with pytest.warns(FaceauditWarning, match="only 12 mated pairs exist"):
        s = sample_pairs(IDS, 20)
    assert _as_set(s.mated) == _truth(IDS, True)
    assert len(s.non_mated) == 20


def test_single_identity_is_an_error():
    with pytest.raises(FaceauditError, match="single identity"):
        sample_pairs(["x", "x", "x"], 5)


def test_no_identity_with_two_images_is_an_error():
    with pytest.raises(FaceauditError, match="no mated pairs"):
        sample_pairs(["a", "b", "c"], 5)


def test_bad_n_is_an_error():
    with pytest.raises(FaceauditError):
        sample_pairs(IDS, 0)


def test_exhaustive_refuses_what_does_not_fit(monkeypatch):
    monkeypatch.setattr(P, "EXHAUSTIVE_MAX_BYTES", 100)
    with pytest.raises(FaceauditError, match="exhaustive"):
        sample_pairs(IDS, None, exhaustive=True)


def test_memory_is_linear_in_rows_plus_pairs():
    """200k rows in 1,000 identities hold 19.9M mated pairs (318 MB as index pairs); sampling stays O(N + n)."""
    n_rows, n = 200_000, 50_000
    codes = np.repeat(np.arange(1000), n_rows // 1000)
    np.random.default_rng(0).shuffle(codes)
    tracemalloc.start()
    try:
        s = sample_pairs(codes, n, seed=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert s.total_mated == 1000 * (200 * 199 // 2)
    assert peak < 64 * (n_rows + n), f"peak {peak / 1e6:.1f} MB"


def test_identity_codes_group_rows_either_way():
    contiguous = np.array(["b", "b", "a", "a", "a", "c"])
    scattered = np.array(["b", "a", "b", "a", "c", "a"])
    for ids in (contiguous, scattered):
        codes = P.identity_codes(ids)
        same = ids[:, None] == ids[None, :]
        assert np.array_equal(codes[:, None] == codes[None, :], same)
    assert P.identity_codes(contiguous).tolist() == [0, 0, 1, 1, 1, 2]
