"""End to end on real faces: ORL (40 people x 10 photos) -> embeddings -> variability metrics.

Every mated pair (1,800) and every non-mated pair (78,000) is scored, for SFace with and
without YuNet alignment and for InsightFace's ArcFace MobileFaceNet (arcface-mbf) with and
without SCRFD alignment. Aligned, SFace must separate ORL almost perfectly (EER <= 1%) and
arcface-mbf all but perfectly (EER <= 0.05%; unaligned <= 3%); the aligned SFace embeddings
are also clustered. Skipped with a reason when ORL or the models are absent (offline and not in
Models/).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import real_model, shared_path  # noqa: E402

pytestmark = pytest.mark.slow

EMBEDDED: dict[tuple[str, str], Path] = {}  # (arch, alignment) -> the embedding file the fixtures wrote


def exhaustive_metrics(path: Path) -> dict:
    """All mated and all non-mated cosine scores of an embedding file, through the variability stage."""
    from faceaudit import variability

    embeddings, _ = variability.load(path)
    mated, non_mated, _ = variability.compute_scores(embeddings, None, exhaustive=True)
    return variability.analyze_scores(mated, non_mated, bootstrap=0)["metrics"]


def embed_orl(out: Path, arch: str, detector: str) -> dict:
    """Metrics of all ORL pairs for ``arch``, unaligned ("none") and aligned with ``detector``.
    Every one of the 400 photos must be embedded: aligned, the detector found each face."""
    pytest.importorskip("onnxruntime", reason=f"--align {detector} runs the detector through onnxruntime")
    from faceaudit.embed import embed_dataset

    orl = shared_path("orl")
    weights, detector_file = real_model(arch), real_model(detector)
    results = {}
    for align in ("none", detector):
        path = out / f"orl_{arch}_{align}.jsonl"
        summary = embed_dataset(orl, path, arch=arch, weights=weights, device="cpu", align=align,
                                models_dir=detector_file.parent, workers=0, progress=False, decimals=None,
                                log=lambda m: None)
        assert summary["complete"] and summary["embedded"] == 400 and summary["errors"] == 0, summary
        results[align] = exhaustive_metrics(path)
        EMBEDDED[arch, align] = path
    print(f"\nORL x {arch}, exhaustive:", {k: {m: round(v[m], 6) for m in ("eer", "fmr1000_th", "gmean", "imean")}
                                          for k, v in results.items()})
    return results


@pytest.fixture(scope="module")
def orl_metrics(tmp_path_factory):
    return embed_orl(tmp_path_factory.mktemp("orl"), "sface", "yunet")


@pytest.fixture(scope="module")
def orl_arcface(tmp_path_factory):
    return embed_orl(tmp_path_factory.mktemp("orl"), "arcface-mbf", "scrfd")


def test_aligned_orl_is_separated(orl_metrics):
    m = orl_metrics["yunet"]
    assert (m["n_genuine"], m["n_impostor"]) == (40 * 45, 400 * 399 // 2 - 40 * 45)
    assert m["eer"] <= 0.01, m
    assert m["gmean"] > m["imean"] + 0.5, m
    assert m["decidability"] > 4, m


def test_unaligned_orl_still_works_but_alignment_helps(orl_metrics):
    raw, aligned = orl_metrics["none"], orl_metrics["yunet"]
    assert raw["eer"] <= 0.10, raw
    assert raw["gmean"] > raw["imean"] + 0.3, raw
    assert aligned["eer"] <= raw["eer"]
    assert aligned["gmean"] > raw["gmean"]


def test_arcface_mbf_separates_orl_all_but_perfectly(orl_arcface):
    aligned, raw = orl_arcface["scrfd"], orl_arcface["none"]
    assert (aligned["n_genuine"], aligned["n_impostor"]) == (1_800, 78_000)
    assert aligned["eer"] <= 0.0005, aligned   # 0.004% measured: 3 of 78,000 non-mated pairs
    assert raw["eer"] <= 0.03, raw             # 1.61% measured
    assert aligned["decidability"] > raw["decidability"] and aligned["gmean"] > raw["gmean"]


def test_arcface_mbf_threshold_is_its_fmr1000_threshold_on_aligned_orl(orl_arcface):
    from faceaudit.models import get_spec

    spec = get_spec("arcface-mbf")
    assert spec.threshold == pytest.approx(orl_arcface["scrfd"]["fmr1000_th"], abs=5e-5)
    assert "SCRFD-aligned" in spec.threshold_source


def test_aligned_orl_clusters_by_identity(orl_metrics, tmp_path):
    """At SFace's default threshold (from the file's metadata) Chinese Whispers finds ORL's 40 people;
    connected components of the same graph merge some of them through single false links."""
    from faceaudit.stages import cluster

    common = dict(out_dir=tmp_path, figures=False, device="cpu", progress=False)
    whispers = cluster.run(EMBEDDED["sface", "yunet"], **common)
    components = cluster.run(EMBEDDED["sface", "yunet"], graph_algorithm="components", **common)
    assert whispers["threshold_source"].startswith("sface's default") and whispers["settings"]["converged"]
    w, c = whispers["scores"], components["scores"]
    assert w["clusters"] == 40 and w["nmi"] >= 0.99 and w["bcubed_f1"] >= 0.99, w
    assert c["pairwise_recall"] == 1.0 and c["pairwise_precision"] < w["pairwise_precision"], c


def test_clustering_finds_planted_collapse_and_drift_in_real_faces(orl_metrics, tmp_path):
    """ORL relabelled: s1's faces filed under s2 (one label, two people) and s3's last five under s3b
    (two labels, one person). The findings name exactly these."""
    import csv

    import numpy as np

    from faceaudit.io.embeddings import load_embeddings
    from faceaudit.stages import cluster

    eset = load_embeddings(EMBEDDED["sface", "yunet"])
    ids = eset.identities.astype(object)
    ids[ids == "s1"] = "s2"
    ids[(ids == "s3") & np.isin(eset.image_names, [f"{i}.pgm" for i in range(6, 11)])] = "s3b"
    eset.identities = ids.astype(str)
    report = cluster.run(eset, out_dir=tmp_path, figures=False, device="cpu", progress=False, stem="planted")
    with open(report["paths"]["merged_identities"]) as handle:
        merged = [(row["identity_a"], row["identity_b"], float(row["merged_share"])) for row in csv.DictReader(handle)]
    with open(report["paths"]["split_identities"]) as handle:
        split = [(row["identity"], int(row["clusters"]), float(row["largest_cluster_share"]))
                 for row in csv.DictReader(handle)]
    assert merged == [("s3", "s3b", 1.0)] and split == [("s2", 2, 0.5)]
