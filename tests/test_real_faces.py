"""End to end on real faces: ORL (40 people x 10 photos) -> SFace embeddings -> variability metrics.

Every mated pair (1,800) and every non-mated pair (78,000) is scored, with and without
YuNet alignment. With alignment SFace must separate ORL almost perfectly (EER <= 1%).
Skipped with a reason when ORL or the models are absent (offline and not in Models/).
"""
from __future__ import annotations

from pathlib import Path

import pytest


from conftest import real_model, shared_path  # noqa: E402


pytestmark = pytest.mark.slow

EMBEDDED: dict[str, Path] = {}  # alignment -> the embedding file the fixture wrote






def exhaustive_metrics(path: Path) -> dict:
    """All mated and all non-mated cosine scores of an embedding file, through the variability stage."""
    from faceaudit import variability

    embeddings, _ = variability.load(path)
    mated, non_mated, _ = variability.compute_scores(embeddings, None, exhaustive=True)
    return variability.analyze_scores(mated, non_mated, bootstrap=0)["metrics"]


@pytest.fixture(scope="module")
def orl_metrics(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime", reason="--align yunet runs YuNet through onnxruntime")
    from faceaudit.embed import embed_dataset

    orl = shared_path("orl")
    sface, yunet = real_model("sface"), real_model("yunet")
    out = tmp_path_factory.mktemp("orl")
    results = {}
    for align in ("none", "yunet"):
        path = out / f"orl_sface_{align}.jsonl"
        summary = embed_dataset(orl, path, arch="sface", weights=sface, device="cpu", align=align,
                                models_dir=yunet.parent, progress=False, decimals=None, log=lambda m: None)
        assert summary["complete"] and summary["embedded"] == 400 and summary["errors"] == 0, summary
        results[align] = exhaustive_metrics(path)
        EMBEDDED[align] = path
    print("\nORL x SFace, exhaustive:", {k: {m: round(v[m], 5) for m in ("eer", "gmean", "imean", "decidability")}
                                        for k, v in results.items()})
    return results


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


def test_aligned_orl_clusters_by_identity(orl_metrics, tmp_path):
    """At SFace's default threshold (from the file's metadata) Chinese Whispers finds ORL's 40 people;
    connected components of the same graph merge some of them through single false links."""
    from faceaudit.stages import cluster

    common = dict(out_dir=tmp_path, figures=False, device="cpu", progress=False)
    whispers = cluster.run(EMBEDDED["yunet"], **common)
    components = cluster.run(EMBEDDED["yunet"], graph_algorithm="components", **common)
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

    eset = load_embeddings(EMBEDDED["yunet"])
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
