"""File helpers: atomic writes keep the usual permissions and leave nothing behind on failure."""
import os
import stat

import numpy as np
import pytest

from faceaudit.errors import FaceauditError
from faceaudit.io.files import atomic_write, read_csv_columns, read_csv_table, read_scores, write_csv, write_scores


def test_atomic_write_gives_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_scores(tmp_path / "s.txt", np.array([0.5]))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("before")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as out:
            out.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_scores_round_trip_at_full_precision(tmp_path):
    scores = np.random.default_rng(0).random(100)
    assert np.array_equal(read_scores(write_scores(tmp_path / "s.txt", scores)), scores)


def test_a_bad_score_line_is_named(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("0.5\nzero\n")
    with pytest.raises(FaceauditError, match=r"s\.txt:2: not one number"):
        read_scores(path)


def test_missing_csv_columns_are_named(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["query_path", "score"], [["a/1.jpg", 0.5]])
    with pytest.raises(FaceauditError, match="missing column.*casia_path"):
        read_csv_columns(path, ["query_path", "casia_path"])
    assert read_csv_columns(path, ["query_path"]) == [{"query_path": "a/1.jpg", "score": "0.5"}]


@pytest.mark.parametrize("text,message", [
    ("0.1 0.2\n0.3\n", r"s\.txt:1: not one number"),
    ("0.1\n\nabc\n", r"s\.txt:3: not one number"),
    ("0.1\nnan\n", r"s\.txt:2: score is nan"),
    ("0.1\n-inf\n", r"s\.txt:2: score is -inf"),
    ("\n \n", r"s\.txt: score file is empty"),
])
def test_score_files_are_one_finite_number_a_line(tmp_path, text, message):
    path = tmp_path / "s.txt"
    path.write_text(text)
    with pytest.raises(FaceauditError, match=message):
        read_scores(path)


def test_blank_lines_and_spaces_are_fine_and_binary_is_refused(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("0.5\n\n  -0.25 \n1e-3\n")
    assert read_scores(path).tolist() == [0.5, -0.25, 0.001]
    path.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(FaceauditError, match="not a text file"):
        read_scores(path)


def test_scores_with_fixed_decimals_as_the_paper(tmp_path):
    path = write_scores(tmp_path / "s.txt", np.array([0.5, 0.1234567, -0.00001]), decimals=6)
    assert path.read_text() == "0.500000\n0.123457\n-0.000010\n"


def test_csv_table_reads_columns_like_the_row_reader(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('name,score,extra\n"a,1.jpg",0.5,x\n\nb.jpg,0.25\n')
    header, columns = read_csv_table(path, ["name", "score"])
    assert header == ["name", "score", "extra"]
    assert columns == {"name": ["a,1.jpg", "b.jpg"], "score": ["0.5", "0.25"], "extra": ["x", ""]}
    assert [r["name"] for r in read_csv_columns(path, ["name"])] == columns["name"]
    with pytest.raises(FaceauditError, match=r"t.csv: missing column\(s\) similarity"):
        read_csv_table(path, ["similarity"])
    assert read_csv_table(write_csv(tmp_path / "empty.csv", ["a"], []), ["a"]) == (["a"], {"a": []})
