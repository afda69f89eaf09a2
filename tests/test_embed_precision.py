"""`--precision`: fp32 (TF32 off) by default on every device, recorded and checked on resume; the
CUDA precisions against the CPU's fp32 numbers on real faces; a bf16/fp16 batch that overflows
is computed again in fp32, said once and counted."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceaudit import checks, cli
from faceaudit.embed import embed_dataset
from faceaudit.embed.embedder import Embedder
from faceaudit.errors import FaceauditError
from faceaudit.models import create_model, get_spec
from conftest import real_model, shared_path
from test_embed import ARCH, FAST, make_images, write_folder

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
#: how far a CUDA embedding may be from the CPU's fp32 one, SFace on ORL faces: fp32 gives the CPU's
#: numbers (every value within one unit of the 5th decimal); the others, as 1 - cosine (the issue's
#: H200 measured 2e-5 for fp16; bf16 keeps 8 bits of mantissa to fp16's 11, so 8x the error)
ONE_UNIT = 1.01e-5
ONE_MINUS_COSINE = {"tf32": 5e-4, "fp16": 5e-4, "bf16": 5e-3}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "Dataset", make_images())


def model_file(path: Path, overflow: bool = False, nan: bool = False) -> Path:
    """MobileFaceNet with random weights; ``overflow``: its last linear layer 1e6 times too large, so
    its output overflows fp16 (65,504 at most) and is fine in fp32; ``nan``: NaN in a convolution."""
    torch.manual_seed(0)
    model = create_model(ARCH)
    with torch.no_grad():
        if overflow:
            model.features.layers[2].weight.mul_(1e6)
        if nan:
            next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight.fill_(float("nan"))
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def cpu_runs_fp16(monkeypatch):
    """Let the CPU run fp16 autocast (refused to users: it is slow there) to test the fp32 retry."""
    monkeypatch.setattr(checks, "embed_precision", lambda value, device_type: value)


# ---------------------------------------------------------------- the choice and its record

def test_lower_precisions_need_cuda_and_are_checked_first(tmp_path, folder, capsys):
    out = tmp_path / "o.jsonl"
    code = cli.main(["embed", str(folder), "-o", str(out), "--arch", ARCH, "--weights", str(tmp_path / "none.pth"),
                     "--device", "cpu", "--precision", "fp16", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "faceaudit: error: precision fp16 is for CUDA GPUs; on cpu the model runs in fp32 " \
                                "(the default)"  # before the (missing) weights are even looked at
    with pytest.raises(SystemExit):
        cli.main(["embed", str(folder), "--precision", "fp8"])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
    with pytest.raises(FaceauditError, match="unknown precision 'half'"):
        checks.embed_precision("half", "cuda")
    assert not out.exists()


def test_onnx_models_run_in_their_own_precision(tmp_path, folder, cpu_runs_fp16):
    with pytest.raises(FaceauditError, match="--precision bf16 is for PyTorch models; --arch onnx runs in onnxruntime"):
        embed_dataset(folder, tmp_path / "o.jsonl", arch="onnx", weights=tmp_path / "none.onnx", precision="bf16",
                      **{k: v for k, v in FAST.items() if k != "arch"})


def test_precision_is_recorded_and_checked_on_resume(tmp_path, folder):
    weights = model_file(tmp_path / "m.pth")
    out = tmp_path / "o.jsonl"
    meta_path = tmp_path / "o.jsonl.meta.json"
    embed_dataset(folder, out, weights=weights, limit=4, **FAST)
    meta = json.loads(meta_path.read_text())
    assert meta["precision"] == "fp32" and meta["fp32_recomputed_batches"] == 0
    meta_path.write_text(json.dumps(dict(meta, precision="fp16")))
    with pytest.raises(FaceauditError, match=r"precision: 'fp16' there, 'fp32' now.*--overwrite"):
        embed_dataset(folder, out, weights=weights, **FAST)
    del meta["precision"]  # written before the precision was recorded: CUDA then meant fp16 autocast
    meta_path.write_text(json.dumps(dict(meta, device="cuda:0")))
    with pytest.raises(FaceauditError, match=r"precision: 'fp16' there, 'fp32' now"):
        embed_dataset(folder, out, weights=weights, **FAST)
    meta_path.write_text(json.dumps(dict(meta, device="cpu")))  # ... and the CPU fp32
    summary = embed_dataset(folder, out, weights=weights, **FAST)
    assert summary["already_done"] == 4 and summary["total"] == 12


# ---------------------------------------------------------------- the fp32 retry

def test_embedder_recomputes_only_non_finite_batches_in_fp32(tmp_path):
    spec = get_spec(ARCH)
    batch = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8))
    for overflow in (False, True):
        model = create_model(ARCH)
        model.load_state_dict(torch.load(model_file(tmp_path / "m.pth", overflow=overflow), weights_only=True))
        fp32 = Embedder(model, spec, torch.device("cpu"))(batch)
        low = Embedder(model, spec, torch.device("cpu"), precision="fp16")
        raw = low.submit(batch)
        assert bool(torch.isfinite(raw.host).all()) is not overflow
        vectors, again = raw.result()
        assert again is overflow
        if overflow:  # the retry is the fp32 computation itself
            assert torch.equal(vectors, fp32)
        else:  # fp16 kept, near fp32
            assert float((vectors * fp32).sum(dim=1).min()) > 0.99


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_an_overflowing_fp16_batch_is_redone_in_fp32_said_once_and_counted(tmp_path, folder, device, cpu_runs_fp16):
    weights = model_file(tmp_path / "over.pth", overflow=True)
    plain, low = tmp_path / "fp32.jsonl", tmp_path / "fp16.jsonl"
    run = dict(FAST, device=device, batch_size=2, limit=4)
    embed_dataset(folder, plain, weights=weights, **run)
    said = []
    summary = embed_dataset(folder, low, weights=weights, precision="fp16", **dict(run, log=said.append))
    assert summary["fp32_recomputed_batches"] == 2  # 4 images in batches of 2: both overflowed
    assert len(said) == 1 and "fp16 gave NaN or infinite values" in said[0] and "computed again in fp32" in said[0]
    meta = json.loads((tmp_path / "fp16.jsonl.meta.json").read_text())
    assert meta["precision"] == "fp16" and meta["fp32_recomputed_batches"] == 2
    if device == "cpu":  # the same fp32 computation, so the same bytes
        assert low.read_bytes() == plain.read_bytes()
    else:  # cuDNN may choose other fp32 kernels when autotuning (fp16 runs): one unit of the 5th decimal
        a, b = ([json.loads(line)["embedding"] for line in p.read_text().splitlines()] for p in (low, plain))
        np.testing.assert_allclose(a, b, atol=ONE_UNIT)


def test_a_batch_that_fp32_cannot_fix_stops_the_run(tmp_path, folder, cpu_runs_fp16):
    weights = model_file(tmp_path / "nan.pth", nan=True)
    out = tmp_path / "o.jsonl"
    with pytest.raises(FaceauditError, match="NaN or infinite values .*the weights do not suit --arch mobilefacenet"):
        embed_dataset(folder, out, weights=weights, precision="fp16", **dict(FAST, limit=2))
    assert not out.exists() and not (tmp_path / "o.jsonl.meta.json").exists()


# ---------------------------------------------------------------- CUDA against the CPU, real faces

@pytest.fixture(scope="module")
def orl_cpu(tmp_path_factory):
    """40 ORL faces (4 people) embedded by SFace on the CPU in fp32, 5 decimals as the paper writes."""
    pytest.importorskip("onnx", reason="SFace's weights are read from its ONNX file with the onnx package")
    orl, sface = shared_path("orl"), real_model("sface")
    root = tmp_path_factory.mktemp("orl")
    faces = root / "orl"
    for person in ("s1", "s2", "s3", "s4"):
        (faces / person).mkdir(parents=True)
        for image in sorted((orl / person).iterdir()):
            (faces / person / image.name).write_bytes(image.read_bytes())
    out = root / "cpu.jsonl"
    embed_dataset(faces, out, arch="sface", weights=sface, device="cpu", progress=False, log=lambda m: None)
    return faces, sface, out


@CUDA
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_cuda_precisions_against_the_cpu_on_real_faces(tmp_path, orl_cpu, precision):
    faces, sface, cpu = orl_cpu
    out = tmp_path / f"{precision}.jsonl"
    embed_dataset(faces, out, arch="sface", weights=sface, device="cuda", precision=precision, progress=False,
                  log=lambda m: None)
    got, want = ([json.loads(line) for line in p.read_text().splitlines()] for p in (out, cpu))
    assert [(r["identity"], r["image_name"]) for r in got] == [(r["identity"], r["image_name"]) for r in want]
    a, b = (np.array([r["embedding"] for r in rows]) for rows in (got, want))
    if precision == "fp32":
        assert np.abs(a - b).max() <= ONE_UNIT
    else:
        cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert 1 - cosine.min() <= ONE_MINUS_COSINE[precision], (precision, float(cosine.min()))
