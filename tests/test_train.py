"""`faceaudit train` and `faceaudit export` end to end on tiny data: the loss falls, a run killed in its second
epoch resumes to the very weights and numbers of a run that never stopped, the backbone loads strictly in
`faceaudit embed`, a RUN_DIR of other settings is refused, bad input gets one line, and the exported fp16 and
int8 models load and are measured against fp32 on the same pairs."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from faceaudit.cli import main
from faceaudit.errors import FaceauditError, Interrupted
from faceaudit.models import ModelSpec, load_model, register
from faceaudit.stages import train as train_stage
from faceaudit.train.loop import Trainer

TINY = "tiny-train-test"


class TinyNet(nn.Module):
    """Two strided convs and an embedding on 16x16 faces: the loop's work without MobileFaceNet's cost."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.PReLU(8),
                                  nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.PReLU(16),
                                  nn.Flatten(), nn.Linear(256, 16, bias=False), nn.BatchNorm1d(16))

    def forward(self, x):
        return self.body(x)


register(ModelSpec(name=TINY, build=TinyNet, embedding_dim=16, input_size=(16, 16)))
FAST = dict(workers=0, threads=1, progress=False, figures=False, echo=lambda _: None)


def make_faces(root, identities=12, per=6, size=16, seed=0):
    """Identities of blocky random patterns; their images differ by noise."""
    rng = np.random.default_rng(seed)
    for i in range(identities):
        base = rng.integers(0, 256, (4, 4, 3)).repeat(size // 4, 0).repeat(size // 4, 1)
        (root / f"p{i:02d}").mkdir(parents=True)
        for j in range(per):
            noisy = np.clip(base + rng.integers(-60, 61, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / f"p{i:02d}" / f"{j}.png")
    return root


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_faces(tmp_path_factory.mktemp("faces"))


def _options(**changes):
    return dict(dict(arch=TINY, epochs=2, batch_size=8, val_identities=4, hold=1, t_max=1, **FAST), **changes)


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def finished(faces, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "run"
    return run_dir, train_stage.run(faces, run_dir, **_options())


def test_the_loss_falls_and_every_file_is_written(finished):
    run_dir, summary = finished
    rows = _rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and float(rows[2]["loss"]) < float(rows[1]["loss"])
    assert rows[0]["loss"] == "" and [float(r["lr"]) for r in rows[1:]] == [0.1, pytest.approx(1e-3)]
    assert summary["before_training"]["val_eer"] == float(rows[0]["val_eer"]) and summary["epochs_done"] == 2
    assert summary["train_identities"] == 8 and summary["val_identities"] == 4 and summary["val_images"] == 24
    val = summary["eval_sets"]["val"]
    # two folds of two identities, every pair within a fold: 4 x C(6, 2) mated, 2 x 6 x 6 non-mated
    assert val["identities"] == 4 and val["folds"] == 2 and val["mated_pairs"] == 60 and val["non_mated_pairs"] == 72
    assert summary["eval_sets"]["train"]["identities"] == 4
    last = summary["last_epoch"]
    assert 0 <= last["val_eer"] <= 1 and last["eer_gap"] == pytest.approx(last["val_eer"] - last["train_eer"])
    assert last["val_f1_distance"] == pytest.approx(np.sqrt(2 - 2 * last["val_f1_threshold"]))
    with open(run_dir / "split.csv") as handle:
        split = list(csv.DictReader(handle))
    val_ids = {r["identity"] for r in split if r["split"] == "val"}
    assert len(split) == 72 and len(val_ids) == 4 and not val_ids & {r["identity"] for r in split if r["split"] == "train"}
    assert json.loads((run_dir / "settings.json").read_text())["augment"] == list(train_stage.parse_augment(None))


def test_a_killed_run_resumes_to_the_same_weights_and_numbers(faces, finished, tmp_path, monkeypatch, capsys):
    reference, _ = finished
    run_dir = tmp_path / "killed"
    original = Trainer.run_epoch

    def killed_in_epoch_two(self, dataset, plan, workers, label, progress=True):
        if label.startswith("epoch 2/"):
            raise KeyboardInterrupt
        return original(self, dataset, plan, workers, label, progress)

    monkeypatch.setattr(Trainer, "run_epoch", killed_in_epoch_two)
    with pytest.raises(Interrupted, match=r"interrupted in epoch 2; .*checkpoint.pth holds epoch 1 of 2; run the same"):
        train_stage.run(faces, run_dir, **_options())
    monkeypatch.setattr(Trainer, "run_epoch", original)
    command = ["train", str(faces), "-o", str(run_dir), "--arch", TINY, "--epochs", "2", "--batch-size", "8",
               "--val-identities", "4", "--hold", "1", "--t-max", "1", "--workers", "0", "--threads", "1",
               "--no-progress", "--no-figures"]
    assert main(command) == 0
    assert "resuming" in capsys.readouterr().out
    want, got = torch.load(reference / "backbone.pth"), torch.load(run_dir / "backbone.pth")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert _rows(run_dir) == _rows(reference)
    # a later, longer command continues the same run (--epochs may change); another --lr may not
    assert train_stage.run(faces, run_dir, **_options(epochs=3))["epochs_done"] == 3
    with pytest.raises(FaceauditError, match=r"other settings \(lr: 0.1 there, 0.05 now\).*--overwrite"):
        train_stage.run(faces, run_dir, **_options(lr=0.05))
    assert train_stage.run(faces, run_dir, **_options(lr=0.05, epochs=1, overwrite=True))["epochs_done"] == 1


def test_the_backbone_loads_strictly_in_faceaudit_embed(faces, finished, tmp_path):
    from faceaudit.embed.embedder import Embedder
    from faceaudit.io.embeddings import load_embeddings
    from faceaudit.models import get_spec

    run_dir, _ = finished
    output = tmp_path / "emb.npz"
    assert main(["embed", str(faces), "-o", str(output), "--arch", TINY, "--weights", str(run_dir / "backbone.pth"),
                 "--workers", "0", "--threads", "1", "--no-progress", "--device", "cpu"]) == 0
    eset = load_embeddings(output)
    model, _ = load_model(TINY, run_dir / "backbone.pth")  # strict=True
    images = np.stack([np.asarray(Image.open(faces / i / n)) for i, n in zip(eset.identities, eset.image_names)])
    vectors = Embedder(model, get_spec(TINY), torch.device("cpu"))(torch.from_numpy(images)).numpy()
    assert len(eset) == 72 and np.allclose(eset.vectors, vectors, atol=1e-6)


def test_contrastive_training_on_the_siamese_tools_pairs(faces, tmp_path):
    summary = train_stage.run(faces, tmp_path / "siamese", **_options(loss="contrastive", epochs=1,
                                                                       pairs_per_epoch=40))
    last = summary["last_epoch"]
    assert summary["settings"]["margin"] == 1.0 and summary["settings"]["scale"] is None
    assert last["samples"] == 80  # 40 positive pairs and 40 negatives
    assert last["val_f1_distance"] == pytest.approx(np.sqrt(2 - 2 * last["val_f1_threshold"]))


def test_bad_input_gets_one_line(faces, finished, tmp_path):
    lonely = tmp_path / "one"
    (lonely / "solo").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(lonely / "solo" / "a.png")
    with pytest.raises(FaceauditError, match="1 identity; training a recognition network needs at least two"):
        train_stage.run(lonely, tmp_path / "r1", **_options())
    with pytest.raises(FaceauditError, match="leaves 0 to train on"):
        train_stage.run(faces, tmp_path / "r2", **_options(val_identities=12))
    with pytest.raises(FaceauditError, match="unknown augmentation 'mixup'"):
        train_stage.run(faces, tmp_path / "r3", **_options(augment="blur,mixup"))
    run_dir, _ = finished
    with pytest.raises(FaceauditError, match=r"does not fit mobilefacenet: \d+ missing keys: layers\.0\.layers\.0\.weight"):
        train_stage.run(faces, tmp_path / "r4", **_options(arch="mobilefacenet", init=run_dir / "backbone.pth"))
    with pytest.raises(FaceauditError, match="--batch-size must be at least 2"):
        train_stage.run(faces, tmp_path / "r5", **_options(batch_size=1))
    assert not (tmp_path / "r3").exists() and not (tmp_path / "r4").exists()  # nothing written before the checks


def test_fine_tuning_starts_from_the_init_weights(faces, finished, tmp_path):
    run_dir, _ = finished
    start = train_stage.init_backbone(TINY, run_dir / "backbone.pth")
    saved = torch.load(run_dir / "backbone.pth")
    assert all(torch.equal(start.state_dict()[k], saved[k]) for k in saved) and start.training
    summary = train_stage.run(faces, tmp_path / "tuned", **_options(init=run_dir / "backbone.pth", epochs=1, lr=0.01))
    assert summary["settings"]["init_sha256"] and summary["epochs_done"] == 1


def test_export_writes_fp16_and_int8_and_measures_them_on_the_same_pairs(finished):
    run_dir, summary = finished
    assert main(["export", str(run_dir), "--calibration", "16", "--batch-size", "8", "--seconds", "0.05",
                 "--threads", "1"]) == 0
    rows = json.loads((run_dir / "export" / "export.json").read_text())["rows"]
    assert [r["precision"] for r in rows] == ["fp32", "fp16", "int8"]
    assert rows[0]["eer"] == summary["last_epoch"]["val_eer"]  # the training's last evaluation, recomputed
    assert rows[0]["accuracy"] == summary["last_epoch"]["val_accuracy"]
    fp16 = run_dir / "export" / "backbone_fp16.pth"
    assert fp16.stat().st_size < (run_dir / "backbone.pth").stat().st_size
    assert all(v.dtype == torch.float16 for v in torch.load(fp16).values() if v.is_floating_point())
    model16, _ = load_model(TINY, fp16)  # strict, into fp32
    model32, _ = load_model(TINY, run_dir / "backbone.pth")
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model16(x), model32(x), atol=0.05)
    with pytest.warns(DeprecationWarning):  # torch.jit.load; --arch torchscript would feed it 112x112 faces
        int8 = torch.jit.load(run_dir / "export" / "backbone_int8.pt")
    with torch.no_grad():
        assert int8(x).shape == (4, 16) and torch.nn.functional.cosine_similarity(int8(x), model32(x)).min() > 0.5
    assert rows[2]["cosine_to_fp32_mean"] > 0.5 and rows[1]["cosine_to_fp32_min"] > 0.999
    with open(run_dir / "export" / "export.csv") as handle:
        assert [r["precision"] for r in csv.DictReader(handle)] == ["fp32", "fp16", "int8"]
    with pytest.raises(FaceauditError, match="no settings.json"):
        from faceaudit.stages.export import run as export
        export(run_dir / "export")


def test_fine_tuning_the_arcface_network_on_real_faces(tmp_path):
    """`--arch arcface-mbf --init w600k_mbf.onnx`: the run starts from InsightFace's weights, and its
    backbone.pth (our module's state_dict) loads strictly where `--weights` takes the ONNX file."""
    from conftest import orl_faces, real_model  # noqa: PLC0415

    onnx = real_model("arcface-mbf")
    faces = orl_faces(subjects=(1, 2), shots=(1, 2))
    root = tmp_path / "orl"
    for i, face in enumerate(faces):
        (root / f"s{i // 2 + 1}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(root / f"s{i // 2 + 1}" / f"{i % 2}.png")
    original, info = load_model("arcface-mbf", onnx)
    start = train_stage.init_backbone("arcface-mbf", onnx)
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in start.state_dict().items())
    run_dir = tmp_path / "tuned"
    summary = train_stage.run(root, run_dir, **_options(arch="arcface-mbf", init=onnx, val_identities=0, epochs=1,
                                                        batch_size=4, lr=0.001))
    assert summary["epochs_done"] == 1 and summary["before_training"] is None
    assert summary["settings"]["init_sha256"] == info["sha256"]
    tuned, _ = load_model("arcface-mbf", run_dir / "backbone.pth")  # strict
    x = (torch.from_numpy(faces).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    with torch.no_grad():
        before, after = original(x), tuned(x)
    unit = torch.nn.functional.normalize(after)
    scores = unit @ unit.T  # faces 0, 1 are s1's and 2, 3 are s2's: still told apart after the step
    assert not torch.equal(before, after) and min(scores[0, 1], scores[2, 3]) > scores[:2, 2:].max()
