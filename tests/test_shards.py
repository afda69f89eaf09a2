"""Memory-mapped shards: written and read back row for row, bad folders refused, and leakage,
closest and identify on a shard folder give the files they give on the embedding file itself."""
import json

import numpy as np
import pytest

from faceaudit.cli import main as cli_main
from faceaudit.errors import FaceauditError
from faceaudit.io.embeddings import EmbeddingSet, load_embeddings, save_embeddings
from faceaudit.io.shards import RowArray, load_reference_set, open_shards, write_shards


def make_set(rng, n, dim=16, prefix="r", per_id=4):
    return EmbeddingSet.from_arrays(rng.normal(size=(n, dim)), [f"{prefix}{i // per_id:03d}" for i in range(n)],
                                    [f"{i}.jpg" for i in range(n)], {"model": "test"})


def test_rows_come_back_in_order(tmp_path):
    rng = np.random.default_rng(0)
    a, b = make_set(rng, 23), make_set(rng, 9, prefix="s")
    manifest = write_shards([a, b], tmp_path / "s", rows_per_shard=10)
    shards = open_shards(tmp_path / "s")
    assert [len(p) for _, p in shards.vectors.parts()] == [10, 10, 10, 2]
    assert len(shards) == 32 and shards.dim == 16 and shards.metadata["model"] == "test"
    vectors = np.vstack([a.vectors, b.vectors])
    ids = np.concatenate([a.identities, b.identities])
    picks = np.array([31, 0, 9, 10, 25, 25])
    np.testing.assert_array_equal(shards.vectors[picks], vectors[picks])
    np.testing.assert_array_equal(shards.identities[picks], ids[picks])
    np.testing.assert_array_equal(shards.vectors[5:27:3], vectors[5:27:3])
    assert shards.image_names[-1] == b.image_names[-1] and shards.identities[12] == ids[12]
    with pytest.raises(FaceauditError, match="memory-mapped"):
        np.asarray(shards.vectors)
    with pytest.raises(FaceauditError, match="already holds shards"):
        write_shards([a], tmp_path / "s")
    write_shards([b], tmp_path / "s", rows_per_shard=10, append=True)
    assert len(open_shards(manifest)) == 41
    assert isinstance(load_reference_set(tmp_path / "s").vectors, RowArray)
    assert "part-00000.npy" in repr(shards.vectors)  # checkpoints recognise the files


def test_bad_shard_folders(tmp_path):
    rng = np.random.default_rng(1)
    write_shards([make_set(rng, 8)], tmp_path / "a", rows_per_shard=4)
    with pytest.raises(FaceauditError, match="same model"):
        write_shards([make_set(rng, 4, dim=12)], tmp_path / "a", append=True)
    other = tmp_path / "a" / "part-00001.npy"  # a shard of another dimension
    np.save(other, (np.ones((4, 12)) / np.sqrt(12)).astype(np.float32))
    with pytest.raises(FaceauditError, match="part-00001.npy: shard vectors have 12 dimensions but the set has 16"):
        open_shards(tmp_path / "a")
    np.save(other, np.ones((4, 16), np.float32))  # not unit vectors
    with pytest.raises(FaceauditError, match="row 0 has norm 4"):
        open_shards(tmp_path / "a")
    with pytest.raises(FaceauditError, match="not a shard folder"):
        open_shards(tmp_path)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "shards.json").write_text('{"format": "faceaudit-shards", "shards": []}')
    with pytest.raises(FaceauditError, match="empty"):
        open_shards(tmp_path / "b")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    rng = np.random.default_rng(2)
    root = tmp_path_factory.mktemp("sh")
    reference = make_set(rng, 300, per_id=5)
    query = EmbeddingSet.from_arrays(reference.vectors[::7] + 0.3 * rng.normal(size=(43, 16)),
                                     [f"q{i}" for i in range(43)], [f"{i}.png" for i in range(43)])
    save_embeddings(reference, root / "ref.json")
    save_embeddings(query, root / "query.json")
    assert cli_main(["shards", str(root / "ref.json"), "--out", str(root / "ref_shards"),
                     "--rows-per-shard", "64"]) == 0
    return root


def test_leakage_and_closest_on_shards_write_the_same_files(files):
    root = files
    for ref in ("ref.json", "ref_shards"):
        common = ["--reference", str(root / ref), "--device", "cpu", "--no-progress", "--memory-budget-mb", "1"]
        assert cli_main(["leakage", str(root / "query.json"), "--n-comparisons", "30", "--threshold", "0.5",
                         "--out", str(root / f"leak_{ref}"), *common]) == 0
        assert cli_main(["closest", str(root / "query.json"), "--top", "25", "--out", str(root / f"close_{ref}"),
                         *common]) == 0
    for name in ("query_BestMatches_30.csv", "query_BestMatches_30.txt"):
        assert (root / "leak_ref.json" / name).read_bytes() == (root / "leak_ref_shards" / name).read_bytes()
    for name in ("query_Top25Global_43.json", "query_Top25Global_43_matches.csv"):
        assert (root / "close_ref.json" / name).read_bytes() == (root / "close_ref_shards" / name).read_bytes()
    summary = json.loads((root / "leak_ref_shards" / "query_leakage_summary.json").read_text())
    assert summary["reference_size"] == 300


def test_faiss_ivf_on_shards(files):
    pytest.importorskip("faiss", reason="the FAISS backends need the faiss extra")
    root = files
    assert cli_main(["leakage", str(root / "query.json"), "--reference", str(root / "ref_shards"), "--index",
                     "faiss-ivf", "--ivf-lists", "4", "--ivf-probe", "4", "--n-comparisons", "30", "--out",
                     str(root / "leak_ivf"), "--device", "cpu", "--no-progress"]) == 0
    name = "query_BestMatches_30.csv"  # every list probed: the exact answer
    assert (root / "leak_ivf" / name).read_bytes() == (root / "leak_ref.json" / name).read_bytes()


def test_identify_with_a_shard_gallery(files, tmp_path):
    root = files
    probes = load_embeddings(root / "ref.json").subset(np.arange(0, 300, 3))
    save_embeddings(probes, tmp_path / "probes.npz")
    for gallery in ("ref.json", "ref_shards"):
        assert cli_main(["identify", str(tmp_path / "probes.npz"), "--gallery", str(root / gallery), "--knn", "3",
                         "--out", str(tmp_path / gallery), "--device", "cpu", "--no-progress"]) == 0
    a = json.loads((tmp_path / "ref.json" / "probes_identification.json").read_text())
    b = json.loads((tmp_path / "ref_shards" / "probes_identification.json").read_text())
    assert a["rank_accuracy"] == b["rank_accuracy"] == {"1": 1.0, "5": 1.0, "10": 1.0}  # probes are gallery images
    assert a["knn"] == b["knn"]
    assert (tmp_path / "ref.json" / "probes_probes.csv").read_bytes() == \
        (tmp_path / "ref_shards" / "probes_probes.csv").read_bytes()
