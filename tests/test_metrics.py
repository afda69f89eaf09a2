"""Verification metrics: pyeer 0.5.6 parity, the definitions on a per-threshold reference, bootstrap CIs."""
import json
import warnings

import numpy as np
import pytest

from faceaudit.errors import FaceauditError
from faceaudit.io.files import read_scores
from faceaudit.evaluate.metrics import (CI_KEYS, bootstrap_ci, default_bootstrap, roc_counts,
                               verification_metrics)
from tests.conftest import shared_path

PYEER_KEYS = ("gmean", "gstd", "imean", "istd", "eer", "eer_th", "fmr100", "fmr100_th", "fmr1000",
              "fmr1000_th", "fmr0", "fmr0_th", "auc", "decidability")


@pytest.mark.parametrize("name", ["pyeer-exp1", "pyeer-exp2", "pyeer-exp3"])
def test_equals_pyeer_056(name):
    folder = shared_path("verification-scores")
    expected = json.loads((folder / "expected-pyeer-0.5.6.json").read_text())[name]
    genuine = read_scores(folder / f"{name}_mated_similarities.txt")
    impostor = read_scores(folder / f"{name}_non_mated_similarities.txt")
    got = verification_metrics(genuine, impostor)
    for key in PYEER_KEYS:
        assert got[key] == pytest.approx(expected[key], rel=1e-9, abs=0), key
    assert got["n_genuine"] == len(genuine) and got["n_impostor"] == len(impostor)


def _reference(genuine, impostor):
    """The issue's definitions, one threshold at a time (slow, obvious)."""
    genuine, impostor = np.asarray(genuine, float), np.asarray(impostor, float)
    thr = sorted(set(genuine.tolist()) | set(impostor.tolist()))
    fmr = np.array([np.sum(impostor >= t) / impostor.size for t in thr])
    fnmr = np.array([np.sum(genuine < t) / genuine.size for t in thr])
    t2 = next(k for k in range(len(thr)) if fmr[k] <= fnmr[k])
    t1 = t2 - 1 if fmr[t2] != fnmr[t2] and t2 != 0 else t2
    t = t1 if fmr[t1] + fnmr[t1] <= fmr[t2] + fnmr[t2] else t2
    out = {"eer": (fmr[t] + fnmr[t]) / 2, "eer_th": thr[t]}
    for key, op in (("fmr100", 0.01), ("fmr1000", 0.001), ("fmr0", 0.0)):
        dist = np.abs(fmr - op)
        k = min(range(len(thr)), key=lambda j: (dist[j], thr[j]))  # ties: lowest threshold
        out[key], out[key + "_th"] = fnmr[k], thr[k]
    gm, gs, im, is_ = genuine.mean(), genuine.std(), impostor.mean(), impostor.std()
    out.update(gmean=gm, gstd=gs, imean=im, istd=is_,
               decidability=abs(gm - im) / np.sqrt((gs ** 2 + is_ ** 2) / 2),
               fdr=(gm - im) ** 2 / (gs ** 2 + is_ ** 2))
    tpr = 1 - fnmr
    out["auc"] = sum((fmr[k] - fmr[k + 1]) * (tpr[k] + tpr[k + 1]) / 2 for k in range(len(thr) - 1))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_per_threshold_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    # rounded scores: many ties, within and across the two sets
    genuine = np.round(rng.normal(0.5, 0.2, 300), 2)
    impostor = np.round(rng.normal(0.1, 0.15, 2500), 2)
    got, ref = verification_metrics(genuine, impostor), _reference(genuine, impostor)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_roc_counts_accept_at_or_above_threshold():
    thr, fm, fnm = roc_counts([0.5, 0.7, 0.7], [0.1, 0.5, 0.6])
    assert thr.tolist() == [0.1, 0.5, 0.6, 0.7]
    assert fm.tolist() == [3, 2, 1, 0]  # impostors >= t
    assert fnm.tolist() == [0, 0, 1, 1]  # genuines < t


def test_no_crossing_gives_eer_one_with_warning():
    with pytest.warns(RuntimeWarning):
        m = verification_metrics([0.5, 0.5], [0.5])  # FMR 1 > FNMR 0 at the only threshold
    assert m["eer"] == 1.0 and m["eer_th"] == 0.5


def test_perfect_separation_and_fdr():
    m = verification_metrics([0.8, 0.9, 1.0], [0.0, 0.1, 0.2])
    assert m["eer"] == 0.0 and m["auc"] > 0.5
    gm, gs, im, is_ = 0.9, np.std([0.8, 0.9, 1.0]), 0.1, np.std([0.0, 0.1, 0.2])
    assert m["fdr"] == pytest.approx((gm - im) ** 2 / (gs ** 2 + is_ ** 2))


def test_bad_scores_are_errors():
    with pytest.raises(FaceauditError, match="no genuine"):
        verification_metrics([], [0.1])
    with pytest.raises(FaceauditError, match="NaN"):
        verification_metrics([0.1, np.nan], [0.1])


def test_bootstrap_ci_reproducible_and_sane():
    rng = np.random.default_rng(5)
    genuine, impostor = rng.normal(0.6, 0.1, 2000), rng.normal(0.0, 0.1, 8000)
    a = bootstrap_ci(genuine, impostor, 200, seed=7)
    b = bootstrap_ci(genuine, impostor, 200, seed=7)
    c = bootstrap_ci(genuine, impostor, 200, seed=8)
    assert a == b and a != c
    assert a["n_boot"] == 200 and a["seed"] == 7 and a["level"] == 0.95
    point = verification_metrics(genuine, impostor)
    for key in CI_KEYS:
        lo, hi = a[key]
        assert lo <= hi, key
    for key in ("gmean", "imean", "gstd", "istd", "eer", "auc", "decidability", "fdr"):
        lo, hi = a[key]
        assert lo <= point[key] <= hi, key
    # the mean's CI is about +-1.96 standard errors
    se = genuine.std() / np.sqrt(genuine.size)
    assert a["gmean"][1] - a["gmean"][0] == pytest.approx(2 * 1.96 * se, rel=0.25)


def test_bootstrap_resample_metrics_match_direct_computation():
    """A resample held as counts gives the metrics of the resampled scores themselves."""
    from faceaudit.evaluate.metrics import _metrics_from_counts
    rng = np.random.default_rng(3)
    genuine, impostor = np.round(rng.normal(0.5, 0.2, 400), 3), np.round(rng.normal(0.1, 0.1, 900), 3)
    values, codes = np.unique(np.concatenate([genuine, impostor]), return_inverse=True)
    gi, ii = rng.integers(0, 400, 400), rng.integers(0, 900, 900)
    cg = np.bincount(codes[:400][gi], minlength=values.size)
    ci = np.bincount(codes[400:][ii], minlength=values.size)
    got = _metrics_from_counts(values, cg, ci, 400, 900)
    want = verification_metrics(genuine[gi], impostor[ii])
    for key in CI_KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key


def test_default_bootstrap_is_bounded():
    assert default_bootstrap(10_000) == 1000
    assert default_bootstrap(200_000) == 1000
    assert default_bootstrap(2_000_000) == 100
    assert default_bootstrap(10 ** 9) == 100
    with pytest.raises(FaceauditError):
        bootstrap_ci([0.5, 0.6], [0.1], 0)


def test_a_million_scores_each_match_the_normal_theory():
    """N(0.5, 0.1) against N(0, 0.1): each metric has a closed form to check the large input by."""
    from scipy.stats import norm
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(0.5, 0.1, 1_000_000), rng.normal(0.0, 0.1, 1_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = verification_metrics(genuine, impostor)
    assert got["n_genuine"] == got["n_impostor"] == 1_000_000
    assert got["eer"] == pytest.approx(norm.cdf(-2.5), abs=5e-4)  # threshold 0.25, halfway
    assert got["eer_th"] == pytest.approx(0.25, abs=5e-3)
    for key, far in (("fmr100", 0.01), ("fmr1000", 0.001)):  # FNMR where FMR is 1% / 0.1%
        threshold = 0.1 * norm.isf(far)
        assert got[f"{key}_th"] == pytest.approx(threshold, abs=5e-3), key
        assert got[key] == pytest.approx(norm.cdf((threshold - 0.5) / 0.1), abs=2e-3), key
    assert got["auc"] == pytest.approx(norm.cdf(0.5 / (0.1 * np.sqrt(2))), abs=5e-5)
    assert got["decidability"] == pytest.approx(5.0, rel=1e-2)
