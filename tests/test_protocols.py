"""Pair protocols (LFW pairs.txt, CSV) parsed and resolved to embedding rows, with one-line errors naming
file and line; folds that are identity-disjoint, or cut in file order per kind."""
import warnings

import numpy as np
import pytest

from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.evaluate.folds import check_fold_classes, identity_folds, ordered_folds, sample_fold_pairs
from faceaudit.io.embeddings import EmbeddingSet
from faceaudit.io.protocols import read_image_pairs, read_pair_protocol, resolve_pairs

PEOPLE = ("Ann_Lee", "Bo_Chen", "Cy_Diaz", "Di_Eze")


def lfw_set():
    """Four LFW-named people with three images each (Ann_Lee/Ann_Lee_0001.jpg ...)."""
    ids = [p for p in PEOPLE for _ in range(3)]
    names = [f"{p}_{n:04d}.jpg" for p in PEOPLE for n in (1, 2, 3)]
    vectors = np.random.default_rng(0).normal(size=(len(ids), 8))
    return EmbeddingSet.from_arrays(vectors, ids, names, {"source_file": "lfw.npz"})


LFW_PAIRS = """2\t2
Ann_Lee\t1\t2
Bo_Chen\t1\t3
Ann_Lee\t1\tBo_Chen\t2
Cy_Diaz\t3\tDi_Eze\t1

Cy_Diaz\t2\t3
Di_Eze\t1\t2
Ann_Lee\t3\tDi_Eze\t3
Bo_Chen\t2\tCy_Diaz\t1
"""


def test_lfw_pairs_folds_lines_and_rows(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text(LFW_PAIRS)
    pairs = read_pair_protocol(path)
    assert pairs.kind == "lfw"
    assert pairs.mated.tolist() == [True, True, False, False] * 2
    assert pairs.folds.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert pairs.lines.tolist() == [2, 3, 4, 5, 7, 8, 9, 10]
    rows, kept = resolve_pairs(pairs, lfw_set())
    assert kept.all()
    assert rows.tolist() == [[0, 1], [3, 5], [0, 4], [8, 9], [7, 8], [9, 10], [2, 11], [4, 6]]


def test_lfw_view1_has_no_folds(tmp_path):
    path = tmp_path / "pairsDevTrain.txt"
    path.write_text("1\nAnn_Lee 1 2\nAnn_Lee 1 Bo_Chen 1\n")
    assert read_pair_protocol(path).folds is None


@pytest.mark.parametrize("text, where, message", [
    ("2\t2\nAnn_Lee\t1\t2\nBo_Chen\t1\t3\nAnn_Lee\t1\tBo_Chen\nCy_Diaz\t3\tDi_Eze\t1\n", ":4:", "mismatched pair"),
    ("1\t1\nAnn_Lee\tone\t2\nAnn_Lee\t1\tBo_Chen\t2\n", ":2:", "not a positive integer"),
    ("1\t2\nAnn_Lee\t1\t2\nBo_Chen\t1\t3\nAnn_Lee\t1\tBo_Chen\t2\n", "", "fewer than the header"),
    ("1\t1\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBo_Chen\t2\nAnn_Lee\t1\t3\n", ":4:", "more pair lines"),
])
def test_malformed_lfw_lines_name_file_and_line(tmp_path, text, where, message):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(FaceauditError, match=message) as error:
        read_pair_protocol(path)
    assert f"{path}{where}" in str(error.value) and "\n" not in str(error.value)


def test_csv_forms_header_and_fold_column(tmp_path):
    by_path = tmp_path / "a.csv"
    by_path.write_text("path1,path2,label\nlfw/Ann_Lee/Ann_Lee_0001.jpg,Ann_Lee/Ann_Lee_0002.jpg,1\n"
                       "Ann_Lee/Ann_Lee_0001.jpg,Bo_Chen/Bo_Chen_0001.jpg,0\n")
    by_name = tmp_path / "b.csv"
    by_name.write_text("Ann_Lee,Ann_Lee_0001,Ann_Lee,Ann_Lee_0003,true,7\n"
                       "Ann_Lee,Ann_Lee_0001,Di_Eze,Di_Eze_0002,false,3\n")
    eset = lfw_set()
    first = read_pair_protocol(by_path)
    assert first.folds is None and first.lines.tolist() == [2, 3]
    assert resolve_pairs(first, eset)[0].tolist() == [[0, 1], [0, 3]]
    second = read_pair_protocol(by_name)
    assert second.folds.tolist() == [1, 0]  # fold labels 7 and 3, numbered in order
    assert resolve_pairs(second, eset)[0].tolist() == [[0, 2], [0, 10]]


@pytest.mark.parametrize("text, where, message", [
    ("a/1.jpg,b/2.jpg,1\na/1.jpg,b/2.jpg,maybe\n", ":2:", "not 1/0"),
    ("a/1.jpg,b/2.jpg,1\na/1.jpg,0\n", ":2:", "expected 3 columns"),
    ("a/1.jpg,b/2.jpg,1\n1.jpg,b/2.jpg,0\n", ":2:", "no identity folder"),
    ("first,second,label\na/1.jpg,b/2.jpg,1\n", ":1:", "unknown columns"),
    ("a/1.jpg,b/2.jpg,1\nc/1.jpg,c/2.jpg,1\n", "", "only mated"),
])
def test_bad_csv_is_one_line_naming_file_and_line(tmp_path, text, where, message):
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    with pytest.raises(FaceauditError, match=message) as error:
        read_pair_protocol(path)
    assert f"{path}{where}" in str(error.value)


def test_missing_images_are_listed_or_skipped(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text(LFW_PAIRS.replace("Di_Eze\t1\t2", "Di_Eze\t1\t9").replace("Cy_Diaz\t3\tDi_Eze\t1",
                                                                            "Cy_Diaz\t3\tEve_Fox\t1"))
    pairs = read_pair_protocol(path)
    with pytest.raises(FaceauditError, match=r"2 pair\(s\) name images not in lfw.npz \(line 5: Eve_Fox/Eve_Fox_0001; "
                                             r"line 8: Di_Eze/Di_Eze_0009\); --skip-missing"):
        resolve_pairs(pairs, lfw_set())
    rows, kept = resolve_pairs(pairs, lfw_set(), skip_missing=True)
    assert kept.tolist() == [True, True, True, False, True, False, True, True] and len(rows) == 6


def test_identity_folds_are_disjoint_and_pairs_stay_inside_them():
    ids = np.repeat([f"p{i}" for i in range(30)], 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FaceauditWarning)
        drawn = sample_fold_pairs(ids, 100, n_folds=5, seed=3)
    folds = identity_folds(ids, 5, seed=3)
    assert all(len(set(folds[ids == person])) == 1 for person in set(ids))  # one fold per identity
    assert (folds[drawn.pairs[:, 0]] == drawn.folds).all() and (folds[drawn.pairs[:, 1]] == drawn.folds).all()
    assert np.array_equal(ids[drawn.pairs[:, 0]] == ids[drawn.pairs[:, 1]], drawn.mated)
    assert drawn.mated.sum() == 100 and (~drawn.mated).sum() == 100
    assert np.bincount(drawn.folds[drawn.mated]).tolist() == [20] * 5
    again = sample_fold_pairs(ids, 100, n_folds=5, seed=3)
    assert np.array_equal(again.pairs, drawn.pairs)


def test_folds_that_cannot_be_formed():
    with pytest.raises(FaceauditError, match="15 identities cannot form 10 identity-disjoint folds"):
        identity_folds(np.repeat([f"p{i}" for i in range(15)], 2), 10)
    with pytest.raises(FaceauditError, match="no identity with two images"):
        identity_folds(np.array([f"p{i}" for i in range(8)] + ["p0"]), 4, seed=0)


def test_ordered_folds_are_contiguous_per_kind():
    mated = np.array([True] * 6 + [False] * 9)
    folds = ordered_folds(mated, 3)
    assert folds[mated].tolist() == [0, 0, 1, 1, 2, 2] and folds[~mated].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(FaceauditError, match="fold 2 of 2 holds no mated pairs"):
        check_fold_classes(mated, (~mated).astype(int), 2, "pairs.csv")


def test_image_pairs_for_verify(tmp_path):
    path = tmp_path / "photos.csv"
    path.write_text("image1,image2,label\na.jpg,b.jpg,1\nc.jpg,d.jpg,0\n")
    table = read_image_pairs(path)
    assert (table.path1, table.path2, table.lines, table.labels) == (["a.jpg", "c.jpg"], ["b.jpg", "d.jpg"], [2, 3],
                                                                      [True, False])
    path.write_text("a.jpg,b.jpg\nc.jpg\n")
    with pytest.raises(FaceauditError, match=r"photos.csv:2: expected 2 columns"):
        read_image_pairs(path)
