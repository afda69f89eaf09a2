"""The variability stage: library run, the paper's scripts as written (subprocess), the CLI and bad input."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceaudit import cli
from faceaudit.errors import FaceauditWarning
from faceaudit.io.embeddings import EmbeddingSet, save_embeddings
from faceaudit.errors import FaceauditError
from faceaudit.io.files import read_scores, write_scores
from faceaudit.evaluate.metrics import verification_metrics
from faceaudit.stages.variability import (CSV_COLUMNS, analyze_score_dir, dataset_stem, pair_scores, run)

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "Mated_vs_non-mated"
PAPER_COLUMNS = ["Dataset", "Genuine Mean", "Genuine Std", "Impostor Mean", "Impostor Std", "EER",
                 "EER Threshold", "FMR100", "FMR100 Threshold", "FMR1000", "FMR1000 Threshold",
                 "Total Comparisons"]


def _example(n_ids=30, per=8, dim=32, seed=0) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_ids, dim))
    vectors = np.repeat(centers, per, axis=0) + 0.9 * rng.standard_normal((n_ids * per, dim))
    ids = [f"id{k:03d}" for k in range(n_ids) for _ in range(per)]
    names = [f"{j}.jpg" for _ in range(n_ids) for j in range(per)]
    return EmbeddingSet.from_arrays(vectors, ids, names)


@pytest.fixture
def example_file(tmp_path):
    return save_embeddings(_example(), tmp_path / "Synth.v1.json", decimals=5)


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_stem_is_name_up_to_first_dot():
    assert dataset_stem("a/b/Vec2Face.json") == "Vec2Face"
    assert dataset_stem("Synth.v1.json") == "Synth"


def test_pair_scores_are_cosines():
    eset = _example(5, 3, 16)
    pairs = np.array([[0, 1], [2, 7], [14, 3]])
    got = pair_scores(eset.vectors, pairs, block=2)
    v = eset.vectors.astype(np.float64)
    want = [v[a] @ v[b] / np.linalg.norm(v[a]) / np.linalg.norm(v[b]) for a, b in pairs]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert got.dtype == np.float64


def test_run_writes_everything(tmp_path, example_file):
    out = tmp_path / "out"
    result = run(example_file, 500, out, seed=3, bootstrap=50)
    stem = "Synth"
    mated = read_scores(out / "SimilarityScores" / f"{stem}_mated_similarities.txt")
    non_mated = read_scores(out / "SimilarityScores" / f"{stem}_non_mated_similarities.txt")
    assert len(mated) == 500 and len(non_mated) == 500
    assert (out / "Figures" / f"{stem}_MatedVsNonmated_500.png").stat().st_size > 0
    for ext in ("pdf", "png"):
        assert (out / "Figures_with_metrics" / f"big_{stem}_MatedVsNonmated.{ext}").stat().st_size > 0
    # metrics computed on the written (full-precision) scores are the ones reported
    assert result["metrics"] == verification_metrics(mated, non_mated)
    rows = _csv(out / "Metrics" / "All_Datasets_metrics.csv")
    assert rows[0][:12] == PAPER_COLUMNS
    assert rows[0][12:15] == ["AUC", "d'", "FDR"] and rows[0] == CSV_COLUMNS
    row = dict(zip(rows[0], rows[1]))
    assert row["Dataset"] == stem and int(row["Total Comparisons"]) == 1000
    assert float(row["EER"]) == result["metrics"]["eer"]  # full precision
    assert float(row["EER CI Lower"]) <= float(row["EER"]) <= float(row["EER CI Upper"])
    saved = json.loads((out / "Metrics" / f"{stem}_metrics.json").read_text())
    assert saved["metrics"]["eer"] == result["metrics"]["eer"] and saved["seed"] == 3
    assert saved["ci"]["n_boot"] == 50


def test_run_is_reproducible_and_merges_the_csv(tmp_path, example_file):
    a = run(example_file, 300, tmp_path / "a", bootstrap=0, figures=False)
    b = run(example_file, 300, tmp_path / "b", bootstrap=0, figures=False)
    ta = (tmp_path / "a" / "SimilarityScores" / "Synth_mated_similarities.txt").read_text()
    tb = (tmp_path / "b" / "SimilarityScores" / "Synth_mated_similarities.txt").read_text()
    assert ta == tb and a["metrics"] == b["metrics"] and a["ci"] is None
    run(_example(seed=1), 200, tmp_path / "a", bootstrap=0, stem="Other", figures=False)
    rows = _csv(tmp_path / "a" / "Metrics" / "All_Datasets_metrics.csv")
    assert sorted(r[0] for r in rows[1:]) == ["Other", "Synth"]


@pytest.mark.parametrize("content", [b"Name,EER\nOther,0.1\n", b"\xff\xfe\x00binary\x00\n"])
def test_unreadable_merged_csv_is_an_error_not_overwritten(tmp_path, content):
    from faceaudit.stages.variability import write_metrics_csv

    path = tmp_path / "All_Datasets_metrics.csv"
    path.write_bytes(content)
    with pytest.raises(FaceauditError, match=r"All_Datasets_metrics\.csv(:\d+)?: .*not overwritten"):
        write_metrics_csv(path, [["Synth"] + [0] * 3], merge=True)
    assert path.read_bytes() == content


def test_exhaustive(tmp_path):
    eset = _example(4, 3, 8)
    result = run(eset, None, tmp_path, exhaustive=True, bootstrap=0, stem="tiny")
    assert result["metrics"]["n_genuine"] == 4 * 3 and result["metrics"]["n_impostor"] == 66 - 12
    assert (tmp_path / "Figures" / "tiny_MatedVsNonmated_all.png").is_file()


def test_orphan_score_file_is_warned_and_skipped(tmp_path):
    scores = tmp_path / "SimilarityScores"
    write_scores(scores / "A_mated_similarities.txt", [0.9, 0.8, 0.7])
    write_scores(scores / "A_non_mated_similarities.txt", [0.1, 0.2, 0.75])
    write_scores(scores / "B_mated_similarities.txt", [0.5])
    write_scores(scores / "C_non_mated_similarities.txt", [0.5])
    with pytest.warns(FaceauditWarning) as record:
        results = analyze_score_dir(tmp_path, bootstrap=10, echo=lambda s: None)
    messages = " ".join(str(w.message) for w in record)
    assert "B_mated_similarities.txt" in messages and "C_non_mated_similarities.txt" in messages
    assert list(results) == ["A"]
    assert [r[0] for r in _csv(tmp_path / "Metrics" / "All_Datasets_metrics.csv")[1:]] == ["A"]


def _py(script, *args, cwd):
    return subprocess.run([sys.executable, str(SCRIPTS / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_paper_commands_as_written(tmp_path):
    save_embeddings(_example(), tmp_path / "Synth.json", decimals=5)
    done = _py("analyze_embeddings.py", "Synth.json", "--n_comparisons", 400, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "Figures" / "Synth_MatedVsNonmated_400.png").is_file()
    done = _py("compute_similarities.py", "Synth.json", "--n_comparisons", 400, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(read_scores(tmp_path / "SimilarityScores" / "Synth_mated_similarities.txt")) == 400
    done = _py("analyze_embeddings_with_metrics.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Dataset: Synth" in done.stdout and "EER:" in done.stdout and "FMR1000:" in done.stdout
    assert (tmp_path / "Figures_with_metrics" / "big_Synth_MatedVsNonmated.pdf").is_file()
    assert _csv(tmp_path / "Metrics" / "All_Datasets_metrics.csv")[0][:12] == PAPER_COLUMNS


def test_run_all_over_a_folder(tmp_path):
    folder = tmp_path / "emb"
    save_embeddings(_example(seed=0), folder / "One.json", decimals=5)
    save_embeddings(_example(seed=1), folder / "Two.jsonl", decimals=5)
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(["bash", str(SCRIPTS / "run_all.sh"), str(folder), "200"], cwd=work,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    assert sorted(r[0] for r in _csv(work / "Metrics" / "All_Datasets_metrics.csv")[1:]) == ["One", "Two"]
    assert (work / "Figures" / "Two_MatedVsNonmated_200.png").is_file()


def _cli(capsys, *args):
    code = cli.main(["variability", *map(str, args)])
    return code, capsys.readouterr()


def test_cli_one_command(tmp_path, example_file, capsys):
    code, out = _cli(capsys, example_file, "--n-comparisons", 300, "--bootstrap", 20, "--seed", 5,
                     "--out", tmp_path / "o")
    assert code == 0, out.err
    assert (tmp_path / "o" / "Metrics" / "Synth_metrics.json").is_file()
    assert (tmp_path / "o" / "Figures_with_metrics" / "big_Synth_MatedVsNonmated.png").is_file()
    assert "EER:" in out.out


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"),
    ("empty", "empty"),
    ("single", "single identity"),
    ("no_mated", "no mated pairs"),
])
def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, capsys, case, message):
    path = tmp_path / "in.jsonl"
    if case == "empty":
        path.write_text("")
    elif case == "single":
        save_embeddings(EmbeddingSet.from_arrays(np.eye(3), ["a"] * 3, ["1", "2", "3"]), path)
    elif case == "no_mated":
        save_embeddings(EmbeddingSet.from_arrays(np.eye(3), ["a", "b", "c"], ["1", "2", "3"]), path)
    code, out = _cli(capsys, path, "--n-comparisons", 10, "--out", tmp_path)
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faceaudit: error:") and message in lines[0]


def test_metrics_script_without_scores_fails_cleanly(tmp_path):
    done = _py("analyze_embeddings_with_metrics.py", cwd=tmp_path)
    assert done.returncode == 2
    assert "SimilarityScores" in done.stderr and len(done.stderr.strip().splitlines()) == 1
