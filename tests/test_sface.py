"""SFace as a PyTorch module: structure, ONNX-initializer loading, agreement with onnxruntime."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from faceaudit.errors import FaceauditError

from conftest import cosine, orl_faces, real_model  # noqa: E402
from faceaudit.models import get_spec, load_model
from faceaudit.models.onnx_weights import load_onnx_weights, onnxruntime_session
from faceaudit.models.sface import SFace


# ---------------------------------------------------------------- no weights needed

def test_structure_and_batching():
    model = SFace().eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, 112, 112) * 255)
    assert out.shape == (3, 128)
    n_params = sum(p.numel() for p in model.parameters())
    assert 7_500_000 < n_params < 10_000_000


def test_name_map_covers_the_state_dict_one_to_one():
    model = SFace()
    mapping = model.onnx_name_map()
    keys = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(mapping) == keys
    assert len(set(mapping.values())) == len(mapping) == 174  # the file's 174 initializers
    assert mapping["blocks.conv_1.act.weight"] == "conv_1_relu_gamma"
    assert mapping["blocks.conv_14_dw.bn.running_var"] == "conv_14_dw_batchnorm_moving_var"
    assert mapping["fc1.weight"] == "fc1_gamma"


def test_registry_spec_documents_preprocessing():
    spec = get_spec("sface")
    assert spec.embedding_dim == 128 and spec.input_size == (112, 112)
    assert spec.channel_order == "RGB"
    assert (spec.scale, spec.mean, spec.std) == (1.0, 0.0, 1.0)  # raw 0..255; the net normalises itself
    assert spec.weights_loader == "onnx" and spec.weights_file == "face_recognition_sface_2021dec.onnx"


def _tiny_onnx(path: Path, weight: np.ndarray, slope: np.ndarray) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "c_weight"], ["y"]), helper.make_node("PRelu", ["y", "c_slope"], ["z"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 4, 4])],
        [numpy_helper.from_array(weight, "c_weight"), numpy_helper.from_array(slope, "c_slope"),
         numpy_helper.from_array(np.zeros(1, np.float32), "unused_extra")],
    )
    onnx.save(helper.make_model(graph), str(path))


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 1, bias=False)
        self.act = torch.nn.PReLU(3)

    def forward(self, x):
        return self.act(self.conv(x))

    @staticmethod
    def onnx_name_map():
        return {"conv.weight": "c_weight", "act.weight": "c_slope"}


def test_load_onnx_weights_by_name(tmp_path):
    weight = np.arange(6, dtype=np.float32).reshape(3, 2, 1, 1)
    slope = np.array([0.1, 0.2, 0.3], np.float32).reshape(3, 1, 1)  # PRelu stores [C,1,1]
    _tiny_onnx(tmp_path / "t.onnx", weight, slope)
    model = Tiny()
    info = load_onnx_weights(model, tmp_path / "t.onnx")
    assert info == {"loaded": 2, "unused": ["unused_extra"]}
    assert torch.equal(model.conv.weight, torch.from_numpy(weight))
    assert torch.allclose(model.act.weight, torch.tensor([0.1, 0.2, 0.3]))


def test_load_onnx_weights_rejects_misfits(tmp_path):
    _tiny_onnx(tmp_path / "t.onnx", np.zeros((4, 2, 1, 1), np.float32), np.zeros((3, 1, 1), np.float32))
    with pytest.raises(FaceauditError, match=r"c_weight has shape \[4, 2, 1, 1\]"):
        load_onnx_weights(Tiny(), tmp_path / "t.onnx")
    with pytest.raises(FaceauditError, match="weights do not fit SFace"):
        load_onnx_weights(SFace(), tmp_path / "t.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00junk")
    with pytest.raises(FaceauditError, match="not a readable ONNX file"):
        load_onnx_weights(Tiny(), tmp_path / "junk.onnx")
    with pytest.raises(FaceauditError, match="not found"):
        load_onnx_weights(Tiny(), tmp_path / "absent.onnx")


def test_missing_onnx_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(FaceauditError, match=r"faceaudit\[onnx\]"):
        load_onnx_weights(Tiny(), tmp_path / "t.onnx")


# ---------------------------------------------------------------- the real model

@pytest.fixture(scope="module")
def sface_path():
    pytest.importorskip("onnx")
    return real_model("sface")


@pytest.fixture(scope="module")
def sface_model(sface_path):
    model, info = load_model("sface", sface_path, "cpu")
    return model, info


def test_matches_onnxruntime_on_orl_faces(sface_path, sface_model):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference for this test")
    faces = orl_faces()                                               # 80 faces, 40 people
    x = faces.transpose(0, 3, 1, 2).astype(np.float32)                # RGB 0..255, NCHW
    model, info = sface_model
    assert info["embedding_dim"] == 128 and info["channel_order"] == "RGB"
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()                      # one batch of 80
    # the file as shipped (batch fixed to 1), image by image
    options = ort.SessionOptions()
    options.log_severity_level = 3
    plain = ort.InferenceSession(str(sface_path), options, providers=["CPUExecutionProvider"])
    reference = np.concatenate([plain.run(None, {"data": x[i:i + 1]})[0] for i in range(len(x))])
    cos = cosine(ours, reference)
    assert cos.min() >= 0.9999, f"min cosine {cos.min():.6f}"
    assert np.abs(ours - reference).max() < 1e-3 * np.abs(reference).max()
    # the same file with a dynamic batch (what the benchmark uses) agrees too
    batched = onnxruntime_session(sface_path).run(None, {"data": x})[0]
    assert cosine(batched, reference).min() >= 0.9999
    # and the embeddings are meaningful: same person closer than different people
    e = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    mated = (e[0::2] * e[1::2]).sum(1)
    non_mated = (e[0::2] * np.roll(e[1::2], 1, axis=0)).sum(1)
    assert mated.mean() > non_mated.mean() + 0.3


def test_an_onnx_file_with_foreign_initializers_is_refused(sface_path, tmp_path):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(sface_path))
    graph.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "extra_thing"))
    onnx.save(graph, str(tmp_path / "other.onnx"))
    with pytest.raises(FaceauditError, match=r"initializer\(s\) sface does not use \(extra_thing\)"):
        load_model("sface", tmp_path / "other.onnx", "cpu")


def test_batch_independence(sface_model):
    faces = orl_faces(subjects=range(1, 6), shots=(1,))
    x = torch.from_numpy(faces.transpose(0, 3, 1, 2).astype(np.float32))
    model, _ = sface_model
    with torch.no_grad():
        together = model(x).numpy()
        alone = np.concatenate([model(x[i:i + 1]).numpy() for i in range(len(x))])
    assert cosine(together, alone).min() >= 0.99999


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu(sface_path, sface_model):
    faces = orl_faces(subjects=range(1, 11), shots=(1,))
    x = torch.from_numpy(faces.transpose(0, 3, 1, 2).astype(np.float32))
    cpu_model, _ = sface_model
    cuda_model, info = load_model("sface", sface_path, "cuda")
    assert info["device"].startswith("cuda")
    with torch.no_grad():
        on_cpu = cpu_model(x).numpy()
        on_cuda = cuda_model(x.cuda()).cpu().numpy()
    assert cosine(on_cpu, on_cuda).min() >= 0.9999
