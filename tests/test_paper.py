"""`faceaudit paper` on the paper's published results (../shared/data/paper): the leakage table
against values computed here from the raw CSV/JSON files, the cross-checks and their counts,
figures and pages; cross-checks failing on edited copies; our own outputs mixed in."""
import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from faceaudit.cli import main as cli_main
from faceaudit.errors import FaceauditError
from faceaudit.io.embeddings import EmbeddingSet, save_embeddings
from faceaudit.report.compare_plots import OVERLAY_COLORS, forest_plot, overlay_style
from faceaudit.stages import closest, leakage, variability
from faceaudit.stages.paper_checks import FAIL, PASS, run_checks
from faceaudit.stages.paper import run_paper
from faceaudit.stages.paper_data import read_folders

THRESHOLDS = (0.4, 0.5, 0.6)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _name(path):
    return path.name.split("_BestMatches_")[0]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """`faceaudit paper --strict` once on the published folder; the figures are drawn on smaller
    copies below, to keep the tests short."""
    data = shared_path("paper")
    out = tmp_path_factory.mktemp("paper_out")
    code = cli_main(["paper", str(data), "--out", str(out), "--strict", "--no-figures"])
    return data, out, code


def test_leakage_table_matches_numpy_on_the_raw_files(published):
    data, out, code = published
    assert code == 0
    table = {r["dataset"]: r for r in _rows(out / "leakage_table.csv")}
    best_files = sorted((data / "Best_Matches").glob("*_BestMatches_*.csv"))
    assert len(best_files) == len(table) == 17
    for path in best_files:
        name = _name(path)
        scores = np.array([float(r["similarity"]) for r in _rows(path)])
        doc = json.loads(next((data / "Closest").glob(f"{name}_Top100Global_*.json")).read_text())
        top = [r["similarity_score"] for r in doc["results"]]
        row = table[name]
        assert int(row["samples"]) == len(scores)
        assert float(row["median"]) == pytest.approx(np.median(scores), abs=1e-12)
        assert float(row["p99"]) == pytest.approx(np.percentile(scores, 99), abs=1e-12)
        assert float(row["max"]) == scores.max()
        for t in THRESHOLDS:
            assert float(row[f"share >= {t:g}"]) == np.count_nonzero(scores >= t) / len(scores)
        assert float(row["top-1"]) == top[0] and float(row["K-th"]) == top[99] and row["K"] == "100"
        assert int(row["reference identities in top K"]) == len({r["casia_identity"] for r in doc["results"]})
    assert table["GanDiffFace"]["reference identities in top K"] == "3"  # the paper's striking case
    p99 = [float(r["p99"]) for r in _rows(out / "leakage_table.csv")]
    assert p99 == sorted(p99, reverse=True)
    md = (out / "leakage_table.md").read_text()
    assert "| GanDiffFace | paper | 10000 | 0.3847 | 0.7093 | 0.7908 |" in md


def test_cross_checks_pass_with_the_counts_computed_here(published, capsys):
    data, out, _ = published
    checks = _rows(out / "checks.csv")
    assert {c["result"] for c in checks} == {PASS, "note"}
    by_kind = {}
    for c in checks:
        by_kind.setdefault(c["check"], []).append(c)
    # 17 Best_Matches + 17 Closest + 4 CI files; one mated-score file
    assert {k: len(v) for k, v in by_kind.items()} == {
        "schema": 38, "counts": 34, "rank order": 17, "max <= top-1": 17, "top-K coverage": 17, "sampling": 17,
        "genuine mean": 1}
    coverage = {c["subject"]: c["detail"] for c in by_kind["top-K coverage"]}
    for path in sorted((data / "Best_Matches").glob("*_BestMatches_*.csv")):
        name = _name(path)
        rows = _rows(path)
        doc = json.loads(next((data / "Closest").glob(f"{name}_Top100Global_*.json")).read_text())
        kth = doc["results"][-1]["similarity_score"]
        top = {(r["query_identity"], r["query_image_name"], r["casia_identity"], r["casia_image_name"]):
               r["similarity_score"] for r in doc["results"]}
        above = [r for r in rows if float(r["similarity"]) > kth]
        found = [r for r in above if abs(top.get((r["sample_identity"], r["sample_image_name"],
                                                  r["best_match_identity"], r["best_match_image_name"]), 9)
                                         - float(r["similarity"])) <= 1e-6]
        assert len(found) == len(above)
        if above:
            pairs = "pairs" if len(above) > 1 else "pair"
            assert coverage[name].startswith(f"{len(above)} of {len(above)} {name} {pairs} above the 100th score")
        else:
            assert coverage[name].startswith("no sampled best match above the 100th score")
    assert coverage["CemiFace"].startswith("10 of 10 CemiFace pairs above the 100th score (0.8262)")
    mated = np.loadtxt(data / "Control10k_mated_similarities.txt")
    published_mean = float(next(r for r in _rows(data / "CI" / "mean_95.csv")
                                if r["Dataset"] == "Control10k")["Genuine_Mean"])
    assert abs(mated.mean() - published_mean) <= 1e-9
    assert "mean of 10,008 mated scores" in by_kind["genuine mean"][0]["detail"]
    # the sampled rows of most datasets are a seed-42 permutation of rows 0..9,999 only
    cemi = [int(r["sample_index"]) for r in _rows(data / "Best_Matches" / "CemiFace_BestMatches_10000.csv")]
    assert cemi == random.Random(42).sample(range(10000), 10000)
    sampling = {c["subject"]: c["detail"] for c in by_kind["sampling"]}
    assert "range(10,000)" in sampling["CemiFace"] and "550,000" in sampling["CemiFace"]


def test_tables_and_page_name_their_sources(published):
    data, out, _ = published
    assert not (out / "figures").exists()  # --no-figures
    page = (out / "paper_results.md").read_text()
    assert "| GanDiffFace | paper | 10000 |" in page
    assert "<td>GanDiffFace</td>" in (out / "paper_results.html").read_text()
    for source in ["paper/CI/eer_95.csv", "paper/CI/fmr_95.csv", "paper/CI/fdr_95.csv", "paper/CI/mean_95.csv",
                   "paper/Best_Matches/CemiFace_BestMatches_10000.csv",
                   "paper/Best_Matches/{dataset}_BestMatches_{n}.csv (17 files)",
                   "paper/Closest/{dataset}_Top100Global_{n}.json (17 files)"]:
        assert source in page
    intervals = {r["dataset"]: r for r in _rows(out / "intervals.csv")}
    for r in _rows(data / "CI" / "fmr_95.csv"):
        mine = intervals[r["Dataset"]]
        assert [float(mine[k]) for k in ("fmr1000", "fmr1000 lower", "fmr1000 upper")] == \
            [float(r[k]) for k in ("FMR1000", "FMR1000_CI_Lower", "FMR1000_CI_Upper")]


# ---------------------------------------------------------------- small copies, edited

def _copy_paper(data: Path, target: Path, names=("CemiFace", "Control10k"), ci: bool = True) -> Path:
    """A writable copy of the published files of a few datasets; the CI tables keep only their rows."""
    for name in names:
        for sub, pattern in (("Best_Matches", f"{name}_BestMatches_*.csv"), ("Closest", f"{name}_Top100Global_*")):
            (target / sub).mkdir(parents=True, exist_ok=True)
            for path in (data / sub).glob(pattern):
                shutil.copyfile(path, target / sub / path.name)
    for path in (data / "CI").glob("*.csv") if ci else ():
        (target / "CI").mkdir(exist_ok=True)
        lines = path.read_text().splitlines()
        kept = [line for line in lines[1:] if line.split(",")[0] in names]
        (target / "CI" / path.name).write_text("\n".join([lines[0], *kept]) + "\n")
    shutil.copyfile(data / "Control10k_mated_similarities.txt", target / "Control10k_mated_similarities.txt")
    return target


def _edit_closest(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    closest.write_closest_json(path, doc)


def _drop_a_top_pair(root):  # a sampled pair above the 100th score is no longer in the top 100
    def change(doc):
        doc["results"][5]["casia_image_name"] = "image_0.jpg"
        doc["results"][5]["casia_path"] = doc["results"][5]["casia_identity"] + "/image_0.jpg"
    _edit_closest(root / "Closest" / "CemiFace_Top100Global_550000.json", change)
    return {("top-K coverage", "CemiFace")}


def _swap_ranks(root):
    def change(doc):
        doc["results"][0]["rank"], doc["results"][1]["rank"] = 2, 1
    _edit_closest(root / "Closest" / "Control10k_Top100Global_10008.json", change)
    return {("rank order", "Control10k")}


def _rename_closest(root):
    old = root / "Closest" / "CemiFace_Top100Global_550000.json"
    old.rename(old.with_name("CemiFace_Top100Global_500000.json"))
    return {("counts", "CemiFace_Top100Global_500000.json")}


def _raise_a_best_match(root):  # above the dataset's global top-1, so also not in its top-100
    path = root / "Best_Matches" / "Control10k_BestMatches_10000.csv"
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[-1] = "0.99"
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return {("max <= top-1", "Control10k"), ("top-K coverage", "Control10k")}


def _change_a_mated_score(root):
    path = root / "Control10k_mated_similarities.txt"
    path.write_text(path.read_text() + "0.5\n")
    return {("genuine mean", "Control10k")}


def _swap_ci_bounds(root):
    path = root / "CI" / "eer_95.csv"
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[2], cells[3] = cells[3], cells[2]
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return {("schema", "eer_95.csv")}


@pytest.mark.parametrize("edit", [_drop_a_top_pair, _swap_ranks, _rename_closest, _raise_a_best_match,
                                  _change_a_mated_score, _swap_ci_bounds])
def test_edited_copies_fail_exactly_the_right_checks(shared_data, tmp_path, edit):
    root = _copy_paper(shared_data("paper"), tmp_path / "paper")  # unedited, it passes (test_our_outputs_mix...)
    expected = edit(root)
    failed = {(c.check, c.subject) for c in run_checks(read_folders([root])) if c.status == FAIL}
    assert failed == expected


def test_strict_exit_code(shared_data, tmp_path, capsys):
    root = _copy_paper(shared_data("paper"), tmp_path / "paper", names=("Control10k",), ci=False)
    _swap_ranks(root)
    args = ["paper", str(root), "--out", str(tmp_path / "out"), "--no-figures"]
    assert cli_main(args) == 0
    assert "rank order: 0 of 1 pass" in capsys.readouterr().out
    assert cli_main(args + ["--strict"]) == 1
    assert "1 cross-check(s) failed" in capsys.readouterr().out


def test_unreadable_input_is_one_line_exit_2(shared_data, tmp_path, capsys):
    root = _copy_paper(shared_data("paper"), tmp_path / "paper", names=("CemiFace",))
    path = root / "Best_Matches" / "CemiFace_BestMatches_10000.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",high"
    path.write_text("\n".join(lines) + "\n")
    assert cli_main(["paper", str(root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{path}:4: similarity is 'high'" in err
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are read
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceauditError, match="no Best_Matches"):
        read_folders([tmp_path / "empty"])
    with pytest.raises(FaceauditError, match="not found"):
        read_folders([tmp_path / "absent"])


# ---------------------------------------------------------------- our own outputs beside the paper's

def _own_outputs(folder: Path, stem: str) -> None:
    """What `faceaudit leakage`, `closest` and `variability` write, on a small leaking set."""
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(120, 32))
    centers = np.vstack([reference[:4], rng.normal(size=(8, 32))])
    query = np.repeat(centers, 5, axis=0) + 0.05 * rng.normal(size=(60, 32))
    emb = folder / "embeddings"
    emb.mkdir(parents=True)
    save_embeddings(EmbeddingSet.from_arrays(query, [f"q{i // 5}" for i in range(60)],
                                             [f"{i % 5}.jpg" for i in range(60)]), emb / f"{stem}.jsonl")
    save_embeddings(EmbeddingSet.from_arrays(reference, [f"r{i // 3}" for i in range(120)],
                                             [f"{i % 3}.jpg" for i in range(120)]), emb / "CASIA.jsonl")
    with pytest.warns(Warning, match="only 60 embeddings"):
        leakage.run_leakage(emb / f"{stem}.jsonl", emb / "CASIA.jsonl", out_dir=folder / "leakage",
                            device="cpu", progress=False)
    closest.run_closest(emb / f"{stem}.jsonl", emb / "CASIA.jsonl", out_dir=folder / "leakage", top=10,
                        device="cpu", progress=False)
    variability.run(emb / f"{stem}.jsonl", 50, folder, bootstrap=20, figures=False)


def test_our_outputs_mix_with_the_papers(shared_data, tmp_path, capsys):
    paper = _copy_paper(shared_data("paper"), tmp_path / "paper")
    own = tmp_path / "own"
    _own_outputs(own, "CemiFace")  # the same name as a paper dataset: kept apart as "CemiFace [own]"
    out = tmp_path / "out"
    assert cli_main(["paper", str(paper), str(own), "--out", str(out), "--strict", "--no-progress"]) == 0
    assert "cross-checks:" in capsys.readouterr().out
    table = {r["dataset"]: r for r in _rows(out / "leakage_table.csv")}
    assert set(table) == {"CemiFace", "Control10k", "CemiFace [own]"}
    mine = table["CemiFace [own]"]
    best = np.array([float(r["similarity"]) for r in _rows(own / "leakage" / "CemiFace_BestMatches_10000.csv")])
    assert mine["folder"] == "own" and int(mine["samples"]) == 60 and mine["K"] == "10"
    assert float(mine["p99"]) == pytest.approx(np.percentile(best, 99), abs=1e-12)
    assert float(mine["share >= 0.6"]) == np.mean(best >= 0.6) > 0  # its first 4 identities leak
    checks = _rows(out / "checks.csv")
    assert all(c["result"] != FAIL for c in checks)  # the unedited copy and our own outputs pass
    mine_checks = {(c["check"], c["subject"]): c["detail"] for c in checks}
    assert "the whole dataset (60 images" in mine_checks[("counts", "CemiFace_BestMatches_10000.csv")]
    assert mine_checks[("genuine mean", "CemiFace [own]")].startswith("mean of 50 mated scores")
    assert "sample_index is 0..59" in mine_checks[("sampling", "CemiFace [own]")]
    intervals = {r["dataset"]: r for r in _rows(out / "intervals.csv")}
    ours = _rows(own / "Metrics" / "All_Datasets_metrics.csv")[0]
    assert float(intervals["CemiFace [own]"]["eer upper"]) == float(ours["EER CI Upper"])
    figures = out / "figures"
    per_dataset = [figures / "best_matches" / f"{n}_BestMatches_10000" for n in ("CemiFace", "Control10k",
                                                                                 "CemiFace_own")]
    forests = ["forest_eer", "forest_fnmr_fmr1", "forest_fnmr_fmr01", "forest_fdr", "forest_means"]
    page, html = (out / "paper_results.md").read_text(), (out / "paper_results.html").read_text()
    for figure in per_dataset + [figures / name for name in ["BestMatches_overlay", *forests]]:
        assert figure.with_suffix(".pdf").stat().st_size > 1000  # PNG and PDF by default
        link = figure.with_name(figure.name + ".png").relative_to(out).as_posix()
        assert f"]({link})" in page and f"src='{link}'" in html
    assert "own/leakage/CemiFace_BestMatches_10000.csv" in page and "paper/CI/eer_95.csv" in page


def test_overlay_styles_and_forest_rows():
    styles = [overlay_style(rank) for rank in range(30)]
    assert len(set(styles)) == 30  # 30 curves, no two drawn alike
    assert all(styles[i][0] != styles[i + 1][0] for i in range(29))  # neighbours never share a hue
    assert styles[len(OVERLAY_COLORS)] == (OVERLAY_COLORS[0], "--")
    fig = forest_plot(["b", "a", "c"], {"EER": (np.array([0.1, 0.2, 0.3]), np.array([0.05, 0.1, np.nan]),
                                                np.array([0.15, 0.3, np.nan]))}, "t", "x", emphasised=["c"],
                      value_format="{:.2f}".format)
    ax = fig.axes[0]
    rows = {t.get_text(): t.get_position()[1] for t in ax.get_yticklabels()}
    assert rows["b"] > rows["a"] > rows["c"]  # the first label on top
    assert [t.get_text() for t in ax.texts] == ["0.10 [0.05, 0.15]", "0.20 [0.10, 0.30]", "0.30"]


def test_the_per_dataset_figure_is_compare_embeddings_one():
    scores = np.linspace(0.2, 0.6, 50)
    ax = leakage.compare_embeddings_figure(scores, "X", "X.json").axes[0]
    assert ax.get_xlim() == (0.0, 1.0)
    assert ax.get_title() == "Distribution of Best Match Similarities\n(50 samples from X.json)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "X (n=50)", f"Mean (0.400 ± {scores.std():.3f}) = 0.4000"]


def test_metrics_without_bootstrap_and_an_infinite_fdr(tmp_path):
    """Our variability CSV may have blank CI bounds (--bootstrap 0) and FDR = inf (no spread)."""
    analysis = variability.analyze_scores(np.full(20, 0.5), np.full(30, 0.25), bootstrap=0)
    variability.write_metrics_csv(tmp_path / "run" / "Metrics" / variability.CSV_NAME,
                                  [variability.metrics_row("flat", analysis)])
    result = run_paper([tmp_path / "run"], tmp_path / "out", formats=("png",), progress=False, echo=print)
    assert result["failed"] == 0
    row = _rows(tmp_path / "out" / "intervals.csv")[0]
    assert row["fdr"] == "inf" and row["eer lower"] == "nan" and float(row["gmean"]) == 0.5
    assert (tmp_path / "out" / "figures" / "forest_fdr.png").is_file()
