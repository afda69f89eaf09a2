"""faceaudit verification / report / verify end to end: outputs that agree with the library, bad input as
one line with exit code 2 and nothing written, many datasets on one page, and two real photos checked
with the real SFace model (skipped when ORL or the models are absent)."""
import csv
import json
import re

import numpy as np
import pytest

from conftest import real_model, shared_path
from faceaudit import cli
from faceaudit.evaluate.verification import evaluate
from faceaudit.io.embeddings import EmbeddingSet, save_embeddings


def make_set(path, people=24, photos=5, noise=0.9, seed=0, lfw_names=False, metadata=None):
    """People as noisy copies of a random centre: overlapping mated / non-mated scores."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, 16))
    ids = np.repeat([f"Person_{i:02d}" for i in range(people)], photos)
    vectors = np.repeat(centres, photos, axis=0) + noise * rng.normal(size=(people * photos, 16))
    names = [f"{p}_{n:04d}.jpg" if lfw_names else f"{n}.png" for p in ids[::photos] for n in range(1, photos + 1)]
    save_embeddings(EmbeddingSet.from_arrays(vectors, ids, names, metadata or {}), path)
    return path


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_sample_protocol_outputs_agree_with_the_library(tmp_path, capsys):
    emb = make_set(tmp_path / "faces.npz", metadata={"arch": "sface"})
    out = tmp_path / "out"
    code = cli.main(["verification", str(emb), "--sample", "200", "--folds", "4", "--bootstrap", "20",
                     "--rule", "at-most", "--out", str(out), "--no-figures"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "4-fold accuracy" in printed and "sface's documented threshold" in printed
    result = json.loads((out / "Verification" / "faces_verification.json").read_text())
    pairs = read_rows(out / "Verification" / "faces_pairs.csv")
    assert len(pairs) == 400 and result["n_mated"] == result["n_non_mated"] == 200
    fold_of = {}
    for row in pairs:  # identity-disjoint: each identity in one fold only
        for key in ("identity1", "identity2"):
            assert fold_of.setdefault(row[key], row["fold"]) == row["fold"]
    again = evaluate([float(r["score"]) for r in pairs], [r["same_person"] == "1" for r in pairs],
                     [int(r["fold"]) - 1 for r in pairs], 4, rule="at-most", threshold=0.3916)
    assert result["accuracy"]["folds"] == again["accuracy"]["folds"]
    assert result["tar_at_far"] == again["tar_at_far"] and result["rule"] == "at-most"
    assert result["fixed_threshold"]["threshold"] == 0.3916 and result["ci"]["n_boot"] == 20
    table = read_rows(out / "Verification" / "faces_verification.csv")
    accuracy = [r for r in table if r["section"] == "accuracy_kfold" and r["fold"] == "mean" and r["quantity"] == "accuracy"]
    assert float(accuracy[0]["value"]) == result["accuracy"]["mean"]["accuracy"]
    assert {r["rule"] for r in table} == {"at-most"}
    unreachable = [r for r in table if r["section"] == "tar_at_far" and r["interval"].startswith("out of reach")]
    assert [float(r["far_target"]) for r in unreachable] == [1e-3, 1e-4, 1e-5, 1e-6]


def write_lfw_pairs(path, people=12, per=6):
    """2 folds; matched pairs of people 0..5 in fold 1 and 6..11 in fold 2, mismatched inside each fold."""
    lines = [f"2\t{per}"]
    for fold in range(2):
        group = list(range(fold * 6, fold * 6 + 6))
        lines += [f"Person_{p:02d}\t1\t{2 + i % 3}" for i, p in enumerate(group[:per])]
        lines += [f"Person_{group[i]:02d}\t{1 + i % 4}\tPerson_{group[(i + 1) % 6]:02d}\t2" for i in range(per)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_lfw_protocol_uses_the_files_folds_and_lines(tmp_path):
    emb = make_set(tmp_path / "lfw.npz", people=12, lfw_names=True)
    pairs = write_lfw_pairs(tmp_path / "pairs.txt")
    out = tmp_path / "out"
    assert cli.main(["verification", str(emb), "--pairs", str(pairs), "--out", str(out), "--no-figures",
                     "--bootstrap", "0"]) == 0
    rows = read_rows(out / "Verification" / "lfw_pairs.csv")
    assert [int(r["line"]) for r in rows] == list(range(2, 26))
    assert [r["fold"] for r in rows] == ["1"] * 12 + ["2"] * 12
    result = json.loads((out / "Verification" / "lfw_verification.json").read_text())
    assert result["protocol"]["kind"] == "lfw" and result["n_folds"] == 2 and result["ci"] is None
    assert "fixed_threshold" not in result and "no model" in result["fixed_threshold_source"]


BAD_INPUTS = {
    "missing images": ("Person_00\t1\t9", "1 pair(s) name images not in", ":"),
    "one class": (None, "holds only mated", ""),
    "malformed line": ("Person_00\t1", "expected 'name n1 n2'", ":2:"),
    "folds disagree": ("--folds 3", "the file defines 2 folds", ""),
    "too few identities": ("--sample 50 --folds 13", "24 identities cannot form 13 identity-disjoint folds", ""),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, case):
    change, message, where = BAD_INPUTS[case]
    emb = make_set(tmp_path / "lfw.npz", lfw_names=True)
    pairs = write_lfw_pairs(tmp_path / "pairs.txt")
    args = ["verification", str(emb), "--out", str(tmp_path / "out"), "--no-figures", "--pairs", str(pairs)]
    if case == "one class":
        pairs.write_text("path1,path2,label\nPerson_00/Person_00_0001.jpg,Person_00/Person_00_0002.jpg,1\n")
    elif change.startswith("--"):
        args += change.split()
        if "--sample" in change:
            args.remove("--pairs")
            args.remove(str(pairs))
    else:
        pairs.write_text(pairs.read_text().replace("Person_00\t1\t2", change, 1))
    code = cli.main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err
    if case != "too few identities":
        assert f"{pairs}{where}" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, message", [
    ({"seed": -1}, "seed must be an integer"), ({"threshold": 1.5}, "threshold must be a finite number in [-1, 1]"),
    ({"rule": "closest"}, "unknown --rule"), ({"n_folds": 1}, "--folds must be at least 2")])
def test_bad_arguments_are_refused_before_any_work(tmp_path, options, message):
    from faceaudit.errors import FaceauditError
    from faceaudit.stages import verification

    with pytest.raises(FaceauditError, match=re.escape(message)):
        verification.run(tmp_path / "absent.npz", out_dir=tmp_path / "out", **options)  # checked before loading
    assert not (tmp_path / "out").exists()


def test_skip_missing_counts_what_it_leaves_out(tmp_path, capsys):
    emb = make_set(tmp_path / "lfw.npz", lfw_names=True)
    pairs = write_lfw_pairs(tmp_path / "pairs.txt")
    pairs.write_text(pairs.read_text().replace("Person_00\t1\t2", "Person_00\t1\t9", 1))
    out = tmp_path / "out"
    assert cli.main(["verification", str(emb), "--pairs", str(pairs), "--skip-missing", "--out", str(out),
                     "--no-figures", "--bootstrap", "0"]) == 0
    assert "skipped 1 of 24 pairs" in capsys.readouterr().err
    result = json.loads((out / "Verification" / "lfw_verification.json").read_text())
    assert result["protocol"]["skipped_missing"] == 1 and result["n_pairs"] == 23


def test_report_puts_every_dataset_on_one_page(tmp_path):
    from faceaudit.io.embeddings import load_embeddings
    from faceaudit.io.files import write_scores
    from faceaudit.stages import leakage, report, variability, verification

    out = tmp_path / "results"
    files = {name: make_set(tmp_path / f"{name}.npz", seed=seed, noise=noise)
             for name, seed, noise in (("dcface", 1, 0.8), ("idiff", 2, 1.2))}
    for name, path in files.items():
        variability.run(path, 200, out, bootstrap=0, figures=False)
        verification.run(path, sample=200, n_folds=4, out_dir=out, bootstrap=0, figures=False)
    query, reference = load_embeddings(files["dcface"]), load_embeddings(files["idiff"])
    best = leakage.best_matches(query, reference, device="cpu", progress=False)  # leakage's files, no figure
    write_scores(out / "leakage" / f"dcface_BestMatches_{len(query)}.txt", best.scores)
    leakage.write_summary(out / "leakage" / "dcface_leakage_summary.json", out / "leakage" / "dcface_leakage_summary.csv",
                          [leakage.summary(best.scores, [0.5], name="dcface")])
    verification.run(files["idiff"], sample=200, n_folds=4, out_dir=out / "again", rule="at-most", bootstrap=0,
                     figures=False)  # a second run of one stage is a row of its own
    made = report.run_report([out], tmp_path / "page", title="Two sets", formats=("png",))
    assert made["datasets"] == ["dcface", "idiff (results)", "idiff (results/again)"]
    rows = {r["dataset"]: r for r in read_rows(tmp_path / "page" / "datasets.csv")}
    assert rows["idiff (results/again)"]["TAR@FAR rule"] == "at-most" and rows["idiff (results/again)"]["EER"] == ""
    rows["idiff"] = rows.pop("idiff (results)")
    for name in files:
        metrics = json.loads((out / "Metrics" / f"{name}_metrics.json").read_text())["metrics"]
        result = json.loads((out / "Verification" / f"{name}_verification.json").read_text())
        assert float(rows[name]["EER"]) == metrics["eer"]
        assert float(rows[name]["k-fold accuracy"]) == result["accuracy"]["mean"]["accuracy"]
        assert float(rows[name]["TAR@FAR=0.1"]) == result["tar_at_far"][0]["tar"]
        assert rows[name]["TAR@FAR=0.001"] == ""  # out of reach for 200 non-mated pairs
    summary = json.loads((out / "leakage" / "dcface_leakage_summary.json").read_text())
    assert float(rows["dcface"]["best match mean"]) == summary["mean"] and rows["idiff"]["best match mean"] == ""
    html = (tmp_path / "page" / "report.html").read_text()
    for figure in ("ROC_all", "DET_all", "MatedVsNonmated_grid", "BestMatches_all"):
        assert (tmp_path / "page" / "figures" / f"{figure}.png").is_file()
        assert f"figures/{figure}.png" in html
    assert "dcface" in html and "idiff" in html


def test_report_of_a_folder_without_results_fails_cleanly(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "page")]) == 2
    assert "no faceaudit results found" in capsys.readouterr().err
    assert not (tmp_path / "page").exists()


def test_verify_needs_a_threshold_for_a_model_without_one(tmp_path, capsys):
    assert cli.main(["verify", "a.jpg", "b.jpg", "--arch", "iresnet50"]) == 2
    assert "iresnet50 has no documented decision threshold; pass --threshold" in capsys.readouterr().err


def test_verify_real_photos_with_sface_as_the_pipeline_embeds_them(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="--align yunet runs YuNet through onnxruntime")
    from faceaudit.embed import embed_dataset
    from faceaudit.io.embeddings import load_embeddings

    orl = shared_path("orl")
    models = real_model("sface").parent
    assert real_model("yunet").parent == models
    common = ["--models-dir", str(models), "--device", "cpu"]
    assert cli.main(["verify", str(orl / "s1" / "1.pgm"), str(orl / "s1" / "2.pgm"), *common]) == 0
    same = capsys.readouterr().out.splitlines()
    assert same[-1] == "same person" and "FMR = 1e-3 on real faces" in same[1]
    assert float(same[0].split()[1]) > 0.3916
    photos = [("s1", "1.pgm"), ("s2", "1.pgm"), ("s3", "1.pgm"), ("s3", "4.pgm")]
    pairs = tmp_path / "photos.csv"
    pairs.write_text(f"{orl}/s1/1.pgm,{orl}/s2/1.pgm,0\n{orl}/s3/1.pgm,{orl}/s3/4.pgm,1\n"
                     f"{orl}/s3/1.pgm,{tmp_path}/absent.png,0\n")
    assert cli.main(["verify", "--pairs", str(pairs), *common]) == 2  # refused before the model is loaded
    assert "absent.png: image not found" in capsys.readouterr().err
    output = tmp_path / "checked.csv"
    assert cli.main(["verify", "--pairs", str(pairs), "--skip-missing", "--output", str(output), *common]) == 0
    printed = capsys.readouterr().out
    assert "2 pairs scored: 1 same person, 1 different people; 1 skipped" in printed
    assert "agree with the labels: 2 of 2" in printed
    rows = read_rows(output)
    assert [r["same_person"] for r in rows] == ["no", "yes", ""] and "image not found" in rows[2]["error"]
    for person, name in photos:  # the same faces through faceaudit embed: the same scores
        (tmp_path / "faces" / person).mkdir(parents=True, exist_ok=True)
        (tmp_path / "faces" / person / name).write_bytes((orl / person / name).read_bytes())
    embed_dataset(tmp_path / "faces", tmp_path / "faces.npz", arch="sface", device="cpu", align="yunet",
                  models_dir=models, progress=False, workers=0, log=lambda _: None)
    v = load_embeddings(tmp_path / "faces.npz").vectors.astype(np.float64)
    assert float(rows[0]["score"]) == pytest.approx(v[0] @ v[1], abs=1e-5)
    assert float(rows[1]["score"]) == pytest.approx(v[2] @ v[3], abs=1e-5)
