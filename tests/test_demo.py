"""`faceaudit demo`: the leakage story on real faces must flag exactly the leaked people."""
import csv
import json

import pytest
from scipy.stats import norm

from faceaudit.stages.demo import run_demo, search_threshold, split_story
from faceaudit.errors import FaceauditError

from conftest import real_model, shared_path


def make_people(root, people=8, photos=4):
    for p in range(1, people + 1):
        (root / f"s{p}").mkdir(parents=True)
        for k in range(1, photos + 1):
            (root / f"s{p}" / f"{k}.pgm").write_bytes(b"P5")
    return root


def test_split_story_overlaps_a_quarter_of_the_people(tmp_path):
    story = split_story(make_people(tmp_path / "faces"), tmp_path / "work")
    # natural order: s1..s8, not s1, s10, s2 ...
    assert story["synthetic_people"] == ["s1", "s2", "s3", "s4", "s5", "s6"]
    assert story["reference_people"] == ["s5", "s6", "s7", "s8"]
    assert story["leaked"] == ["s5", "s6"]
    assert sorted(p.name for p in (tmp_path / "work" / "synthetic" / "s5").iterdir()) == ["1.pgm", "2.pgm"]
    assert sorted(p.name for p in (tmp_path / "work" / "reference" / "s5").iterdir()) == ["3.pgm", "4.pgm"]


def test_split_story_needs_four_people(tmp_path):
    with pytest.raises(FaceauditError, match="at least 4 identity sub-folders"):
        split_story(make_people(tmp_path / "faces", people=3), tmp_path / "work")


def test_search_threshold_spreads_the_false_match_rate_over_the_search():
    one = search_threshold(0.1, 0.1, 1, fmr=1e-3)
    assert one == pytest.approx(0.1 + norm.isf(1e-3) * 0.1)
    assert search_threshold(0.1, 0.1, 100, fmr=1e-3) == pytest.approx(0.1 + norm.isf(1e-5) * 0.1)
    assert search_threshold(0.1, 0.1, 100) > one


@pytest.mark.slow
def test_demo_on_orl_flags_exactly_the_leaked_people(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="--align scrfd runs SCRFD through onnxruntime")
    orl = shared_path("orl")
    models = real_model("arcface-mbf").parent
    assert real_model("scrfd").parent == models
    monkeypatch.chdir(tmp_path)
    report = run_demo(tmp_path / "out", orl, models, "cpu", log=lambda _m: None)

    assert (report["model"], report["align"]) == ("arcface-mbf", "scrfd")
    assert report["leaked_truth"] == [f"s{i}" for i in range(21, 31)]
    assert report["flagged"] == report["leaked_truth"]
    assert report["missed"] == [] and report["false_alarms"] == []
    synthetic = report["variability"]["synthetic"]["metrics"]
    assert (synthetic["n_genuine"], synthetic["n_impostor"]) == (30 * 10, 150 * 149 // 2 - 30 * 10)
    assert synthetic["eer"] <= 0.01 and synthetic["gmean"] > synthetic["imean"] + 0.5
    # every photo of a leaked person, and no other, passes the search threshold
    above = report["leakage_summary"]["above_threshold"]
    assert above[1]["threshold"] == report["threshold_fmr1000_search"] and above[1]["count"] == 50
    out = tmp_path / "out"
    assert json.loads((out / "demo_report.json").read_text())["flagged"] == report["flagged"]
    for name in ("Metrics/All_Datasets_metrics.csv", "Figures_with_metrics/big_synthetic_MatedVsNonmated.pdf",
                 "leakage/synthetic_BestMatches_150.csv", "leakage/synthetic_leakage_summary.json",
                 "leakage/synthetic_identity_flags.csv", "leakage/synthetic_Top20Global_150.json"):
        assert (out / name).stat().st_size > 0, name
    assert len(list((out / "leakage").glob("comparison_*.png"))) == 1
    # the network recognises the synthetic people: verification, identification, clustering
    recognition = report["recognition"]
    assert recognition["verification_accuracy"][0] >= 0.98
    assert recognition["rank_accuracy"]["1"] == 1.0
    clusters = recognition["clustering"]
    assert (clusters["clusters"], clusters["identities"]) == (30, 30) and clusters["nmi"] == pytest.approx(1.0)
    for name in ("Verification/synthetic_ROC.png", "Identification/synthetic_cmc.png",
                 "Clustering/synthetic_graph_projection.png"):
        assert (out / "recognition" / name).stat().st_size > 0, name
    with open(out / "leakage" / "synthetic_identity_flags.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    flagged = [float(r["max_similarity"]) for r in rows if r["flagged"] == "True"]
    others = [float(r["max_similarity"]) for r in rows if r["flagged"] == "False"]
    assert len(flagged) == 10 and len(others) == 20 and min(flagged) > max(others)
