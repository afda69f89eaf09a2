"""faceaudit.models: InsightFace-identical layouts and outputs, registry, safe weight loading.

The reference fixtures in tests/data were dumped from InsightFace arcface_torch's own
backbone code by tests/data/make_insightface_fixtures.py (run outside the repo); the
seeded weight and input recipes come from that same script.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
from pathlib import Path

import pytest
import torch

import faceaudit.models as models
from faceaudit.errors import FaceauditError
from faceaudit.models import (
    ModelSpec,
    create_model,
    get_spec,
    list_specs,
    load_model,
    load_weights,
    matching_architectures,
    sha256_file,
)
from faceaudit.models.weights import layout_mismatch, layout_of

DATA = Path(__file__).resolve().parent / "data"
_spec = importlib.util.spec_from_file_location("make_insightface_fixtures", DATA / "make_insightface_fixtures.py")
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

LAYOUTS = json.loads((DATA / "insightface_layouts.json").read_text())
OUTPUTS = json.loads((DATA / "insightface_outputs.json").read_text())
REFERENCE_NAMES = fixtures.REFERENCE_NAMES  # ours -> arcface_torch get_model() name
OURS = {theirs: ours for ours, theirs in REFERENCE_NAMES.items()}


def meta_model(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name)


def seeded_model(name: str) -> torch.nn.Module:
    model = create_model(name)
    model.load_state_dict(fixtures.seeded_state_dict(model.state_dict()), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def mbf_state():
    """A seeded MobileFaceNet state_dict (2 M parameters: small enough to save often)."""
    return seeded_model("mobilefacenet").state_dict()


# ---------------------------------------------------------------- registry

def test_registry_has_the_issue_architectures():
    names = {spec.name for spec in list_specs()}
    assert set(REFERENCE_NAMES) | {"torchscript"} <= names
    for name in REFERENCE_NAMES:
        spec = get_spec(name)
        assert isinstance(spec, ModelSpec)
        assert (spec.embedding_dim, spec.input_size, spec.channel_order) == (512, (112, 112), "RGB")
        assert (spec.scale, spec.mean, spec.std) == (1 / 255, 0.5, 0.5)
        assert spec.weights_loader == "torch" and spec.weights_file.endswith(".pth")
    assert get_spec("iresnet100").weights_file == "ArcFace_R100_MS1MV3.pth"
    assert get_spec("IResNet100") is get_spec("iresnet100")
    assert [s.name for s in list_specs()] == sorted(names)


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(FaceauditError) as err:
        get_spec("resnet9000")
    message = str(err.value)
    assert "resnet9000" in message and "iresnet100" in message and "mobilefacenet" in message


def test_register_refuses_a_second_model_under_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        models.register(ModelSpec(name="iresnet18", build=torch.nn.Identity))


def test_torchscript_spec_has_no_constructor():
    spec = get_spec("torchscript")
    assert (spec.scale, spec.mean, spec.std, spec.channel_order) == (1 / 255, 0.5, 0.5, "RGB")
    with pytest.raises(FaceauditError, match="TorchScript"):
        create_model("torchscript")


# ---------------------------------------------------------------- identical to InsightFace

@pytest.mark.parametrize("theirs", sorted(LAYOUTS["layouts"]))
def test_state_dict_layout_is_insightface(theirs):
    """Same keys, in the same order, same shapes, same buffers, same frozen parameter."""
    expected = LAYOUTS["layouts"][theirs]
    got = fixtures.layout_entries(meta_model(OURS[theirs]))
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]} extra {extra[:5]}"
    assert got == expected  # order too


@pytest.mark.parametrize("theirs", sorted(LAYOUTS["module_settings_sha256"]))
def test_module_settings_are_insightface(theirs):
    """Strides, padding, groups, BatchNorm eps/momentum of every module holding tensors."""
    entries = fixtures.module_entries(meta_model(OURS[theirs]))
    if theirs in LAYOUTS["module_settings"]:
        assert entries == LAYOUTS["module_settings"][theirs]
    assert fixtures.digest(entries) == LAYOUTS["module_settings_sha256"][theirs]


@pytest.mark.parametrize("theirs", sorted(OUTPUTS["outputs"]))
def test_outputs_match_insightface_on_the_same_weights(theirs):
    expected = torch.tensor(OUTPUTS["outputs"][theirs])
    with torch.no_grad():
        got = seeded_model(OURS[theirs])(fixtures.seeded_input())
    assert got.shape == expected.shape == (fixtures.BATCH, 512)
    assert torch.allclose(got, expected, atol=1e-4, rtol=0), (got - expected).abs().max()


def test_features_gamma_is_frozen_but_saved():
    model = create_model("iresnet18")
    assert model.features.weight.requires_grad is False
    assert "features.weight" in model.state_dict()
    assert torch.all(model.features.weight == 1)


# ---------------------------------------------------------------- loading

@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "state_dict_backbone", "module_prefix",
                                  "model_and_module_prefix"])
def test_strict_load_in_every_wrapping(tmp_path, mbf_state, wrap):
    state = dict(mbf_state)
    if wrap in ("module_prefix", "model_and_module_prefix"):
        state = {f"module.{key}": value for key, value in state.items()}
    payload = {"bare": state, "module_prefix": state, "model_and_module_prefix": {"model": state, "epoch": 3},
               "state_dict": {"state_dict": state}, "model": {"model": state},
               "state_dict_backbone": {"epoch": 1, "state_dict_backbone": state}}[wrap]
    path = tmp_path / "w.pth"
    torch.save(payload, path)

    model = create_model("mobilefacenet")
    digest = load_weights(model, path, "mobilefacenet")
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == sha256_file(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, mbf_state[key]), key


def test_load_model_is_ready_and_describes_itself(tmp_path, mbf_state):
    path = tmp_path / "mbf.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in mbf_state.items()}, path)  # fp16 file
    model, info = load_model("mobilefacenet", path, "cpu")
    assert not model.training
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    assert info["arch"] == "mobilefacenet" and info["weights"] == str(path)
    assert info["sha256"] == sha256_file(path) and info["embedding_dim"] == 512
    assert info["device"] == "cpu" and info["input_size"] == [112, 112] and info["channel_order"] == "RGB"
    assert (info["scale"], info["mean"], info["std"]) == (1 / 255, 0.5, 0.5)
    with torch.no_grad():
        out = model(fixtures.seeded_input())
    assert out.shape == (2, 512) and torch.isfinite(out).all()


def test_load_model_keeps_the_frozen_gamma(tmp_path):
    model = meta_model("iresnet18")
    state = fixtures.seeded_state_dict(model.state_dict())
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    loaded, _ = load_model("iresnet18", path, "cpu")
    assert loaded.features.weight.requires_grad is False
    assert not any(t.is_meta for t in (*loaded.parameters(), *loaded.buffers()))
    with torch.no_grad():
        expected = torch.tensor(OUTPUTS["outputs"]["r18"])
        assert torch.allclose(loaded(fixtures.seeded_input()), expected, atol=1e-4, rtol=0)


def test_mismatch_names_keys_and_the_architecture_that_fits(tmp_path, mbf_state):
    path = tmp_path / "mbf.pth"
    torch.save(mbf_state, path)
    with pytest.raises(FaceauditError) as err:
        load_weights(create_model("iresnet18"), path, "iresnet18")
    message = str(err.value)
    assert "\n" not in message
    assert "does not fit iresnet18" in message
    assert "missing keys: conv1.weight" in message and "unexpected keys: layers.0.layers.0.weight" in message
    assert "more)" in message  # long lists are truncated with a count
    assert "its layout is that of mobilefacenet: use --arch mobilefacenet" in message


def test_mismatch_without_a_matching_architecture(tmp_path, mbf_state):
    state = dict(mbf_state)
    del state["conv_sep.layers.2.weight"]
    state["extra.weight"] = torch.zeros(3)
    state["features.layers.2.weight"] = torch.zeros(128, 512)
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(FaceauditError) as err:
        load_weights(create_model("mobilefacenet"), path, "mobilefacenet")
    message = str(err.value)
    assert "1 missing keys: conv_sep.layers.2.weight" in message
    assert "1 unexpected keys: extra.weight" in message
    assert "features.layers.2.weight [128, 512] (expected [512, 512])" in message
    assert "no registered architecture has its layout" in message


def test_layouts_of_deep_models_are_told_apart_on_the_meta_device():
    layouts = {name: layout_of(meta_model(name).state_dict()) for name in REFERENCE_NAMES}
    for name, layout in layouts.items():
        assert matching_architectures(layout) == [name]
    problem = layout_mismatch(layouts["iresnet100"], layouts["iresnet50"])
    assert problem.startswith("450 missing keys: layer2.4.bn1.weight") and "(+444 more)" in problem


class _Payload:
    """Unpickling this would create ``marker``: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_malicious_pickle_is_refused_not_run(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"conv1.weight": torch.zeros(1), "x": _Payload(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(FaceauditError) as err:
        load_weights(create_model("mobilefacenet"), path, "mobilefacenet")
    assert "refused to load" in str(err.value) and "evil.pth" in str(err.value)
    assert not marker.exists()
    with pytest.raises(FaceauditError, match="refused"):
        load_model("mobilefacenet", path, "cpu")
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    if how == "raw pickle":
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_missing_weights_say_where_to_download_and_where_to_put(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FaceauditError) as err:
        load_model("iresnet100", None, "cpu")
    message = str(err.value)
    assert "\n" not in message
    assert "Models/ArcFace_R100_MS1MV3.pth" in message
    assert "InsightFace model zoo" in message and "ms1mv3_arcface_r100_fp16" in message
    assert "backbone.pth" in message
    with pytest.raises(FaceauditError, match="not found"):
        load_model("iresnet18", tmp_path / "nope.pth", "cpu")


def test_unreadable_or_foreign_files(tmp_path):
    model = create_model("mobilefacenet")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(FaceauditError, match="cannot read"):
        load_weights(model, garbage, "mobilefacenet")
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(FaceauditError, match="not a state_dict"):
        load_weights(model, listed, "mobilefacenet")
    nested = tmp_path / "other.pth"
    torch.save({"optimizer": {"lr": torch.tensor(0.1)}, "epoch": 2}, nested)
    with pytest.raises(FaceauditError, match="keys optimizer, epoch"):
        load_weights(model, nested, "mobilefacenet")
    with pytest.raises(FaceauditError, match="not a file"):
        load_weights(model, tmp_path, "mobilefacenet")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_round_trip(tmp_path):
    model = seeded_model("mobilefacenet")
    x = fixtures.seeded_input()
    path = tmp_path / "mbf.pt"
    with torch.no_grad():
        expected = model(x)
        torch.jit.save(torch.jit.trace(model, x[:1]), str(path))
    loaded, info = load_model("torchscript", path, "cpu")
    assert info["arch"] == "torchscript" and info["embedding_dim"] == 512
    assert info["sha256"] == sha256_file(path) and info["channel_order"] == "RGB"
    with torch.no_grad():
        assert torch.allclose(loaded(x), expected, atol=1e-5)
    # a TorchScript file given as a state_dict is pointed at --arch torchscript
    with pytest.raises(FaceauditError, match="--arch torchscript"):
        load_model("mobilefacenet", path, "cpu")
    with pytest.raises(FaceauditError, match="--weights"):
        load_model("torchscript", None, "cpu")
    with pytest.raises(FaceauditError, match="TorchScript"):
        load_model("torchscript", tmp_path / "missing.pt", "cpu")
