"""Hostile inputs, round two: one test per failure found when the toolkit was tried as a hostile
user would (issue 15). Each test is named after its item; the closing note's table points here."""
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceaudit import cli, load_embeddings
from faceaudit.embed import embed_dataset
from faceaudit.embed.writer import Writer
from faceaudit.errors import FaceauditError
from faceaudit.io import npz, sources
from faceaudit.io.embeddings import EmbeddingSet, save_embeddings
from faceaudit.io.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(arch="torchscript", workers=0, batch_size=4, threads=1, progress=False, log=lambda m: None)


class Tiny(torch.nn.Module):
    """A 16-D 'face model' that runs in microseconds: pooled pixels through a fixed linear map."""

    def __init__(self, zero: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 4 * 4, 16)
        self.zero = zero

    def forward(self, x):
        out = self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))
        return out * 0 if self.zero else out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    paths = {}
    for name, zero in (("tiny.pt", False), ("zero.pt", True)):
        torch.jit.save(torch.jit.script(Tiny(zero)), folder / name)
        paths[name] = folder / name
    return paths


def png(seed: int, size=(40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def faces(n_ids: int = 2, per_id: int = 3, seed: int = 0) -> dict[str, bytes]:
    return {f"id{i}/{j}.png": png(seed + 10 * i + j) for i in range(n_ids) for j in range(per_id)}


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def unit(rng, n, d=8):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def small_set(path: Path, n: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    save_embeddings(EmbeddingSet.from_arrays(unit(rng, n), [f"p{i % 4}" for i in range(n)],
                                             [f"{i}.jpg" for i in range(n)]), path)
    return path


# ---------------------------------------------------------------- data loss

OUTPUT_PLACES = ("Metrics/", "SimilarityScores/", "Figures/", "Figures_with_metrics/", "comparison_figures/",
                 "Closest/", "Extracted_paths/", "leakage_out/", "demo_out/", "embeddings.json")


def test_01_no_tracked_file_lies_where_the_paper_scripts_write():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    exposed = [f for f in tracked if f.startswith(OUTPUT_PLACES) and not f.endswith("README.md")]
    exposed += [f for f in tracked if "/" not in f and ("_BestMatches_" in f or "Global_" in f)]
    assert not exposed, f"tracked files that a run from the repository root would overwrite: {exposed}"
    assert (ROOT / "examples" / "demo_results" / "All_Datasets_metrics.csv").is_file()


def test_02_decimals_that_round_to_zero_fail_at_the_first_batch(tmp_path, tiny, capsys):
    data = write_folder(tmp_path / "d", faces())
    out = tmp_path / "e.jsonl"
    code, err = run_cli(capsys, "embed", data, "-o", out, "--arch", "torchscript", "--weights", tiny["tiny.pt"],
                        "--decimals", "0", "--workers", "0", "--no-progress")
    assert code == 2 and "rounds to all zeros at --decimals 0" in err
    assert not out.exists() and not Path(str(out) + ".meta.json").exists()


def test_02_a_model_giving_zero_vectors_fails_and_leaves_nothing(tmp_path, tiny):
    data = write_folder(tmp_path / "d", faces())
    out = tmp_path / "e.jsonl"
    with pytest.raises(FaceauditError, match="all-zero vector"):
        embed_dataset(data, out, weights=tiny["zero.pt"], **QUIET)
    assert not out.exists()


def test_02_an_archive_without_an_embeddable_image_is_an_error(tmp_path, tiny):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("id0/a.png", b"not an image")
        z.writestr("id0/b.jpg", b"")
    for out in (tmp_path / "e.jsonl", tmp_path / "e.npz"):
        with pytest.raises(FaceauditError, match="no image could be embedded .*2 skipped"):
            embed_dataset(archive, out, weights=tiny["tiny.pt"], **QUIET)
        assert not out.exists() and not Path(str(out) + ".partial.jsonl").exists()
        assert Path(str(out) + ".errors.tsv").is_file()  # why, for the user


def test_03_side_file_names_cannot_be_outputs(tmp_path, tiny, capsys):
    data = write_folder(tmp_path / "d", faces())
    for name in ("x.npz.partial.jsonl", "x.jsonl.meta.json", "x.jsonl.errors.tsv", "x.npz.lock"):
        code, err = run_cli(capsys, "embed", data, "-o", tmp_path / name, "--arch", "torchscript",
                            "--weights", tiny["tiny.pt"], "--no-progress")
        assert code == 2 and "kept for a run's side files" in err, name
        assert len(err.strip().splitlines()) == 1


def test_04_resuming_onto_another_datasets_output_is_refused(tmp_path, tiny):
    first = write_folder(tmp_path / "a", faces(seed=0))
    second = write_folder(tmp_path / "b", faces(seed=5))
    out = tmp_path / "e.jsonl"
    embed_dataset(first, out, weights=tiny["tiny.pt"], limit=2, **QUIET)
    before = out.read_bytes()
    with pytest.raises(FaceauditError, match=r"made from another dataset \(.*a, not .*b\); use --overwrite"):
        embed_dataset(second, out, weights=tiny["tiny.pt"], **QUIET)
    assert out.read_bytes() == before
    moved = shutil.copytree(first, tmp_path / "a_moved")  # the same dataset elsewhere resumes
    notes = []
    summary = embed_dataset(moved, out, weights=tiny["tiny.pt"], **{**QUIET, "log": notes.append})
    assert summary["already_done"] == 2 and summary["total"] == 6 and any("moved from" in n for n in notes)
    embed_dataset(second, out, weights=tiny["tiny.pt"], overwrite=True, **QUIET)
    assert json.loads(Path(str(out) + ".meta.json").read_text())["source"] == str(second.resolve())


# ---------------------------------------------------------------- resource exhaustion

def test_05_oversized_and_bomb_members_are_refused_listed_and_skipped(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(sources, "MAX_MEMBER_BYTES", 4 << 20)
    good = faces(1, 2)
    big = np.random.default_rng(1).integers(0, 256, 5 << 20, dtype=np.uint8).tobytes()  # 5 MiB, incompressible
    bomb = bytes(3 << 20)  # 3 MiB of zeros: deflates ~1000:1
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in {**good, "id0/big.png": big, "id0/bomb.png": bomb}.items():
            z.writestr(name, data)
    source = sources.open_source(archive)
    assert "over the 4 MiB limit" in source.refused["id0/big.png"]
    assert "decompression bomb" in source.refused["id0/bomb.png"]
    out = tmp_path / "e.jsonl"
    summary = embed_dataset(archive, out, weights=tiny["tiny.pt"], **QUIET)
    assert summary["total"] == 2 and summary["errors_total"] == 2
    listed = Path(str(out) + ".errors.tsv").read_text()
    assert "id0/big.png\trefused archive member" in listed and "id0/bomb.png\trefused" in listed
    # a tar.gz member may expand at most MAX_EXPANSION times the whole archive
    tgz = tmp_path / "a.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        info = tarfile.TarInfo("id0/bomb.png")
        info.size = len(bomb)
        t.addfile(info, io.BytesIO(bomb))
    assert "decompression bomb" in sources.open_source(tgz).refused["id0/bomb.png"]


def test_06_one_long_identity_does_not_blow_up_memory(tmp_path):
    rng = np.random.default_rng(0)
    n = 2000
    ids = [f"id{i % 50}" for i in range(n)]
    ids[7] = "x" * 10_000
    path = tmp_path / "e.jsonl"
    save_embeddings(EmbeddingSet.from_arrays(unit(rng, n), ids, [f"{i}.jpg" for i in range(n)]), path)
    eset = load_embeddings(path)
    assert eset.identities[7] == "x" * 10_000 and eset.identities[8] == "id8"
    assert eset.identities.nbytes < 200_000  # fixed width would take n x 10,000 x 4 = 80 MB
    again = tmp_path / "e.npz"
    save_embeddings(eset, again)
    assert again.stat().st_size < 1_000_000
    back = load_embeddings(again)
    assert back.identities.tolist() == ids and back.identities.nbytes < 200_000


def test_06_an_npz_array_that_expands_far_beyond_the_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(npz, "_EXPANSION_SLACK", 0)
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, vectors=np.ones((200, 4), np.float32),
                        identities=np.array(["a" * 2000] * 200), image_names=np.array(["n"] * 200))
    with pytest.raises(FaceauditError, match="'identities' expands to .* refused"):
        load_embeddings(path)


# ---------------------------------------------------------------- crashes

def test_07_names_that_are_not_utf8_are_listed_and_the_run_goes_on(tmp_path, tiny):
    data = write_folder(tmp_path / "d", faces())
    bad = os.path.join(os.fsencode(data), b"id0", b"caf\xe9.png")
    with open(bad, "wb") as handle:
        handle.write(png(99))
    out = tmp_path / "e.jsonl"
    summary = embed_dataset(data, out, weights=tiny["tiny.pt"], **QUIET)
    assert summary["total"] == 6 and summary["errors_total"] == 1
    errors = Path(str(out) + ".errors.tsv").read_bytes()
    assert b"id0/caf\xe9.png\tfile or folder name is not valid UTF-8" in errors  # the name kept losslessly
    again = embed_dataset(data, out, weights=tiny["tiny.pt"], **QUIET)  # a rerun neither crashes nor redoes it
    assert again["embedded"] == 0 and again["errors"] == 0
    assert len(load_embeddings(out)) == 6


@pytest.mark.parametrize("flag,value", [("--threshold", "nan"), ("--threshold", "inf"), ("--threshold", "1.5"),
                                        ("--flag-threshold", "nan")])
def test_08_non_finite_thresholds_are_refused_before_any_work(tmp_path, capsys, flag, value):
    query, ref = small_set(tmp_path / "q.jsonl"), small_set(tmp_path / "r.jsonl", seed=1)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["leakage", str(query), "--reference", str(ref), flag, value, "--out", str(out)])
    assert exit_.value.code == 2 and "[-1, 1]" in capsys.readouterr().err
    assert not out.exists()
    from faceaudit.stages.leakage import run_leakage
    with pytest.raises(FaceauditError, match=r"\[-1, 1\]|finite"):
        run_leakage(query, ref, out_dir=out, **({"thresholds": [float(value)]} if flag == "--threshold"
                                                else {"flag_threshold": float(value)}))
    assert not out.exists()


def test_09_seeds_are_the_same_everywhere(tmp_path, capsys):
    path = small_set(tmp_path / "e.jsonl")
    for argv in (["variability", path, "--seed", "-1"], ["leakage", path, "--reference", path, "--seed", "-1"],
                 ["closest", path, "--reference", path, "--seed", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main([str(a) for a in argv])
        assert exit_.value.code == 2 and "seed must be an integer from 0 to 2**63-1" in capsys.readouterr().err
    script = ROOT / "Mated_vs_non-mated" / "compute_similarities.py"
    done = subprocess.run([sys.executable, str(script), str(path), "--seed", "-1"], capture_output=True, text=True,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 2 and "seed must be an integer" in done.stderr
    from faceaudit.evaluate.metrics import bootstrap_ci
    from faceaudit.evaluate.pairs import sample_pairs
    from faceaudit.stages.leakage import sample_indices
    for call in (lambda: sample_pairs(["a", "a", "b"], 1, seed=-1), lambda: sample_indices(10, 3, seed=-1),
                 lambda: bootstrap_ci([0.9, 0.8], [0.1, 0.2], 10, seed=-1)):
        with pytest.raises(FaceauditError, match="seed must be an integer"):
            call()


def test_10_an_npz_of_string_vectors_is_refused(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, vectors=np.array([["a", "b"], ["c", "d"]]), identities=np.array(["x", "y"]),
             image_names=np.array(["1", "2"]))
    with pytest.raises(FaceauditError, match=r"s\.npz: 'vectors' holds <U1 values, expected numbers"):
        load_embeddings(path)


def test_11_csv_that_is_not_utf8_or_has_a_bom(tmp_path, capsys):
    bad = tmp_path / "pairs.csv"
    bad.write_bytes(b"query_path,casia_path,similarity_score\n\xe9t\xe9/1.png,a/1.png,0.5\n")
    code, err = run_cli(capsys, "pairs-figure", bad, "--reference-images", tmp_path, "--query-images", tmp_path,
                        "--out", tmp_path / "fig")
    assert code == 2 and "pairs.csv:2: not a CSV file (byte 0xe9 is not UTF-8)" in err
    from faceaudit.report.grid import read_pairs_csv
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfquery_path,casia_path,similarity_score\nq/1.png,r/1.png,0.5\n")
    assert read_pairs_csv(bom)[0].query_path == "q/1.png"


# ---------------------------------------------------------------- wrong results without a word

@pytest.mark.parametrize("scale", [3e37, 1e-30, 1e-40])
def test_12_huge_and_tiny_values_normalise_correctly(tmp_path, scale):
    rng = np.random.default_rng(2)
    direction = unit(rng, 3, 8)
    lines = [json.dumps({"identity": "a", "image_name": f"{i}", "embedding": (v * scale).tolist()})
             for i, v in enumerate(direction)]
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(lines) + "\n")
    eset = load_embeddings(path)
    expected = (direction * scale).astype(np.float32).astype(np.float64)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(eset.vectors, expected, atol=1e-6)
    npz_path = tmp_path / "e.npz"
    np.savez(npz_path, vectors=(direction * scale).astype(np.float32), identities=np.array(["a"] * 3),
             image_names=np.array(["0", "1", "2"]))
    np.testing.assert_allclose(load_embeddings(npz_path).vectors, expected, atol=1e-6)


def test_12_a_row_that_underflows_to_zero_is_named(tmp_path):
    path = tmp_path / "e.jsonl"
    rows = [[0.5, 0.5], [1e-46, 0.0], [0.1, 0.2]]  # 1e-46 is 0 in float32
    path.write_text("\n".join(json.dumps({"identity": "a", "image_name": str(i), "embedding": r})
                              for i, r in enumerate(rows)) + "\n")
    with pytest.raises(FaceauditError, match=r"e\.jsonl: line 2 is an all-zero vector"):
        load_embeddings(path)


@pytest.mark.parametrize("record,message", [
    ({"identity": "a", "image_name": "1", "embedding": [0.5, True]}, "'embedding' holds true, not a number"),
    ({"identity": None, "image_name": "1", "embedding": [0.5, 0.1]}, "'identity' must be a string, got null"),
    ({"identity": "a", "image_name": False, "embedding": [0.5, 0.1]}, "'image_name' must be a string, got false"),
])
def test_13_non_numbers_and_null_labels_are_refused_with_the_line(tmp_path, record, message):
    good = [{"identity": "a", "image_name": str(i), "embedding": [0.1 * (i + 1), 0.3]} for i in range(70)]
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in good[:66] + [record] + good[66:]) + "\n")
    with pytest.raises(FaceauditError, match=rf"e\.jsonl:67: {message}"):
        load_embeddings(path)


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_14_a_name_stored_twice_is_read_from_its_first_copy(tmp_path, tiny, kind):
    first, later = png(1), png(2)
    archive = tmp_path / f"a.{kind}"
    members = [("idA/1.png", first), ("idA/2.png", png(3)), ("idA/1.png", later)]
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
            for name, data in members:
                z.writestr(name, data)
    else:
        with tarfile.open(archive, "w") as t:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    assert sources.open_source(archive).read("idA/1.png") == first
    out = tmp_path / "e.jsonl"
    embed_dataset(archive, out, weights=tiny["tiny.pt"], **QUIET)
    alone = write_folder(tmp_path / "alone", {"idA/1.png": first})
    embed_dataset(alone, tmp_path / "alone.jsonl", weights=tiny["tiny.pt"], **QUIET)
    got = load_embeddings(out)
    row = list(got.image_names).index("1.png")
    np.testing.assert_array_equal(got.vectors[row], load_embeddings(tmp_path / "alone.jsonl").vectors[0])
    assert "idA/1.png (copy 2)\tthe archive stores this name more than once; its first copy is used" in \
        Path(str(out) + ".errors.tsv").read_text()


@pytest.mark.parametrize("chunk", [10 ** 9, 3])
def test_15_ctrl_c_says_only_what_is_true(tmp_path, monkeypatch, capsys, chunk):
    from faceaudit.cli.common import run_guarded
    from faceaudit.search import chunked

    monkeypatch.setattr(chunked, "CHECKPOINT_QUERIES", chunk)
    calls = []

    def interrupted_after_two_chunks(queries, *args, **kwargs):
        calls.append(1)
        if len(calls) > (2 if chunk == 3 else 0):
            raise KeyboardInterrupt
        return chunked.BestMatches(np.zeros(len(queries), np.float32), np.zeros(len(queries), np.int64))

    monkeypatch.setattr(chunked, "best_match", interrupted_after_two_chunks)
    checkpoint = tmp_path / "c.partial.npz"
    q = np.eye(10, 4, dtype=np.float32) + 0.1
    code = run_guarded(lambda: chunked.best_match_resumable(q, q, checkpoint=checkpoint, progress=False), "x")
    err = capsys.readouterr().err
    assert code == 130
    if chunk == 3:  # 10 queries in chunks of 3: two chunks were saved before the Ctrl-C
        assert checkpoint.is_file() and f"the finished queries are kept in {checkpoint}" in err
    else:  # one chunk, no checkpoint: nothing is kept, and nothing is claimed
        assert not checkpoint.exists() and err.strip() == "x: interrupted"


# ---------------------------------------------------------------- unclear messages

def test_16_find_closest_sh_reports_a_bad_file_and_goes_on(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    folder = tmp_path / "emb"
    folder.mkdir()
    small_set(folder / "CASIA.json", seed=1)
    small_set(folder / "Good.json")
    (folder / "Empty.json").write_text("")
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(["bash", str(ROOT / "CASIA_compare" / "find_closest.sh"), str(folder)], cwd=work,
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT)))
    assert done.returncode != 0
    assert "Empty.json: empty file, skipped" in done.stderr and "1 file(s) failed" in done.stderr
    assert list(work.glob("Good_Top100Global_*.json"))  # the good file was still processed


def test_17_the_paper_script_looks_for_the_archs_weights_and_names_its_own_flag(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "Embedding_Computation"))
    try:
        import compute_embeddings_to_json as script
    finally:
        sys.path.pop(0)
    data = write_folder(tmp_path / "d", faces())
    monkeypatch.chdir(tmp_path)
    code = script.main(["--arch", "sface", "--dataset_dir", str(data), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Models/face_recognition_sface_2021dec.onnx" in err
    assert "--model_path PATH" in err and "--weights" not in err and "ArcFace_R100" not in err


def test_18_a_wrong_length_on_line_one_is_blamed_on_line_one(tmp_path):
    rows = [[0.1] * 5] + [[0.2] * 4] * 3
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(json.dumps({"identity": "a", "image_name": str(i), "embedding": r})
                              for i, r in enumerate(rows)) + "\n")
    with pytest.raises(FaceauditError, match=r"e\.jsonl:1: embedding has length 5, expected 4"):
        load_embeddings(path)


def test_19_messages_name_the_real_cause_and_the_file(tmp_path, tiny, monkeypatch, capsys):
    text_npz = tmp_path / "t.npz"
    text_npz.write_text("hello")
    with pytest.raises(FaceauditError, match=r"t\.npz: not an \.npz file"):
        load_embeddings(text_npz)
    text_pth = tmp_path / "t.pth"
    text_pth.write_text("hello")
    data = write_folder(tmp_path / "d", faces())
    code, err = run_cli(capsys, "embed", data, "-o", tmp_path / "e.jsonl", "--arch", "mobilefacenet",
                        "--weights", text_pth, "--no-progress")
    assert code == 2 and "t.pth' as PyTorch weights: it is neither the zip archive nor the pickle" in err
    code, err = run_cli(capsys, "embed", data, "-o", tmp_path, "--arch", "torchscript", "--weights",
                        tiny["tiny.pt"], "--no-progress")
    assert code == 2 and f"{tmp_path}: is a folder; give the output a file name" in err
    # a full disk names the file, both for whole-file writes and for the streamed output
    monkeypatch.setattr("faceaudit.io.files.os.replace",
                        lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(FaceauditError, match=r"x\.json: cannot write \(No space left on device\)"):
        with atomic_write(tmp_path / "x.json") as out:
            out.write("{}")
    if os.path.exists("/dev/full"):
        writer = Writer(Path("/dev/full"), tmp_path / "errors.tsv", 5)
        writer.submit(["a"], ["1.png"], np.ones((1, 2), np.float32), [])
        with pytest.raises(FaceauditError, match="/dev/full: cannot write"):
            writer.close()
    bom_array = tmp_path / "arr.json"
    bom_array.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"identity": "a", "image_name": "1", "embedding": [1, 0]},
                                                         {"identity": "b", "image_name": "2", "embedding": [0, 1]}]
                                                        ).encode())
    assert load_embeddings(bom_array).identities.tolist() == ["a", "b"]


def test_20_identical_vectors_score_exactly_one(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((5, 7)).astype(np.float32)
    path = tmp_path / "q.jsonl"
    save_embeddings(EmbeddingSet.from_arrays(vectors, list("aabbc"), [f"{i}" for i in range(5)]), path)
    from faceaudit.stages.closest import run_closest
    from faceaudit.stages.leakage import best_matches
    written = run_closest(path, path, out_dir=tmp_path, top=5, progress=False)
    scores = [r["similarity_score"] for r in json.loads(written[0].read_text())["results"]]
    assert max(scores) == 1.0 and all(-1 <= s <= 1 for s in scores)
    eset = load_embeddings(path)
    assert best_matches(eset, eset, progress=False).scores.max() == np.float32(1.0)
