"""arcface-mbf: InsightFace's w600k_mbf on our MobileFaceNet trunk, filled from the ONNX file and equal
to onnxruntime on real faces; a file that is not this model is refused naming what differs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from faceaudit.cli import main
from faceaudit.errors import FaceauditError
from faceaudit.models import create_model, get_spec, load_model
from faceaudit.models.arcface_mbf import ArcFaceMBF
from faceaudit.models.mobilefacenet import MobileFaceNet

from conftest import orl_faces, real_model


# ---------------------------------------------------------------- no weights needed

def test_the_trunk_is_mobilefacenets_with_batchnorm_folded():
    ours, theirs = ArcFaceMBF(), create_model("mobilefacenet")
    assert isinstance(ours, MobileFaceNet)
    convs = [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.groups)
             for m in theirs.layers.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.groups)
                     for m in ours.layers.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.bias is not None for m in ours.modules() if isinstance(m, torch.nn.Conv2d))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ours.modules())
    assert sum(p.numel() for p in ours.parameters()) == 3_399_424  # + 1,024 BatchNorm1d statistics = 3.40M
    with torch.no_grad():
        assert ours.eval()(torch.rand(3, 3, 112, 112)).shape == (3, 512)


def test_name_map_covers_the_state_dict_one_to_one():
    model = ArcFaceMBF()
    mapping = model.onnx_name_map()
    keys = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(mapping) == keys
    assert len(set(mapping.values())) == len(mapping) == 138  # the file's 138 initializers
    assert mapping["layers.0.layers.0.weight"] == "518" and mapping["layers.0.layers.0.bias"] == "519"
    assert mapping["layers.0.layers.1.weight"] == "664"  # the first PReLU slope
    assert mapping["features.layers.0.layers.1.weight"] == "697"  # the head's PReLU, the last slope
    assert mapping["features.layers.2.weight"] == "fc.weight"
    assert mapping["features.layers.3.running_var"] == "features.running_var"


def test_spec_is_insightfaces_preprocessing_and_licence():
    spec = get_spec("arcface-mbf")
    assert (spec.embedding_dim, spec.input_size, spec.channel_order) == (512, (112, 112), "RGB")
    assert (spec.scale, spec.mean, spec.std) == (1.0, 127.5, 127.5)  # (pixel - 127.5) / 127.5
    assert spec.weights_loader == "onnx" and spec.weights_file == "w600k_mbf.onnx"
    assert "non-commercial research only" in spec.description and "fetch arcface-mbf" in spec.download
    assert 0.2 < spec.threshold < 0.4 and "ORL" in spec.threshold_source


# ---------------------------------------------------------------- the real model

@pytest.fixture(scope="module")
def mbf_path():
    return real_model("arcface-mbf")


@pytest.fixture(scope="module")
def orl_batch():
    """24 ORL faces of 12 people, as the network's input: RGB, (pixel - 127.5) / 127.5."""
    faces = orl_faces(subjects=range(1, 13), shots=(1, 2))
    return (faces.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 127.5


def test_matches_onnxruntime_on_orl_faces(mbf_path, orl_batch):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference for this test")
    model, info = load_model("arcface-mbf", mbf_path, "cpu")
    assert info["sha256"] == "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f"
    with torch.no_grad():
        ours = model(torch.from_numpy(orl_batch)).numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(mbf_path), options, providers=["CPUExecutionProvider"])
    reference = session.run(None, {"input.1": orl_batch})[0]  # the file as shipped: its batch is dynamic
    assert ours.shape == reference.shape == (24, 512)
    assert np.abs(ours - reference).max() <= 1e-5, np.abs(ours - reference).max()
    unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    mated = (unit[0::2] * unit[1::2]).sum(1)          # the two photos of each person
    non_mated = (unit[0::2] * np.roll(unit[1::2], 1, axis=0)).sum(1)
    assert mated.min() > non_mated.max()


def test_another_onnx_file_is_refused_naming_the_first_differing_initializer(mbf_path, tmp_path):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(mbf_path))
    slot = next(i for i, t in enumerate(graph.graph.initializer) if t.name == "521")
    graph.graph.initializer[slot].CopyFrom(numpy_helper.from_array(np.zeros((128, 1, 3, 3), np.float32), "521"))
    onnx.save(graph, str(tmp_path / "other.onnx"))
    with pytest.raises(FaceauditError) as err:
        load_model("arcface-mbf", tmp_path / "other.onnx", "cpu")
    message = str(err.value)
    assert message == (f"{tmp_path / 'other.onnx'}: weights do not fit ArcFaceMBF: initializer 521 has shape "
                       "[128, 1, 3, 3], ArcFaceMBF.layers.1.layers.0.weight needs [128, 2, 3, 3]; "
                       "1 of the 138 initializers it needs differ")


def test_cli_refuses_sface_given_as_arcface_mbf(tmp_path, capsys):
    sface = real_model("sface")
    faces = tmp_path / "faces" / "p1"
    faces.mkdir(parents=True)
    from PIL import Image
    Image.fromarray(orl_faces(subjects=[1], shots=[1])[0]).save(faces / "1.png")
    out = tmp_path / "e.jsonl"
    assert main(["embed", str(tmp_path / "faces"), "-o", str(out), "--arch", "arcface-mbf", "--weights", str(sface),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"faceaudit: error: {sface}: weights do not fit ArcFaceMBF: ")
    assert "it has no initializer 518" in err
    assert not out.exists()
