"""Leakage: best matches, summary, closest pairs, the paper's formats and scripts run as written."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceaudit import leakage, search
from faceaudit.stages import closest
from faceaudit.cli import main as cli_main
from faceaudit.io.embeddings import EmbeddingSet, save_embeddings
from faceaudit.errors import FaceauditError

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "CASIA_compare"


def make_set(rng, n_ids, per_id, dim, prefix, base=None, noise=0.3):
    centers = rng.normal(size=(n_ids, dim)) if base is None else base
    vectors = np.repeat(centers, per_id, axis=0) + noise * rng.normal(size=(n_ids * per_id, dim))
    ids = [f"{prefix}{i:03d}" for i in range(n_ids) for _ in range(per_id)]
    names = [f"img_{j}.jpg" for _ in range(n_ids) for j in range(per_id)]
    return EmbeddingSet.from_arrays(vectors, ids, names)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """A 'synthetic' set whose first identities leak from a 'CASIA' reference set, as paper JSON files."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("emb")
    casia = make_set(rng, 40, 6, 32, "0")
    leaked = casia.vectors[::6][:5]  # five identities copied with a little noise
    centers = np.vstack([leaked, rng.normal(size=(7, 32))])
    synth = make_set(rng, 12, 5, 32, "s", base=centers, noise=0.05)
    emb = root / "Embeddings"
    emb.mkdir()
    save_embeddings(casia, emb / "CASIA.json")
    save_embeddings(synth, emb / "Synth.json")
    return root, emb / "Synth.json", emb / "CASIA.json"


def load(path):
    from faceaudit.io.embeddings import load_embeddings
    return load_embeddings(path)


def test_best_matches_sample_and_brute_force(example):
    _, synth_path, casia_path = example
    synth, casia = load(synth_path), load(casia_path)
    res = leakage.best_matches(synth, casia, n_comparisons=20, device="cpu", progress=False)
    import random
    random.seed(42)
    assert res.sample_indices.tolist() == random.sample(range(len(synth)), 20)
    s = search.exact_scores(synth.vectors[res.sample_indices], casia.vectors)
    np.testing.assert_array_equal(res.reference_indices, s.argmax(1))
    np.testing.assert_array_equal(res.scores, s.max(1))


def test_more_comparisons_than_queries_uses_all_with_warning(example):
    _, synth_path, casia_path = example
    synth, casia = load(synth_path), load(casia_path)
    with pytest.warns(UserWarning, match="using all of them"):
        res = leakage.best_matches(synth, casia, n_comparisons=10_000, device="cpu", progress=False)
    assert res.sample_indices.tolist() == list(range(len(synth)))


def test_summary_values():
    scores = np.arange(1, 1001) / 1000.0
    out = leakage.summary(scores, [0.5, 0.9], name="x")
    assert out["n"] == 1000 and out["dataset"] == "x"
    assert out["mean"] == pytest.approx(0.5005) and out["median"] == pytest.approx(0.5005)
    assert out["q90"] == pytest.approx(np.quantile(scores, 0.9))
    assert out["q99_9"] == pytest.approx(np.quantile(scores, 0.999))
    assert [(a["threshold"], a["count"]) for a in out["above_threshold"]] == [(0.5, 501), (0.9, 101)]
    assert out["above_threshold"][1]["fraction"] == pytest.approx(0.101)
    header, rows = leakage.summary_rows([out])
    assert header[:10] == ["dataset", "n", "mean", "median", "std", "min", "max", "q90", "q99", "q99_9"]
    assert header[10:] == ["count_ge_0.5", "fraction_ge_0.5", "count_ge_0.9", "fraction_ge_0.9"]
    assert rows[0][10] == 501


def test_closest_pairs_document(example):
    _, synth_path, casia_path = example
    synth, casia = load(synth_path), load(casia_path)
    doc = closest.closest_pairs(synth, casia, top=15, device="cpu", progress=False, input_file="in.json")
    assert list(doc["metadata"]) == list(closest.CLOSEST_METADATA_KEYS)
    assert doc["metadata"] == {"input_file": "in.json", "n_samples_compared": len(synth),
                               "top_global_matches": 15, "total_pairs_considered": len(synth) * len(casia)}
    s = search.exact_scores(synth.vectors, casia.vectors)
    best = np.sort(s.ravel())[::-1][:15]
    assert [r["similarity_score"] for r in doc["results"]] == [float(v) for v in best]
    first = doc["results"][0]
    assert list(first) == list(closest.CLOSEST_RESULT_KEYS)
    assert first["query_path"] == f"{first['query_identity']}/{first['query_image_name']}"
    assert first["query_identity"] in {f"s{i:03d}" for i in range(5)}  # a leaked identity


def test_published_closest_json_layout_and_schema(shared_data):
    """Our writer reproduces the paper's Top-K JSON files byte for byte from their content."""
    folder = shared_data("paper", "Closest")
    files = sorted(folder.glob("*_Top100Global_*.json"))
    assert files
    for path in files[:4]:
        text = path.read_text()
        doc = json.loads(text)
        assert list(doc) == ["metadata", "results"]
        assert list(doc["metadata"]) == list(closest.CLOSEST_METADATA_KEYS)
        assert all(list(r) == list(closest.CLOSEST_RESULT_KEYS) for r in doc["results"])
        assert closest.format_closest_json(doc) == text


def test_best_match_csv_columns_match_published(shared_data, example, tmp_path):
    published = shared_data("paper", "Best_Matches", "SDFD_BestMatches_10000.csv")
    with open(published, newline="") as handle:
        header = next(csv.reader(handle))
        first = next(csv.reader(handle))
    assert tuple(header) == leakage.BEST_MATCH_COLUMNS
    _, synth_path, casia_path = example
    synth, casia = load(synth_path), load(casia_path)
    res = leakage.best_matches(synth, casia, n_comparisons=10, device="cpu", progress=False)
    out = leakage.write_best_matches_csv(tmp_path / "x.csv", res, synth, casia)
    with open(out, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == header
    assert len(rows) == 11
    # numbers formatted like the paper's: integer indices, float32 similarity widened to float
    assert float(first[-1]) == float(np.float32(first[-1]))
    assert float(rows[1][-1]) == float(np.float32(rows[1][-1]))
    assert rows[1][0] == str(res.sample_indices[0]) and rows[1][3] == str(res.reference_indices[0])


def test_bad_input(example, tmp_path):
    _, synth_path, casia_path = example
    synth = load(synth_path)
    other = EmbeddingSet.from_arrays(np.ones((3, 16)), ["a"] * 3, ["1", "2", "3"])
    with pytest.raises(FaceauditError, match="dimensions"):
        leakage.best_matches(synth, other, device="cpu", progress=False)
    with pytest.raises(FaceauditError, match="> 0"):
        leakage.best_matches(synth, load(casia_path), n_comparisons=0, device="cpu", progress=False)
    with pytest.raises(FaceauditError, match="> 0"):
        closest.closest_pairs(synth, load(casia_path), top=0, device="cpu", progress=False)
    empty = EmbeddingSet(np.zeros((0, 32), np.float32), [], [])
    with pytest.raises(FaceauditError, match="empty"):
        leakage.best_matches(synth, empty, device="cpu", progress=False)


def test_cli_leakage_and_closest(example, tmp_path, capsys):
    _, synth_path, casia_path = example
    out = tmp_path / "out"
    assert cli_main(["leakage", str(synth_path), "--reference", str(casia_path), "--n-comparisons", "30",
                     "--threshold", "0.5", "--threshold", "0.9", "--out", str(out), "--device", "cpu",
                     "--no-progress"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["Synth_BestMatches_30.csv", "Synth_BestMatches_30.pdf", "Synth_BestMatches_30.png",
                     "Synth_BestMatches_30.txt", "Synth_leakage_summary.csv", "Synth_leakage_summary.json"]
    summary = json.loads((out / "Synth_leakage_summary.json").read_text())
    scores = np.loadtxt(out / "Synth_BestMatches_30.txt")
    assert summary["n"] == 30 and summary["mean"] == pytest.approx(scores.mean())
    assert [a["threshold"] for a in summary["above_threshold"]] == [0.5, 0.9]
    assert cli_main(["closest", str(synth_path), "--reference", str(casia_path), "--top", "7",
                     "--positive-only", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    doc = json.loads((out / "Synth_Top7Global_60.json").read_text())
    assert len(doc["results"]) == 7 and doc["metadata"]["total_pairs_considered"] == 60 * 240
    rows = (out / "Synth_Top7Global_60_matches.csv").read_text().splitlines()
    assert rows[0] == "query_path,casia_path,similarity_score" and len(rows) == 8
    # one-line errors
    bad = tmp_path / "bad.json"
    save_embeddings(EmbeddingSet.from_arrays(np.ones((2, 8)), ["a", "b"], ["1", "2"]), bad)
    capsys.readouterr()
    assert cli_main(["leakage", str(synth_path), "--reference", str(bad), "--device", "cpu", "--no-progress",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dimensions" in err[0]
    with pytest.raises(SystemExit):
        cli_main(["closest", str(synth_path), "--reference", str(casia_path), "--top", "0"])


def test_cli_leakage_several_datasets(example, tmp_path):
    root, synth_path, casia_path = example
    other = tmp_path / "Other.npz"
    rng = np.random.default_rng(5)
    save_embeddings(make_set(rng, 4, 3, 32, "o"), other)
    out = tmp_path / "multi"
    assert cli_main(["leakage", str(synth_path), str(other), "--reference", str(casia_path), "--all",
                     "--threshold", "0.4", "0.8", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    table = json.loads((out / "leakage_summary.json").read_text())
    assert [t["dataset"] for t in table] == ["Synth", "Other"] and [t["n"] for t in table] == [60, 12]
    assert [a["threshold"] for a in table[1]["above_threshold"]] == [0.4, 0.8]
    assert (out / "BestMatches_all.png").is_file() and (out / "Other_BestMatches_12.csv").is_file()
    header = (out / "leakage_summary.csv").read_text().splitlines()[0]
    assert header.endswith("count_ge_0.4,fraction_ge_0.4,count_ge_0.8,fraction_ge_0.8")


# ---------------------------------------------------------------- the paper's scripts, as written

def run_script(args, cwd, env=None):
    full_env = dict(os.environ, PYTHON=sys.executable, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    full_env.update(env or {})
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def workdir(example, tmp_path_factory):
    root, _, _ = example
    work = tmp_path_factory.mktemp("work")
    shutil.copytree(root / "Embeddings", work / "Embeddings")
    return work


def test_compare_embeddings_script(workdir):
    run_script([sys.executable, str(SCRIPTS / "compare_embeddings.py"), "Embeddings/Synth.json",
                "--n_comparisons", "25", "--casia_file", "Embeddings/CASIA.json", "--device", "cpu"], workdir)
    assert (workdir / "Synth_BestMatches_25.png").stat().st_size > 1000
    assert (workdir / "Synth_BestMatches_25.pdf").stat().st_size > 1000


def test_compute_similarities_script(workdir):
    run_script([sys.executable, str(SCRIPTS / "compute_similarities.py"), "Embeddings/Synth.json",
                "--n_comparisons", "25", "--casia_file", "Embeddings/CASIA.json"], workdir)
    lines = (workdir / "SimilarityScores" / "Synth_BestMatches_25.txt").read_text().splitlines()
    assert len(lines) == 25 and all(len(x.split(".")[1]) == 6 for x in lines)
    with open(workdir / "SimilarityScores" / "Synth_BestMatches_25.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(leakage.BEST_MATCH_COLUMNS) and len(rows) == 25
    assert [f"{float(r['similarity']):.6f}" for r in rows] == lines
    import random
    random.seed(42)
    assert [int(r["sample_index"]) for r in rows] == random.sample(range(60), 25)


def test_find_closest_and_get_paths_without_jq(workdir, tmp_path):
    run_script(["bash", str(SCRIPTS / "find_closest.sh"), "Embeddings"], workdir)
    out = workdir / "Synth_Top100Global_60.json"
    doc = json.loads(out.read_text())
    assert doc["metadata"] == {"input_file": "Embeddings/Synth.json", "n_samples_compared": 60,
                               "top_global_matches": 100, "total_pairs_considered": 60 * 240}
    assert [r["rank"] for r in doc["results"]] == list(range(1, 101))
    assert all(r["similarity_score"] > 0 for r in doc["results"])
    closest = workdir / "Closest"
    closest.mkdir(exist_ok=True)
    shutil.copy(out, closest / out.name)
    # a PATH with python3 and the few coreutils the script uses, and no jq
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python3")
    for tool in ("mkdir", "basename"):
        os.symlink(shutil.which(tool), bindir / tool)
    assert shutil.which("jq", path=str(bindir)) is None
    env = {"PATH": str(bindir)}
    run_script([shutil.which("bash"), str(SCRIPTS / "get_paths.sh")], workdir,
               env={**env, "PYTHON": "python3"})
    rows = (workdir / "Extracted_paths" / "Synth_Top100Global_60_matches.csv").read_text().splitlines()
    assert rows[0] == "query_path,casia_path,similarity_score" and len(rows) == 101
    first = doc["results"][0]
    assert rows[1] == f'"{first["query_path"]}","{first["casia_path"]}",{first["similarity_score"]!r}'


def test_find_closest_script_defaults_and_errors(workdir):
    proc = run_script([sys.executable, str(SCRIPTS / "find_closest.py"), "Embeddings/Synth.json",
                       "--casia_file", "Embeddings/CASIA.json", "--top_global", "5"], workdir)
    assert "Results saved to" in proc.stdout
    doc = json.loads((workdir / "Synth_Top5Global_10000.json").read_text())
    assert doc["metadata"]["n_samples_compared"] == 60 and len(doc["results"]) == 5
    bad = subprocess.run([sys.executable, str(SCRIPTS / "find_closest.py"), "Embeddings/Synth.json",
                          "--casia_file", "missing.json"], cwd=workdir, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "missing.json" in bad.stderr


def test_identity_flags_match_a_per_identity_brute_force():
    from faceaudit.stages.leakage import best_matches, identity_flags

    rng = np.random.default_rng(3)
    ref = EmbeddingSet.from_arrays(rng.standard_normal((40, 16)), [f"r{i // 4}" for i in range(40)],
                                   [f"{i}.jpg" for i in range(40)])
    noise = rng.standard_normal((30, 16))
    leaked = ref.vectors[[0, 5, 9]] + 0.05 * noise[:3]  # three queries of identity q0 copy reference faces
    query = EmbeddingSet.from_arrays(np.vstack([leaked, noise[3:]]), [f"q{i // 3}" for i in range(30)],
                                     [f"{i}.png" for i in range(30)])
    result = best_matches(query, ref, n_comparisons=20, progress=False)
    threshold = 0.9
    rows = identity_flags(result, query, ref, threshold)
    sampled = query.identities[result.sample_indices]
    assert [r["identity"] for r in rows] == sorted(set(sampled.tolist()))
    for row in rows:
        mine = np.flatnonzero(sampled == row["identity"])
        best = mine[np.argmax(result.scores[mine])]
        assert row["images"] == len(mine)
        assert row["max_similarity"] == float(result.scores[best])
        assert row["matched_reference_identity"] == ref.identities[result.reference_indices[best]]
        assert row["images_above_threshold"] == int((result.scores[mine] >= threshold).sum())
        assert row["flagged"] == bool(result.scores[mine].max() >= threshold)
    assert any(r["flagged"] for r in rows) and not all(r["flagged"] for r in rows)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("kind", ["best", "top"])
def test_long_searches_resume_from_their_checkpoint(tmp_path, monkeypatch, kind):
    from faceaudit.search import chunked
    from faceaudit.stages import closest, leakage as lk

    rng = np.random.default_rng(5)
    query = EmbeddingSet.from_arrays(rng.standard_normal((50, 8)), [f"q{i % 7}" for i in range(50)],
                                     [f"{i}.png" for i in range(50)])
    ref = EmbeddingSet.from_arrays(rng.standard_normal((30, 8)), [f"r{i % 5}" for i in range(30)],
                                   [f"{i}.jpg" for i in range(30)])
    checkpoint = tmp_path / "run.partial.npz"

    def run(**kw):
        if kind == "best":
            r = lk.best_matches(query, ref, n_comparisons=40, progress=False, **kw)
            return r.sample_indices, r.scores, r.reference_indices
        doc = closest.closest_pairs(query, ref, top=12, n_comparisons=40, progress=False, **kw)
        return [(d["rank"], d["similarity_score"], d["query_path"], d["casia_path"]) for d in doc["results"]]

    monkeypatch.setattr(chunked, "CHECKPOINT_QUERIES", 10**9)
    whole = run()  # one chunk, no checkpoint
    monkeypatch.setattr(chunked, "CHECKPOINT_QUERIES", 7)  # 40 queries -> 6 chunks
    name = "best_match" if kind == "best" else "top_pairs"
    real = getattr(search, name)
    calls = []

    def failing(queries, *args, **kwargs):
        calls.append(len(queries))
        if len(calls) == 4:
            raise _Interrupt
        return real(queries, *args, **kwargs)

    monkeypatch.setattr(chunked, name, failing)
    with pytest.raises(_Interrupt):
        run(checkpoint=checkpoint)
    assert checkpoint.is_file()  # chunks 1-3 kept
    calls.clear()
    monkeypatch.setattr(chunked, name, lambda q, *a, **k: (calls.append(len(q)), real(q, *a, **k))[1])
    resumed = run(checkpoint=checkpoint)
    assert calls == [7, 7, 5]  # only the chunks not done before
    assert not checkpoint.exists()
    if kind == "best":
        for a, b in zip(whole, resumed):
            assert np.array_equal(a, b)
    else:
        assert resumed == whole


def test_a_checkpoint_of_other_inputs_is_ignored(tmp_path, monkeypatch):
    from faceaudit.search import chunked
    from faceaudit.stages import leakage as lk
    from faceaudit.io.checkpoint import Checkpoint

    monkeypatch.setattr(chunked, "CHECKPOINT_QUERIES", 4)
    rng = np.random.default_rng(6)
    query = EmbeddingSet.from_arrays(rng.standard_normal((10, 4)), ["a"] * 10, [f"{i}" for i in range(10)])
    ref = EmbeddingSet.from_arrays(rng.standard_normal((6, 4)), ["b"] * 6, [f"{i}" for i in range(6)])
    checkpoint = tmp_path / "c.partial.npz"
    Checkpoint(checkpoint, "some other run").save(done=np.int64(8), scores=np.zeros(8, np.float32),
                                                 indices=np.zeros(8, np.int64))
    with pytest.warns(UserWarning, match="other inputs or settings"):
        result = lk.best_matches(query, ref, progress=False, checkpoint=checkpoint)
    expected = (query.vectors.astype(np.float64) @ ref.vectors.T.astype(np.float64)).max(axis=1)
    assert np.allclose(result.scores, expected, atol=1e-6)
    assert not checkpoint.exists()
