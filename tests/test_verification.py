"""Verification numbers against references: a brute-force fold protocol over every candidate threshold,
scikit-learn's precision / recall / F1 / roc_curve / roc_auc_score, slow one-threshold-at-a-time TAR@FAR
for both rules, pyeer's operating points, bob's far_threshold rule, and scipy's exact binomial interval."""
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score, roc_curve

from faceaudit.errors import FaceauditError
from faceaudit.evaluate.metrics import roc_counts, verification_metrics
from faceaudit.evaluate.verification import (at_threshold, clopper_pearson, evaluate, roc, sweep, tar_at_far)


def _data(seed, n_genuine=150, n_impostor=250, n_folds=5, decimals=2):
    """Rounded scores (ties within and across kinds and folds) with random folds."""
    rng = np.random.default_rng(seed)
    scores = np.round(np.concatenate([rng.normal(0.5, 0.2, n_genuine), rng.normal(0.15, 0.15, n_impostor)]), decimals)
    mated = np.arange(n_genuine + n_impostor) < n_genuine
    order = rng.permutation(scores.size)
    return scores[order], mated[order], rng.integers(0, n_folds, scores.size)


def _brute_fold(scores, mated, folds, fold, criterion):
    """Every unique training score tried in turn (exact fractions); the first best wins."""
    train, test = folds != fold, folds == fold
    best, best_t = None, None
    for t in np.unique(scores[train]):
        accept = scores[train] >= t
        tp = int(np.sum(accept & mated[train]))
        fp = int(np.sum(accept & ~mated[train]))
        fn = int(np.sum(~accept & mated[train]))
        tn = int(np.sum(~accept & ~mated[train]))
        value = Fraction(tp + tn, tp + fp + fn + tn) if criterion == "accuracy" else \
            (Fraction(2 * tp, 2 * tp + fp + fn) if 2 * tp + fp + fn else Fraction(0))
        if best is None or value > best:
            best, best_t = value, t
    if not test.any():
        return best_t, None, None
    accept = scores[test] >= best_t
    return best_t, float(np.mean(accept == mated[test])), accept


@pytest.mark.parametrize("seed, decimals", [(0, 2), (1, 2), (2, 2), (3, 3), (4, 4)])
def test_fold_thresholds_and_scores_equal_brute_force_and_sklearn(seed, decimals):
    """Two decimals: many ties; four: most scores held by one pair, so many by held-out pairs only."""
    scores, mated, folds = _data(seed, decimals=decimals)
    result = evaluate(scores, mated, folds, 5)
    for criterion in ("accuracy", "f1"):
        rows = result[criterion]["folds"]
        for fold in range(5):
            threshold, accuracy, accept = _brute_fold(scores, mated, folds, fold, criterion)
            row, truth = rows[fold], mated[folds == fold]
            assert row["threshold"] == threshold
            assert row["accuracy"] == accuracy
            assert row["precision"] == pytest.approx(precision_score(truth, accept, zero_division=0), abs=1e-15)
            assert row["recall"] == pytest.approx(recall_score(truth, accept, zero_division=0), abs=1e-15)
            assert row["f1"] == pytest.approx(f1_score(truth, accept, zero_division=0), abs=1e-15)
        values = np.array([row["accuracy"] for row in rows])
        assert result[criterion]["mean"]["accuracy"] == pytest.approx(values.mean(), abs=1e-15)
        assert result[criterion]["std"]["accuracy"] == pytest.approx(values.std(), abs=1e-15)  # ddof 0, as InsightFace
        pooled = result[criterion]["pooled"]
        assert pooled["tp"] + pooled["fp"] + pooled["fn"] + pooled["tn"] == scores.size


def test_inverted_scores_where_only_the_top_threshold_wins():
    """Non-mated pairs scoring higher than mated ones: accepting only the top score (no mated pair) is best."""
    scores, mated, folds = _data(11, n_genuine=60, n_impostor=300)
    scores = np.where(mated, -scores, scores)
    result = evaluate(scores, mated, folds, 5)
    for criterion in ("accuracy", "f1"):
        for fold, row in enumerate(result[criterion]["folds"]):
            assert row["threshold"] == _brute_fold(scores, mated, folds, fold, criterion)[0]
    assert {row["threshold"] for row in result["accuracy"]["folds"]} <= set(scores[~mated])


def test_all_pairs_best_thresholds_equal_brute_force():
    scores, mated, _ = _data(7)
    result = evaluate(scores, mated, np.arange(scores.size) % 2, 2)
    for criterion, key in (("accuracy", "best_accuracy"), ("f1", "best_f1")):
        threshold, _, _ = _brute_fold(scores, mated, np.ones(scores.size, int), 0, criterion)
        assert result["all_pairs"][key]["threshold"] == threshold


def _slow_tar(genuine, impostor, target, rule):
    best = None
    for t in sorted(set(genuine.tolist()) | set(impostor.tolist())):
        far = np.sum(impostor >= t) / impostor.size
        if rule == "nearest" and (best is None or abs(far - target) < best[0]):
            best = (abs(far - target), t, far)
        if rule == "at-most" and far <= target:
            return t, far, np.sum(genuine >= t) / genuine.size
    if best is None:
        return None
    return best[1], best[2], np.sum(genuine >= best[1]) / genuine.size


@pytest.mark.parametrize("rule", ["nearest", "at-most"])
@pytest.mark.parametrize("seed", [3, 4])
def test_tar_at_far_follows_its_rule_one_threshold_at_a_time(rule, seed):
    scores, mated, _ = _data(seed, 400, 3000, decimals=3)
    genuine, impostor = scores[mated], scores[~mated]
    points = tar_at_far(sweep(scores, mated), rule=rule)
    assert [p["reachable"] for p in points] == [True, True, True, False, False, False]  # 3,000 non-mated pairs
    assert "3,000 were compared" in points[3]["reason"]
    for point in points[:3]:
        threshold, far, tar = _slow_tar(genuine, impostor, point["far_target"], rule)
        assert (point["threshold"], point["far"], point["tar"]) == (threshold, far, tar)
        assert point["false_matches"] == np.sum(impostor >= threshold)
        if rule == "at-most":  # scikit-learn's ROC read as "highest TAR with FAR <= target"
            fpr, tpr, _ = roc_curve(mated, scores, drop_intermediate=False)
            assert point["tar"] == pytest.approx(tpr[fpr <= point["far_target"]].max(), abs=1e-15)


def _bob_far_threshold(negatives, far_value):
    """bob.measure's far_threshold rule: the lowest non-mated score whose FAR is at most the target."""
    scores = np.sort(negatives)[::-1]
    threshold = np.nextafter(scores[0], np.inf)
    for position, value in enumerate(scores):
        if position + 1 < scores.size and scores[position + 1] == value:
            continue
        if (position + 1) / scores.size > far_value:
            break
        threshold = value
    return threshold


def test_at_most_has_bobs_far_and_at_least_bobs_tar():
    scores, mated, _ = _data(5, 500, 2000, decimals=3)
    genuine, impostor = scores[mated], scores[~mated]
    for point in tar_at_far(sweep(scores, mated), targets=(0.1, 0.01, 0.001), rule="at-most"):
        bob = _bob_far_threshold(impostor, point["far_target"])
        assert point["far"] == np.mean(impostor >= bob)
        assert point["tar"] >= np.mean(genuine >= bob)


def test_nearest_rule_is_pyeers_fmr100_and_fmr1000():
    scores, mated, _ = _data(6, 800, 5000, decimals=4)
    metrics = verification_metrics(scores[mated], scores[~mated])
    points = {p["far_target"]: p for p in tar_at_far(sweep(scores, mated), targets=(1e-2, 1e-3), rule="nearest")}
    for target, key in ((1e-2, "fmr100"), (1e-3, "fmr1000")):
        assert points[target]["threshold"] == metrics[key + "_th"]
        assert 1 - points[target]["tar"] == pytest.approx(metrics[key], abs=1e-15)


def test_sweep_roc_equals_roc_counts_and_auc_equals_sklearn():
    scores, mated, _ = _data(8, 300, 700, decimals=2)
    thresholds, fm, fnm = roc(sweep(scores, mated))
    expected = roc_counts(scores[mated], scores[~mated])
    for got, want in zip((thresholds, fm, fnm), expected):
        assert np.array_equal(got, want)
    result = evaluate(scores, mated, np.arange(scores.size) % 3, 3)
    assert result["roc_auc"] == pytest.approx(roc_auc_score(mated, scores), abs=1e-12)


def test_clopper_pearson_equals_scipys_exact_interval():
    for k, n in ((0, 10), (3, 10), (10, 10), (1, 1000), (999, 1000), (57, 3000)):
        expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        lower, upper = clopper_pearson(k, n)
        assert lower == pytest.approx(expected.low, abs=1e-12)
        assert upper == pytest.approx(expected.high, abs=1e-12)


def test_fixed_threshold_counts_and_intervals():
    scores, mated, _ = _data(9)
    got = at_threshold(scores, mated, 0.3)
    accept = scores >= 0.3
    assert got["far"]["count"] == np.sum(accept & ~mated) and got["far"]["n"] == np.sum(~mated)
    assert got["recall"]["value"] == recall_score(mated, accept)
    assert got["far"]["ci"][0] <= got["far"]["value"] <= got["far"]["ci"][1]


def test_one_kind_only_is_an_error():
    with pytest.raises(FaceauditError, match="both mated and non-mated"):
        sweep([0.1, 0.2], [True, True])
