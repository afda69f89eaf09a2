"""Verification metrics, identical to pyeer 0.5.6 ``get_eer_stats`` and vectorised, with bootstrap CIs.

Definitions (pyeer 0.5.6, similarity scores, ``hformat=False``, ``ds_scores=False``):

- thresholds: the sorted unique values of all scores (genuine and impostor together);
  a comparison is accepted when ``score >= threshold``, so at threshold ``t``
  ``FMR(t) = #{impostor >= t} / n_i`` and ``FNMR(t) = #{genuine < t} / n_g``.
- EER: ``t2`` is the first threshold index with ``FMR <= FNMR`` and ``t1 = t2 - 1``
  (``t1 = t2`` when ``FMR == FNMR`` there or ``t2 == 0``); of the two, the one with the
  smaller ``FMR + FNMR`` (``t1`` on ties); ``EER = (FNMR + FMR) / 2`` there, and its
  threshold is reported. If the curves never cross, EER = 1 at the first threshold.
- FMR100 / FMR1000 / FMR0: the FNMR at the first (lowest-threshold) index whose FMR is
  nearest 1% / 0.1% / 0, with that threshold.
- genuine and impostor mean and standard deviation with ddof=0 (``np.mean``, ``np.std``).
- AUC: pyeer's trapezoid over its own (FMR, 1 - FNMR) points, without added end points.
- decidability ``d' = |mu_g - mu_i| / sqrt((sigma_g^2 + sigma_i^2) / 2)`` (1 when both stds are 0).
- FDR (Fisher discriminant ratio) ``(mu_g - mu_i)^2 / (sigma_g^2 + sigma_i^2)`` (not in pyeer).

pyeer sorts a list of Python tuples (about 8 s for 1e6 + 1e6 scores); here two
``np.sort`` calls and ``searchsorted`` give the same integer counts, so every rate,
threshold and derived value is bit-for-bit the same.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from faceaudit import checks
from faceaudit.errors import FaceauditError

#: keys of :func:`verification_metrics` that get a bootstrap confidence interval
CI_KEYS = ("gmean", "gstd", "imean", "istd", "eer", "eer_th", "fmr100", "fmr100_th",
           "fmr1000", "fmr1000_th", "fmr0", "fmr0_th", "auc", "decidability", "fdr")
#: the default number of bootstrap resamples (see :func:`default_bootstrap`)
DEFAULT_BOOTSTRAP = 1000
#: above this many scores in all, the default number of resamples shrinks to bound the cost
BOOTSTRAP_FULL_UP_TO = 200_000
MIN_AUTO_BOOTSTRAP = 100


def _as_scores(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise FaceauditError(f"no {name} scores")
    if not np.isfinite(array).all():
        raise FaceauditError(f"{name} scores hold NaN or infinite values")
    return array


def distinct(sorted_values: np.ndarray) -> np.ndarray:
    """The distinct values of an ascending array (neighbours compared: faster than ``np.unique``)."""
    keep = np.empty(sorted_values.size, dtype=bool)
    keep[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=keep[1:])
    return sorted_values[keep]


def roc_counts(genuine, impostor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, false matches, false non-matches) at every unique score, ascending.

    ``fm[k] = #{impostor >= thr[k]}`` and ``fnm[k] = #{genuine < thr[k]}`` as int64.
    """
    g = np.sort(_as_scores(genuine, "genuine"))
    i = np.sort(_as_scores(impostor, "impostor"))
    thresholds = distinct(np.sort(np.concatenate([g, i]), kind="stable"))  # the sort merges two sorted runs
    fnm = np.searchsorted(g, thresholds, side="left")
    fm = i.size - np.searchsorted(i, thresholds, side="left")
    return thresholds, fm, fnm


def _first_true(predicate, n: int) -> int:
    """The smallest k in [0, n) with ``predicate(k)`` (monotone: False...False True...True), or n."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if predicate(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def nearest_rate_index(rate: np.ndarray, target: float) -> int | None:
    """pyeer's operating point on a rate that never rises along the ascending thresholds: the index of
    the rate nearest ``target``, i.e. the first index at or below it or the first index of the level
    just above it; on a tie the lower index (lower threshold), as ``np.argmin``. None for no rate."""
    rising = -rate  # ascending: binary-searchable
    at_most = int(np.searchsorted(rising, -target))  # the first index with rate <= target
    candidates = [int(np.searchsorted(rising, rising[at_most - 1]))] if at_most > 0 else []
    if at_most < rate.size:
        candidates.append(at_most)
    return min(candidates, key=lambda k: abs(rate[k] - target)) if candidates else None  # first on ties


def _operating_points(thr: np.ndarray, fmr: np.ndarray, fnmr: np.ndarray) -> dict:
    """EER, FMR100, FMR1000, FMR0 and AUC from a ROC, exactly as pyeer 0.5.6 computes them.

    FMR never rises and FNMR never falls along the ascending thresholds, and IEEE rounding
    keeps ``fmr - fnmr`` and ``|fmr - op|`` monotone on each side, so pyeer's full-array
    ``np.where``/``np.argmin`` scans become binary searches with the same answers
    (first index on ties); only the AUC needs a pass over the curve.
    """
    n = fmr.size
    out = {}
    t2 = _first_true(lambda k: fmr[k] - fnmr[k] <= 0, n)
    if t2 == n:
        warnings.warn("the FMR and FNMR curves do not cross; EER set to 1 (are these dissimilarity scores?)",
                      RuntimeWarning, stacklevel=3)
        out["eer"], out["eer_th"] = 1.0, float(thr[0])
    else:
        t1 = t2 - 1 if fmr[t2] - fnmr[t2] != 0 and t2 != 0 else t2
        t = t1 if fmr[t1] + fnmr[t1] <= fmr[t2] + fnmr[t2] else t2
        out["eer"], out["eer_th"] = float((fnmr[t] + fmr[t]) / 2), float(thr[t])
    for key, op in (("fmr0", 0.0), ("fmr1000", 0.001), ("fmr100", 0.01)):
        index = nearest_rate_index(fmr, op)
        out[key], out[key + "_th"] = float(fnmr[index]), float(thr[index])
    tpr = 1 - fnmr
    y1, y2 = tpr[:-1], tpr[1:]
    out["auc"] = float(((fmr[:-1] - fmr[1:]) * (y1 + (y2 - y1) / 2)).sum())
    return out


def _separation(gmean, gstd, imean, istd) -> tuple[float, float]:
    """(decidability d' as pyeer, Fisher discriminant ratio)."""
    spread = gstd ** 2 + istd ** 2
    if gstd == 0 and istd == 0:
        dec = 1.0
    else:
        dec = float(abs(gmean - imean) / np.sqrt(0.5 * spread))
    fdr = float((gmean - imean) ** 2 / spread) if spread > 0 else math.inf
    return dec, fdr


def verification_metrics(genuine, impostor, counts: tuple | None = None) -> dict:
    """pyeer 0.5.6 ``get_eer_stats`` values (plus FDR) for similarity scores.

    Returns a dict of floats: gmean, gstd, imean, istd, eer, eer_th, fmr100, fmr100_th,
    fmr1000, fmr1000_th, fmr0, fmr0_th, auc, decidability, fdr; and the ints
    n_genuine, n_impostor. ``counts``: :func:`roc_counts` of these scores when the caller has them.
    """
    g = _as_scores(genuine, "genuine")
    i = _as_scores(impostor, "impostor")
    thr, fm, fnm = roc_counts(g, i) if counts is None else counts
    out = {"gmean": float(np.mean(g)), "gstd": float(np.std(g)),
           "imean": float(np.mean(i)), "istd": float(np.std(i))}
    out.update(_operating_points(thr, fm / i.size, fnm / g.size))
    out["decidability"], out["fdr"] = _separation(out["gmean"], out["gstd"], out["imean"], out["istd"])
    out["n_genuine"], out["n_impostor"] = int(g.size), int(i.size)
    return {key: out[key] for key in (*CI_KEYS, "n_genuine", "n_impostor")}


def default_bootstrap(n_scores: int) -> int:
    """Resamples used when none are asked for: 1000 up to 200k scores, then fewer (>= 100).

    Each resample costs O(unique scores); this keeps the default run to a few seconds.
    """
    if n_scores <= BOOTSTRAP_FULL_UP_TO:
        return DEFAULT_BOOTSTRAP
    return max(MIN_AUTO_BOOTSTRAP, int(DEFAULT_BOOTSTRAP * BOOTSTRAP_FULL_UP_TO / n_scores))


def bootstrap_ci(genuine, impostor, n_boot: int | None = None, seed: int = 42,
                 level: float = 0.95) -> dict:
    """Percentile bootstrap confidence intervals of every metric in :data:`CI_KEYS`.

    Genuine and impostor scores are resampled with replacement, separately, ``n_boot``
    times (default :func:`default_bootstrap`), with ``numpy.random.default_rng(seed)``.
    A resample is held as counts over the sorted unique scores, so each costs O(n)
    array work and no sort. Returns ``{key: (lower, upper)}`` plus ``"n_boot"``, ``"seed"``
    and ``"level"``.
    """
    g = _as_scores(genuine, "genuine")
    i = _as_scores(impostor, "impostor")
    if n_boot is None:
        n_boot = default_bootstrap(g.size + i.size)
    if n_boot <= 0:
        raise FaceauditError(f"bootstrap resamples must be > 0, got {n_boot}")
    if not 0 < level < 1:
        raise FaceauditError(f"confidence level must be in (0, 1), got {level}")
    values, codes = np.unique(np.concatenate([g, i]), return_inverse=True)
    g_codes, i_codes = codes[:g.size], codes[g.size:]
    ng, ni, u = g.size, i.size, values.size
    squares = values * values
    rng = np.random.default_rng(checks.seed(seed))
    draws = {key: np.empty(n_boot) for key in CI_KEYS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for b in range(n_boot):
            cg = np.bincount(g_codes[rng.integers(0, ng, ng)], minlength=u)
            ci = np.bincount(i_codes[rng.integers(0, ni, ni)], minlength=u)
            stats = _metrics_from_counts(values, cg, ci, ng, ni, squares)
            for key in CI_KEYS:
                draws[key][b] = stats[key]
    tail = (1 - level) / 2 * 100
    out: dict = {key: tuple(float(v) for v in np.percentile(draws[key], [tail, 100 - tail])) for key in CI_KEYS}
    out.update(n_boot=int(n_boot), seed=int(seed), level=float(level))
    return out


def _metrics_from_counts(values: np.ndarray, cg: np.ndarray, ci: np.ndarray, ng: int, ni: int,
                         squares: np.ndarray | None = None) -> dict:
    """The metrics of a sample given as counts per sorted unique value (the pyeer ROC rules).

    The ROC is taken at every value, present in the sample or not: an absent value repeats the
    rates of the next present one (a zero-width step, so the AUC is unchanged), except past the
    sample's maximum, which is cut off. Indices found on it are moved to the next present value,
    which is where pyeer, sweeping only the sample's own scores, finds them.
    """
    occupied = cg + ci
    last = occupied.size - 1
    while occupied[last] == 0:
        last -= 1
    occupied, thr = occupied[:last + 1], values[:last + 1]
    cg = cg[:last + 1].astype(np.float64)  # float counts: exact below 2**53, and BLAS dot products
    ci = ci[:last + 1].astype(np.float64)
    below_g = np.cumsum(cg)
    below_g -= cg  # genuine scores strictly below each value
    below_i = np.cumsum(ci)
    below_i -= ci
    fmr = (ni - below_i) / ni
    fnmr = below_g / ng
    out = _operating_points(thr, fmr, fnmr)
    for key in ("eer", "fmr0", "fmr1000", "fmr100"):
        index = int(np.searchsorted(thr, out[key + "_th"]))
        while occupied[index] == 0:
            index += 1
        out[key + "_th"] = float(thr[index])
    sq = (values * values if squares is None else squares)[:last + 1]
    gmean, imean = float(np.dot(cg, thr)) / ng, float(np.dot(ci, thr)) / ni
    gstd = math.sqrt(max(float(np.dot(cg, sq)) / ng - gmean * gmean, 0.0))
    istd = math.sqrt(max(float(np.dot(ci, sq)) / ni - imean * imean, 0.0))
    out.update(gmean=gmean, gstd=gstd, imean=imean, istd=istd)
    out["decidability"], out["fdr"] = _separation(gmean, gstd, imean, istd)
    return out
