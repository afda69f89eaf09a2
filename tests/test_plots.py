"""Figures: KDE curves as seaborn draws them, and file names that keep every dot."""
import numpy as np
from scipy.stats import gaussian_kde

from faceaudit.report.plots import kde_curve, plot_distributions, save_figure


def test_kde_curve_is_scotts_gaussian_kde_over_the_data_plus_three_bandwidths():
    scores = np.random.default_rng(0).normal(0.3, 0.1, 500)
    x, y = kde_curve(scores)
    kde = gaussian_kde(scores, bw_method="scott")
    bandwidth = np.sqrt(kde.covariance[0, 0])
    assert np.isclose(x[0], scores.min() - 3 * bandwidth) and np.isclose(x[-1], scores.max() + 3 * bandwidth)
    assert np.allclose(y, kde(x))


def test_save_figure_keeps_dots_in_names_and_replaces_only_figure_suffixes(tmp_path):
    fig = plot_distributions({"a": np.array([0.1, 0.2, 0.4])}, "t")
    written = save_figure(fig, tmp_path / "sd_v1.5_BestMatches_100", formats=("png", "pdf"))
    assert [p.name for p in written] == ["sd_v1.5_BestMatches_100.png", "sd_v1.5_BestMatches_100.pdf"]
    fig = plot_distributions({"a": np.array([0.1, 0.2, 0.4])}, "t")
    assert save_figure(fig, tmp_path / "x.v2_fig.png")[0].name == "x.v2_fig.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sd_v1.5_BestMatches_100.pdf",
                                                          "sd_v1.5_BestMatches_100.png", "x.v2_fig.png"]
    assert (tmp_path / "x.v2_fig.png").read_bytes()[:4] == b"\x89PNG"
