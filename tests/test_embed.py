"""The embedding pipeline (faceaudit.embed), `faceaudit embed` and the paper's script.

A real registered architecture (mobilefacenet, the fastest) with random weights
saved to a temporary .pth; tiny generated datasets.
"""
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from faceaudit import cli, load_embeddings
from faceaudit.embed import embed_dataset
from faceaudit.embed.resume import read_done_keys, truncate_to_last_newline
from faceaudit.errors import FaceauditError
from faceaudit.io.images import decode_rgb, preprocess
from faceaudit.models import create_model, get_spec

ROOT = Path(__file__).resolve().parents[1]
ARCH = "mobilefacenet"
# one inference thread: the test machine is small and often shared, where spinning threads cost most
FAST = dict(arch=ARCH, device="cpu", workers=0, batch_size=5, threads=1, progress=False, log=lambda message: None)
#: the CUDA variants of the tests that compare values run where a GPU is found, in fp32 (the default),
#: against the CPU's fp32 numbers: equal to the paper's 5 decimals, within one unit of the last one
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="needs a CUDA GPU"))]
ENV = dict(os.environ, OMP_NUM_THREADS="1",
           PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model(ARCH)
    path = tmp_path_factory.mktemp("models") / "mobilefacenet_random.pth"
    torch.save(model.state_dict(), path)
    return path


def _encode(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, fmt)
    return buffer.getvalue()


def make_images(seed: int = 0) -> dict[str, bytes]:
    """12 images of 3 identities: 112x112 JPEG/PNG and other sizes, one greyscale, one RGBA."""
    rng = np.random.default_rng(seed)
    files = {}
    for ident in ("id_a", "id_b", "id_c"):
        files[f"{ident}/01.jpg"] = _encode(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), "JPEG")
        files[f"{ident}/02.png"] = _encode(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), "PNG")
        files[f"{ident}/03.JPG"] = _encode(rng.integers(0, 256, (130, 100, 3), dtype=np.uint8), "JPEG")
    files["id_a/04_grey.png"] = _encode(rng.integers(0, 256, (90, 90), dtype=np.uint8), "PNG", "L")
    files["id_b/04_rgba.png"] = _encode(rng.integers(0, 256, (112, 112, 4), dtype=np.uint8), "PNG", "RGBA")
    files["id_c/04.bmp"] = _encode(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8), "BMP")
    return files


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name in sorted(files):
            archive.writestr(prefix + name, files[name])
    return path


def write_targz(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name in sorted(files):
            info = tarfile.TarInfo(prefix + name)
            info.size = len(files[name])
            archive.addfile(info, io.BytesIO(files[name]))
    return path


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def error_rows(path: Path) -> dict[str, str]:
    rows = path.read_text().splitlines()
    assert rows[0] == "path\treason"
    return dict(row.split("\t", 1) for row in rows[1:])


def assert_same_embeddings(data: bytes, expected: bytes) -> None:
    got, want = [[json.loads(line) for line in d.splitlines()] for d in (data, expected)]
    assert [(r["identity"], r["image_name"]) for r in got] == [(r["identity"], r["image_name"]) for r in want]
    np.testing.assert_allclose([r["embedding"] for r in got], [r["embedding"] for r in want], atol=1.01e-5)


@pytest.fixture
def images() -> dict[str, bytes]:
    return make_images()


@pytest.fixture
def folder(tmp_path, images) -> Path:
    return write_folder(tmp_path / "Dataset", images)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, weights) -> tuple[bytes, str]:
    """Output and metadata of one plain run over the 12 images of ``make_images()`` (computed once)."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "out.jsonl"
    summary = embed_dataset(write_folder(root / "Dataset", make_images()), out, weights=weights, **FAST)
    assert summary["embedded"] == 12 and summary["errors"] == 0
    return out.read_bytes(), (root / "out.jsonl.meta.json").read_text()


@pytest.fixture
def reference(reference_run) -> bytes:
    return reference_run[0]


# ---------------------------------------------------------------- sources give identical results

def test_folder_zip_and_targz_give_identical_files(tmp_path, images, weights, reference):
    sources = [write_zip(tmp_path / "ds.zip", images), write_targz(tmp_path / "ds.tar.gz", images, prefix="Dataset/")]
    for number, source in enumerate(sources):
        out = tmp_path / f"out{number}.jsonl"
        summary = embed_dataset(source, out, weights=weights, **FAST)
        assert summary["embedded"] == 12 and summary["errors"] == 0
        assert out.read_bytes() == reference
        assert not (tmp_path / f"out{number}.jsonl.errors.tsv").exists()  # no errors, no errors file
    keys = [(r["identity"], r["image_name"]) for r in map(json.loads, reference.splitlines())]
    assert keys == sorted(keys) and len(set(keys)) == 12
    assert ("id_a", "03.JPG") in keys  # extensions are case-insensitive


@pytest.mark.parametrize("device", DEVICES)
def test_values_equal_the_papers_one_image_at_a_time_computation(tmp_path, images, folder, weights, device):
    out = tmp_path / "out.jsonl"
    embed_dataset(folder, out, weights=weights, **dict(FAST, workers=1, device=device))
    model = create_model(ARCH)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    spec = get_spec(ARCH)
    for record in lines_of(out):
        rgb = decode_rgb(images[f"{record['identity']}/{record['image_name']}"])
        with torch.no_grad():
            vector = F.normalize(model(preprocess(rgb, spec)[None]), dim=1)[0].numpy()
        expected = np.round(vector, 5)
        assert len(record["embedding"]) == 512
        # 5 decimals each: one unit of the last apart at most, and a little more for the float32 rounding
        np.testing.assert_allclose(record["embedding"], expected, atol=1.01e-5 + 1e-7)
        # short decimals, as the paper's file: no value has more than 5 decimals
        assert all(len(repr(v).split(".")[-1]) <= 5 for v in record["embedding"] if "e" not in repr(v))
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
    assert meta["arch"] == ARCH and meta["count"] == 12 and meta["complete"] is True and meta["precision"] == "fp32"
    assert meta["weights_sha256"] and meta["preprocessing"]["mean"] == 0.5
    assert meta["flip_tta"] is False and meta["align"] == "none" and meta["faceaudit_version"]
    eset = load_embeddings(out)
    assert len(eset) == 12 and eset.metadata["arch"] == ARCH


@pytest.mark.parametrize("device", DEVICES)
def test_flip_tta_sums_image_and_mirror(tmp_path, images, folder, weights, device):
    out = tmp_path / "flip.jsonl"
    embed_dataset(folder, out, weights=weights, flip_tta=True, decimals=None, **dict(FAST, device=device))
    model = create_model(ARCH)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    spec = get_spec(ARCH)
    record = lines_of(out)[3]
    x = preprocess(decode_rgb(images[f"{record['identity']}/{record['image_name']}"]), spec)[None]
    with torch.no_grad():
        summed = model(x) + model(torch.flip(x, dims=[3]))
        plain = model(x)
    np.testing.assert_allclose(record["embedding"], F.normalize(summed, dim=1)[0].numpy(), atol=1e-5)
    assert not np.allclose(record["embedding"], F.normalize(plain, dim=1)[0].numpy(), atol=1e-3)
    assert json.loads((tmp_path / "flip.jsonl.meta.json").read_text())["flip_tta"] is True


def test_nan_from_the_model_is_an_error_not_a_null_in_the_file(tmp_path, folder):
    state = create_model(ARCH).state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    state[first] = torch.full_like(state[first], float("nan"))
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(FaceauditError, match="NaN or infinite"):
        embed_dataset(folder, tmp_path / "o.jsonl", weights=broken, **FAST)
    assert not (tmp_path / "o.jsonl").exists()  # no output at all, let alone one with nulls


def test_npz_output_and_limit(tmp_path, folder, weights):
    out = tmp_path / "emb.npz"
    summary = embed_dataset(folder, out, weights=weights, limit=4, **FAST)
    assert summary["total"] == 4
    eset = load_embeddings(out)
    assert len(eset) == 4 and eset.dim == 512 and eset.metadata["complete"] is True
    assert not (tmp_path / "emb.npz.partial.jsonl").exists()
    jsonl = tmp_path / "full.jsonl"
    embed_dataset(folder, jsonl, weights=weights, limit=4, decimals=None, **FAST)
    np.testing.assert_allclose(eset.vectors, load_embeddings(jsonl).vectors, atol=1e-6)
    again = embed_dataset(folder, out, weights=weights, limit=4, **FAST)  # same command: nothing to do
    assert again["already_complete"]


# ---------------------------------------------------------------- bad files

@pytest.mark.parametrize("device", DEVICES)
def test_bad_files_are_listed_and_the_run_carries_on(tmp_path, images, weights, reference, device):
    good_jpeg = images["id_a/01.jpg"]
    bad = {
        "id_a/zero.jpg": b"",
        "id_a/text.jpg": b"not a picture, just text\n",
        "id_b/corrupt.jpg": good_jpeg[: len(good_jpeg) // 3],
        "id_b/garbage.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        "loose.jpg": good_jpeg,                      # not inside an identity folder
        "id_c/notes.txt": b"ignored: not an image extension",
    }
    folder = write_folder(tmp_path / "ds", {**images, **bad})
    out = tmp_path / "out.jsonl"
    run = dict(FAST, device=device)
    summary = embed_dataset(folder, out, weights=weights, **run)
    assert summary["embedded"] == 12 and summary["errors"] == 5
    errors = error_rows(tmp_path / "out.jsonl.errors.tsv")
    assert set(errors) == {"id_a/zero.jpg", "id_a/text.jpg", "id_b/corrupt.jpg", "id_b/garbage.png", "loose.jpg"}
    assert "empty" in errors["id_a/zero.jpg"] and "not an image" in errors["id_a/text.jpg"]
    assert "corrupt" in errors["id_b/corrupt.jpg"]
    assert_same_embeddings(out.read_bytes(), reference)  # batches (or devices) differ: allow the last digit
    listed = (tmp_path / "out.jsonl.errors.tsv").read_bytes()
    again = embed_dataset(folder, out, weights=weights, **run)  # the same command again: nothing to redo
    assert again["embedded"] == 0 and again["errors"] == 0 and again["errors_total"] == 5
    assert (tmp_path / "out.jsonl.errors.tsv").read_bytes() == listed
    # with worker processes the failures come back through the collate function the same way
    out2 = tmp_path / "out2.jsonl"
    embed_dataset(folder, out2, weights=weights, **dict(run, workers=2))
    assert out2.read_bytes() == out.read_bytes()
    assert error_rows(tmp_path / "out2.jsonl.errors.tsv") == errors


def test_duplicate_identity_and_name_is_listed_once(tmp_path, images, weights):
    files = {"set1/p/1.jpg": images["id_a/01.jpg"], "set2/p/1.jpg": images["id_b/01.jpg"]}
    out = tmp_path / "out.jsonl"
    summary = embed_dataset(write_folder(tmp_path / "ds", files), out, weights=weights, **FAST)
    assert summary["embedded"] == 1
    assert error_rows(tmp_path / "out.jsonl.errors.tsv") == {
        "set2/p/1.jpg": "duplicate identity/image_name of set1/p/1.jpg"}


def test_unreadable_and_refused_archive_members_are_listed(tmp_path, images, weights):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(images):
            archive.writestr(name, images[name])
        archive.writestr("../evil.jpg", images["id_a/01.jpg"])
        archive.writestr("/abs/olute.jpg", images["id_a/01.jpg"])
        archive.writestr("id_z/damaged.png", b"x" * 5000)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("id_z/damaged.png")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start:start + 8] = b"\xff" * 8  # break the deflate stream of that member
    path.write_bytes(bytes(raw))
    out = tmp_path / "out.jsonl"
    summary = embed_dataset(path, out, weights=weights, **FAST)
    errors = error_rows(tmp_path / "out.jsonl.errors.tsv")
    assert summary["embedded"] == 12
    assert "refused" in errors["../evil.jpg"] and "refused" in errors["/abs/olute.jpg"]
    assert "unreadable" in errors["id_z/damaged.png"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_in_a_folder(tmp_path, folder, weights):
    (folder / "id_a" / "01.jpg").chmod(0)
    summary = embed_dataset(folder, tmp_path / "out.jsonl", weights=weights, **FAST)
    assert summary["embedded"] == 11
    assert "unreadable" in error_rows(tmp_path / "out.jsonl.errors.tsv")["id_a/01.jpg"]


class HalfFaces:
    """A stand-in aligner: "finds no face" in dark images, else crops the centre 112x112."""

    def __call__(self, rgb):
        if rgb.mean() < 127:
            return None
        return np.ascontiguousarray(np.asarray(Image.fromarray(rgb).resize((112, 112))))


def test_align_none_found_is_listed(tmp_path, monkeypatch, weights):
    import faceaudit.faces

    monkeypatch.setattr(faceaudit.faces, "create_aligner", lambda name, models_dir: HalfFaces())
    files = {"p/dark.png": _encode(np.full((150, 150, 3), 20, np.uint8), "PNG"),
             "p/light.png": _encode(np.full((150, 150, 3), 200, np.uint8), "PNG")}
    out = tmp_path / "out.jsonl"
    summary = embed_dataset(write_folder(tmp_path / "ds", files), out, weights=weights, align="yunet",
                            **dict(FAST, workers=1))
    assert summary["embedded"] == 1
    assert error_rows(tmp_path / "out.jsonl.errors.tsv") == {"p/dark.png": "no face found"}
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["align"] == "yunet"


def test_align_without_its_model_file_is_a_one_line_error(tmp_path, folder, weights):
    with pytest.raises(FaceauditError, match="yunet"):
        embed_dataset(folder, tmp_path / "o.jsonl", weights=weights, align="yunet", models_dir=tmp_path, **FAST)
    assert not (tmp_path / "o.jsonl").exists()


# ---------------------------------------------------------------- resume

def test_resume_after_a_half_written_last_line(tmp_path, folder, weights, reference_run):
    out = tmp_path / "out.jsonl"
    data, meta = reference_run
    full = [json.loads(line) for line in data.splitlines()]
    (tmp_path / "out.jsonl.meta.json").write_text(meta)
    cut = len(b"".join(data.splitlines(keepends=True)[:5])) + 700  # 5 lines and part of the 6th
    out.write_bytes(data[:cut])
    summary = embed_dataset(folder, out, weights=weights, **FAST)
    assert summary["resumed"] and summary["already_done"] == 5 and summary["embedded"] == 7
    resumed = lines_of(out)
    assert [(r["identity"], r["image_name"]) for r in resumed] == [(r["identity"], r["image_name"]) for r in full]
    np.testing.assert_allclose([r["embedding"] for r in resumed], [r["embedding"] for r in full], atol=1.01e-5)


def test_truncate_helpers(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"identity":"a","image_name":"1.jpg","embedding":[1.0]}\n{"identity":"a","ima')
    assert truncate_to_last_newline(path) == len(b'{"identity":"a","ima')
    assert read_done_keys(path) == {("a", "1.jpg")}
    path.write_bytes(b"no newline at all")
    truncate_to_last_newline(path)
    assert path.read_bytes() == b""


# Once 4 lines are on disk the writer waits until a Ctrl-C has discarded the batches queued
# behind it (SIGKILL simply ends the run while it waits): exactly 4 lines are kept, however
# slow or loaded the machine is.
SLOW_RUN = """
import signal, sys, threading
signal.signal(signal.SIGINT, signal.default_int_handler)  # a suite started with '&' passes SIGINT on as ignored
import faceaudit.embed.writer as embed
from faceaudit import cli
discarded = threading.Event()
discard = embed.Writer._discard_queued
def discard_then_release(self):
    discard(self)
    discarded.set()
embed.Writer._discard_queued = discard_then_release
embed._after_batch = lambda written: written >= 4 and discarded.wait(300)
sys.exit(cli.main(["embed", sys.argv[1], "-o", sys.argv[2], "--arch", "mobilefacenet", "--weights", sys.argv[3],
                   "--batch-size", "2", "--workers", sys.argv[4], "--no-progress"]))
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_resume_after_kill_or_ctrl_c(tmp_path, folder, weights, how):
    out = tmp_path / "out.jsonl"
    workers = 2 if how == "SIGKILL" else 0
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(folder), str(out), str(weights), str(workers)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 4:
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended early: {proc.stderr.read().decode()}")
            time.sleep(0.05)
        else:
            pytest.fail("no output appeared")
        proc.send_signal(getattr(signal, how))
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read().decode()
    if how == "SIGINT":  # Ctrl-C: finished batches kept, the sidecar says how many, exit 130
        assert code == 130, stderr
        assert "run the same command again to resume" in stderr
        meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
        assert meta["complete"] is False and meta["count"] == out.read_bytes().count(b"\n")
    before = out.read_bytes().count(b"\n")
    assert before == 4
    with open(out, "ab") as handle:  # as if killed in the middle of writing a line
        handle.write(b'{"identity":"id_c","image_name":"04.bm')
    summary = embed_dataset(folder, out, weights=weights, **FAST)
    assert summary["already_done"] == before and summary["embedded"] == 12 - before
    keys = [(r["identity"], r["image_name"]) for r in lines_of(out)]
    assert len(keys) == 12 and len(set(keys)) == 12  # none twice, none lost
    assert sorted(keys) == sorted((n.split("/")[0], n.split("/")[1]) for n in make_images())
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["count"] == 12


def test_ctrl_c_while_the_last_batches_are_written_keeps_them_and_says_so(tmp_path, folder, weights, monkeypatch):
    from faceaudit.embed.writer import Writer
    from faceaudit.errors import Interrupted

    close = Writer.close

    def close_then_ctrl_c(self, discard=False):  # every batch handed over; Ctrl-C while they are written
        close(self, discard)
        raise KeyboardInterrupt

    monkeypatch.setattr(Writer, "close", close_then_ctrl_c)
    out = tmp_path / "out.jsonl"
    with pytest.raises(Interrupted, match="12 embeddings are kept") as caught:
        try:
            embed_dataset(folder, out, weights=weights, **FAST)
        except Interrupted:
            raise
        except KeyboardInterrupt:
            pytest.fail("a bare KeyboardInterrupt escaped: the kept embeddings were not reported")
    assert "run the same command again to resume" in str(caught.value)
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["count"] == 12


def test_two_runs_on_one_output_are_refused(tmp_path, folder, weights):
    from faceaudit.embed.resume import lock_output as _lock

    out = tmp_path / "out.jsonl"
    held = _lock(out)
    try:
        with pytest.raises(FaceauditError, match="another run"):
            embed_dataset(folder, out, weights=weights, **FAST)
    finally:
        held.close()
    assert embed_dataset(folder, out, weights=weights, limit=1, **FAST)["embedded"] == 1
    assert not (tmp_path / "out.jsonl.lock").exists()


@pytest.mark.parametrize("name", ["out.jsonl", "out.npz"])
def test_overwrite_waits_for_the_lock_before_removing_anything(tmp_path, folder, weights, name):
    from faceaudit.embed.resume import lock_output as _lock

    out = tmp_path / "out" / name
    embed_dataset(folder, out, weights=weights, limit=2, **FAST)
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    held = _lock(out)
    try:
        with pytest.raises(FaceauditError, match="another run"):
            embed_dataset(folder, out, weights=weights, overwrite=True, **FAST)
        assert {p.name: p.read_bytes() for p in out.parent.iterdir() if p.suffix != ".lock"} == before
    finally:
        held.close()
    assert embed_dataset(folder, out, weights=weights, overwrite=True, **FAST)["embedded"] == 12


def test_resume_with_other_settings_is_refused(tmp_path, folder, weights):
    out = tmp_path / "out.jsonl"
    embed_dataset(folder, out, weights=weights, limit=4, **FAST)
    with pytest.raises(FaceauditError, match="flip_tta.*--overwrite"):
        embed_dataset(folder, out, weights=weights, flip_tta=True, **FAST)
    other = weights.parent / "other.pth"
    torch.manual_seed(1)
    torch.save(create_model(ARCH).state_dict(), other)
    with pytest.raises(FaceauditError, match="weights_sha256"):
        embed_dataset(folder, out, weights=other, **FAST)
    summary = embed_dataset(folder, out, weights=other, overwrite=True, **FAST)
    assert summary["embedded"] == 12 and not summary["resumed"]


def test_output_without_metadata_is_not_resumed(tmp_path, folder, weights):
    out = tmp_path / "embeddings.json"
    out.write_text('{"identity": "x", "image_name": "y.jpg", "embedding": [1.0]}\n')
    with pytest.raises(FaceauditError, match="--overwrite"):
        embed_dataset(folder, out, weights=weights, **FAST)


def test_metadata_that_is_not_an_object_is_not_resumed(tmp_path, folder, weights):
    out = tmp_path / "embeddings.jsonl"
    out.write_text('{"identity": "x", "image_name": "y.jpg", "embedding": [1.0]}\n')
    (tmp_path / "embeddings.jsonl.meta.json").write_text("[1, 2]")
    with pytest.raises(FaceauditError, match=r"embeddings\.jsonl\.meta\.json: expected a JSON object, got list"):
        embed_dataset(folder, out, weights=weights, **FAST)


# ---------------------------------------------------------------- command line and paper script

def test_cli_embed(tmp_path, folder, weights, capsys, reference):
    out = tmp_path / "cli.jsonl"
    code = cli.main(["embed", str(folder), "-o", str(out), "--arch", ARCH, "--weights", str(weights),
                     "--workers", "0", "--batch-size", "5", "--threads", "1", "--no-progress"])
    assert code == 0
    assert "12" in capsys.readouterr().out
    assert out.read_bytes() == reference


@pytest.mark.parametrize("argv, message", [
    (["embed", "{tmp}/missing_dataset", "--arch", ARCH, "--weights", "{weights}"], "not found"),
    (["embed", "{folder}", "--arch", ARCH, "--weights", "{tmp}/none.pth"], "Models/"),
    (["embed", "{folder}", "--arch", "iresnet100"], "ArcFace_R100_MS1MV3.pth"),
])
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, folder, weights, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(tmp=tmp_path, weights=weights, folder=folder) for a in argv] + ["-o", str(tmp_path / "o.jsonl")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("faceaudit: error:") and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_asked_for_without_a_gpu(tmp_path, folder, weights):
    result = subprocess.run([sys.executable, "-m", "faceaudit", "embed", str(folder), "--arch", ARCH,
                             "--weights", str(weights), "--device", "cuda", "-o", str(tmp_path / "o.jsonl")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120, env=ENV)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in result.stderr


def test_paper_script_without_arguments(tmp_path, images):
    """Run from a folder holding Models/ and Dataset/, it writes ./embeddings.json there."""
    (tmp_path / "Models").mkdir()
    torch.manual_seed(0)
    model = create_model("iresnet100")
    with torch.no_grad():  # untrained, 50 residual blocks overflow to NaN: damp each residual branch
        for block in model.modules():
            if hasattr(block, "bn3"):
                block.bn3.weight.mul_(0.05)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "Models" / "ArcFace_R100_MS1MV3.pth")
    write_folder(tmp_path / "Dataset", {k: v for k, v in images.items() if k.startswith("id_a/0") and "grey" not in k})
    script = ROOT / "Embedding_Computation" / "compute_embeddings_to_json.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr
    records = lines_of(tmp_path / "embeddings.json")
    assert [(r["identity"], r["image_name"]) for r in records] == [("id_a", "01.jpg"), ("id_a", "02.png"), ("id_a", "03.JPG")]
    assert all(len(r["embedding"]) == 512 for r in records)
    meta = json.loads((tmp_path / "embeddings.json.meta.json").read_text())
    assert meta["arch"] == "iresnet100" and meta["weights"].endswith("ArcFace_R100_MS1MV3.pth")


def test_paper_script_flags_and_missing_dataset(tmp_path, folder, weights):
    script = ROOT / "Embedding_Computation" / "compute_embeddings_to_json.py"
    out = tmp_path / "x.json"
    result = subprocess.run([sys.executable, str(script), "--model_path", str(weights), "--dataset_dir", str(folder),
                             "--output_file", str(out), "--arch", ARCH, "--device", "cpu", "--batch-size", "6",
                             "--workers", "0", "--no-progress"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr
    assert len(lines_of(out)) == 12
    result = subprocess.run([sys.executable, str(script), "--dataset_dir", "nowhere", "--model_path", str(weights),
                             "--arch", ARCH], capture_output=True, text=True, cwd=tmp_path, timeout=300, env=ENV)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "nowhere" in result.stderr
