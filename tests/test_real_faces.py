"""End to end on real faces: ORL (40 people x 10 photos) -> SFace embeddings -> variability metrics
and identification.

Every mated pair (1,800) and every non-mated pair (78,000) is scored, with and without
YuNet alignment. With alignment SFace must separate ORL almost perfectly (EER <= 1%).
Identification on the same embeddings: rank-1 with one gallery image per person, and the
notebook's 70/30 KNN equal to scikit-learn's. Skipped with a reason when ORL or the models are
absent (offline and not in Models/).
"""
from __future__ import annotations

from pathlib import Path

import pytest


from conftest import real_model, shared_path  # noqa: E402


pytestmark = pytest.mark.slow






def exhaustive_metrics(path: Path) -> dict:
    """All mated and all non-mated cosine scores of an embedding file, through the variability stage."""
    from faceaudit import variability

    embeddings, _ = variability.load(path)
    mated, non_mated, _ = variability.compute_scores(embeddings, None, exhaustive=True)
    return variability.analyze_scores(mated, non_mated, bootstrap=0)["metrics"]


@pytest.fixture(scope="module")
def orl_embeddings(tmp_path_factory):
    """The ORL faces embedded by SFace, unaligned ("none") and aligned ("yunet"): file paths."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime", reason="--align yunet runs YuNet through onnxruntime")
    from faceaudit.embed import embed_dataset

    orl = shared_path("orl")
    sface, yunet = real_model("sface"), real_model("yunet")
    out = tmp_path_factory.mktemp("orl")
    paths = {}
    for align in ("none", "yunet"):
        path = out / f"orl_sface_{align}.jsonl"
        summary = embed_dataset(orl, path, arch="sface", weights=sface, device="cpu", align=align,
                                models_dir=yunet.parent, progress=False, decimals=None, log=lambda m: None)
        assert summary["complete"] and summary["embedded"] == 400 and summary["errors"] == 0, summary
        paths[align] = path
    return paths


@pytest.fixture(scope="module")
def orl_metrics(orl_embeddings):
    results = {align: exhaustive_metrics(path) for align, path in orl_embeddings.items()}
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


def test_identification_on_orl(orl_embeddings, tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    from faceaudit.evaluate.identification import split_images
    from faceaudit.io.embeddings import load_embeddings
    from faceaudit.search import IndexOptions
    from faceaudit.stages.identify import run_identify

    opts = IndexOptions(device="cpu", progress=False)
    rank1 = {align: run_identify(path, out_dir=tmp_path / align, options=opts)["rank_accuracy"]["1"]
             for align, path in orl_embeddings.items()}
    print("\nORL x SFace, rank-1 with one gallery image per person:", rank1)
    assert rank1["yunet"] >= 0.99 and rank1["none"] >= 0.9, rank1
    path = orl_embeddings["none"]
    knn = run_identify(path, split_images=0.7, knn=10, out_dir=tmp_path / "knn", options=opts)["knn"]
    data, split = load_embeddings(path), split_images(400, 0.7, 42)
    sk = KNeighborsClassifier(n_neighbors=10, metric="cosine").fit(data.vectors[split.gallery],
                                                                  data.identities[split.gallery])
    assert knn["accuracy"] == sk.score(data.vectors[split.probes], data.identities[split.probes])
