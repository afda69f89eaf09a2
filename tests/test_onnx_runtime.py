"""--arch onnx: any ONNX face model through onnxruntime, its preprocessing read from the graph as
InsightFace reads it, flags that override it (recorded, checked on resume), the embedding pipeline
unchanged (batches, resume, errors file), and one-line errors for files that are no face model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from faceaudit.cli import main
from faceaudit.embed import embed_dataset
from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.io.embeddings import load_embeddings
from faceaudit.models import load_model

from conftest import cosine, orl_faces, real_model

onnx = pytest.importorskip("onnx", reason="--arch onnx reads the graph with the onnx package")
pytest.importorskip("onnxruntime", reason="--arch onnx runs the graph with onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def tiny_model(path, *, normalise=False, size=(8, 8), inputs=1, output_rank=2):
    """x [N, 3, H, W] -> (x - 127.5) * (1/128) when ``normalise`` -> per-channel mean [N, 3] (or [N, 3, 1, 1])."""
    nodes, inits, x = [], [], "x"
    if normalise:  # what an MXNet export that normalises itself starts with
        inits += [numpy_helper.from_array(np.array(127.5, np.float32), "mean"),
                  numpy_helper.from_array(np.array(1 / 128, np.float32), "scale")]
        nodes += [helper.make_node("Sub", ["x", "mean"], ["centred"], name="_minusscalar0"),
                  helper.make_node("Mul", ["centred", "scale"], ["scaled"], name="_mulscalar0")]
        x = "scaled"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    out_shape = ["N", 3, 1, 1]
    if output_rank == 2:
        nodes.append(helper.make_node("Flatten", ["pooled"], ["embedding"]))
        out_shape = ["N", 3]
    else:
        nodes.append(helper.make_node("Identity", ["pooled"], ["embedding"]))
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, *size])]
    if inputs == 2:
        graph_inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1]))
    graph = helper.make_graph(nodes, "tiny", graph_inputs,
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def expected_embeddings(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """What the tiny model gives for uint8 NHWC RGB images, unit-normalised."""
    e = ((images.astype(np.float64) - mean) / std).mean(axis=(1, 2))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


# ---------------------------------------------------------------- reading the graph

def test_preprocessing_is_read_from_the_graph_as_insightface_does(tmp_path):
    model, info = load_model("onnx", tiny_model(tmp_path / "plain.onnx"), "cpu")
    assert (info["arch"], info["embedding_dim"], info["input_size"]) == ("onnx", 3, [8, 8])
    assert (info["channel_order"], info["scale"], info["mean"], info["std"]) == ("RGB", 1.0, 127.5, 127.5)
    assert "preprocessing_flags" not in info
    x = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), x.mean(dim=(2, 3)), atol=1e-6)  # every image of the batch
    _, info = load_model("onnx", tiny_model(tmp_path / "norm.onnx", normalise=True, size=("H", "W")), "cpu")
    assert (info["mean"], info["std"], info["input_size"]) == (0.0, 1.0, [112, 112])  # the graph normalises


def test_flags_override_the_graph_and_are_reported(tmp_path):
    path = tiny_model(tmp_path / "plain.onnx", size=("H", "W"))
    flags = {"input_size": (16, 24), "mean": 0.0, "std": 255.0, "channel_order": "BGR"}
    _, info = load_model("onnx", path, "cpu", preprocessing=flags)
    assert (info["input_size"], info["mean"], info["std"], info["channel_order"]) == ([16, 24], 0.0, 255.0, "BGR")
    assert info["preprocessing_flags"] == {"input_size": [16, 24], "mean": 0.0, "std": 255.0, "channel_order": "BGR"}
    with pytest.raises(FaceauditError, match="apply to --arch onnx only; arcface-mbf has a fixed preprocessing"):
        load_model("arcface-mbf", path, "cpu", preprocessing={"mean": 0.0})


def test_cuda_uses_onnxruntimes_cuda_provider_when_it_has_one(monkeypatch, tmp_path):
    import onnxruntime

    from faceaudit.models.onnx_runtime import _providers

    assert _providers(torch.device("cpu"), tmp_path) == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert _providers(torch.device("cuda:1"), tmp_path)[0] == ("CUDAExecutionProvider", {"device_id": 1})
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.warns(FaceauditWarning, match="no CUDA execution provider"):
        assert _providers(torch.device("cuda"), tmp_path) == ["CPUExecutionProvider"]


# ---------------------------------------------------------------- bad input: one line naming the file, exit 2

@pytest.mark.parametrize("kind,expected", [
    ("two inputs", "2 inputs (x, mask); --arch onnx needs a model with a single image input"),
    ("4-D output", "gives no 2-D (batch, D) output for a batch of two images (embedding [2, 3, 1, 1])"),
    ("not onnx", "not a readable ONNX file"),
])
def test_a_file_that_is_no_face_model_is_one_line_naming_it(tmp_path, capsys, kind, expected):
    path = tmp_path / "model.onnx"
    if kind == "not onnx":
        path.write_bytes(b"\x08\x07garbage that is not a protobuf \xff\xff")
    else:
        tiny_model(path, inputs=2 if kind == "two inputs" else 1, output_rank=4 if kind == "4-D output" else 2)
    faces = tmp_path / "faces" / "p1"
    faces.mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(faces / "a.png")
    out = tmp_path / "out.jsonl"
    assert main(["embed", str(tmp_path / "faces"), "-o", str(out), "--arch", "onnx", "--weights", str(path),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"faceaudit: error: {path}: ") and expected in err, err
    assert not out.exists()


def test_onnx_needs_its_file(tmp_path):
    with pytest.raises(FaceauditError, match="--arch onnx needs the model file: pass --weights PATH"):
        load_model("onnx", None, "cpu")


# ---------------------------------------------------------------- the pipeline: batches, errors, resume

def test_embed_resume_and_errors_file_work_as_for_every_model(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 8, 8, 3), dtype=np.uint8)
    root = tmp_path / "faces"
    for i, image in enumerate(images):
        (root / f"p{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"p{i % 3}" / f"{i}.png")
    (root / "p0" / "broken.png").write_bytes(b"not a png")
    model = tiny_model(tmp_path / "tiny.onnx")
    out = tmp_path / "e.jsonl"
    run = dict(arch="onnx", weights=model, device="cpu", batch_size=2, workers=0, decimals=None, progress=False,
               log=lambda m: None)
    first = embed_dataset(root, out, limit=4, **run)
    assert first["total"] + first["errors_total"] == 4
    second = embed_dataset(root, out, **run)
    assert second["resumed"] and second["total"] == 7 and second["errors_total"] == 1
    assert "broken.png" in (tmp_path / "e.jsonl.errors.tsv").read_text()
    eset = load_embeddings(out)
    order = [int(name.split(".")[0]) for name in eset.image_names]
    np.testing.assert_allclose(eset.vectors, expected_embeddings(images[order], 127.5, 127.5), atol=1e-6)
    meta = json.loads((tmp_path / "e.jsonl.meta.json").read_text())
    assert meta["arch"] == "onnx" and meta["embedding_dim"] == 3 and meta["preprocessing"]["input_size"] == [8, 8]

    # the flags are recorded, change the numbers, and a resume with other flags is refused
    flagged = tmp_path / "f.jsonl"
    embed_dataset(root, flagged, preprocessing={"mean": 0.0, "std": 255.0}, limit=2, **run)
    assert json.loads((tmp_path / "f.jsonl.meta.json").read_text())["preprocessing"]["flags"] == \
        {"mean": 0.0, "std": 255.0}
    with pytest.raises(FaceauditError, match="computed with other settings"):
        embed_dataset(root, flagged, preprocessing={"mean": 10.0, "std": 255.0}, **run)
    embed_dataset(root, flagged, preprocessing={"mean": 0.0, "std": 255.0}, **run)
    eset = load_embeddings(flagged)
    order = [int(name.split(".")[0]) for name in eset.image_names]
    np.testing.assert_allclose(eset.vectors, expected_embeddings(images[order], 0.0, 255.0), atol=1e-6)


# ---------------------------------------------------------------- real models through onnxruntime

def test_arcface_mbf_through_onnxruntime_equals_our_module():
    weights = real_model("arcface-mbf")
    faces = orl_faces(subjects=range(1, 5), shots=(1, 2)).transpose(0, 3, 1, 2).astype(np.float32)
    ours, _ = load_model("arcface-mbf", weights, "cpu")
    runtime, read = load_model("onnx", weights, "cpu")
    assert (read["mean"], read["std"], read["input_size"], read["embedding_dim"]) == (127.5, 127.5, [112, 112], 512)
    x = torch.from_numpy((faces - 127.5) / 127.5)
    with torch.no_grad():
        assert cosine(ours(x).numpy(), runtime(x).numpy()).min() > 1 - 1e-6


def test_sfaces_graph_normalises_itself_so_it_gets_raw_pixels():
    from faceaudit.models.onnx_runtime import graph_preprocessing
    from faceaudit.models.onnx_weights import read_onnx_model

    path = real_model("sface")
    read = graph_preprocessing(read_onnx_model(path), path)  # starts with Sub(127.5), Mul(1/128)
    assert read == {"input_size": [112, 112], "channel_order": "RGB", "scale": 1.0, "mean": 0.0, "std": 1.0}
