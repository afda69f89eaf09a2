"""File helpers: atomic writes keep the usual permissions and leave nothing behind on failure."""
import os
import stat

import numpy as np
import pytest

from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_write, read_csv_columns, read_scores, write_csv, write_scores


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
    with pytest.raises(FaceauditError, match=r"s\.txt:2: not a number"):
        read_scores(path)


def test_missing_csv_columns_are_named(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["query_path", "score"], [["a/1.jpg", 0.5]])
    with pytest.raises(FaceauditError, match="missing column.*casia_path"):
        read_csv_columns(path, ["query_path", "casia_path"])
    assert read_csv_columns(path, ["query_path"]) == [{"query_path": "a/1.jpg", "score": "0.5"}]
