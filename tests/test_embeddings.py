"""Embedding files: round trips, the JSON-array form, every error, and the 2-process JSONL reader."""
import json
import warnings

import numpy as np
import pytest

from faceaudit import embeddings as E
from faceaudit.embeddings import EmbeddingSet, FaceauditWarning, load_embeddings, save_embeddings
from faceaudit.errors import FaceauditError


def _eset(n=30, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return EmbeddingSet.from_arrays(rng.standard_normal((n, dim)), [f"id{i // 3}" for i in range(n)],
                                    [f"{i % 3}.jpg" for i in range(n)], {"model": "test"})


def _line(identity, name, vector):
    return json.dumps({"identity": identity, "image_name": name, "embedding": [float(v) for v in vector]}) + "\n"


def _write(path, lines):
    path.write_text("".join(lines))
    return path


@pytest.fixture(params=["serial", "parallel"])
def mode(request, monkeypatch):
    """Every JSONL test runs once in one process and once split over two processes."""
    if request.param == "parallel":
        monkeypatch.setattr(E, "_PARALLEL_MIN_BYTES", 0)
    return request.param


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".npz"])
def test_round_trip(tmp_path, suffix, mode):
    eset = _eset()
    path = save_embeddings(eset, tmp_path / f"set{suffix}")
    back = load_embeddings(path)
    np.testing.assert_allclose(back.vectors, eset.vectors, atol=1e-6)
    assert back.identities.tolist() == eset.identities.tolist()
    assert back.image_names.tolist() == eset.image_names.tolist()
    assert back.metadata["model"] == "test"


def test_paper_format_rounded_values_read_exactly(tmp_path, mode):
    rng = np.random.default_rng(1)
    rows = np.round(rng.standard_normal((200, 16)), 5)
    path = _write(tmp_path / "p.json", [_line(f"i{k % 7}", f"{k}.png", r) for k, r in enumerate(rows)])
    got = load_embeddings(path)
    want = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    np.testing.assert_allclose(got.vectors, want, rtol=0, atol=2e-7)
    assert len(got) == 200 and got.dim == 16


def test_json_array_form(tmp_path):
    records = [{"identity": "a", "image_name": "1.jpg", "embedding": [1.0, 0.0]},
               {"identity": "b", "image_name": "2.jpg", "embedding": [0.0, 2.0]}]
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(records, indent=1))
    got = load_embeddings(path)
    assert got.identities.tolist() == ["a", "b"]
    np.testing.assert_allclose(got.vectors, [[1, 0], [0, 1]])


def test_json_array_bad_record_names_it(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([{"identity": "a", "image_name": "1", "embedding": [1.0]},
                                {"identity": "a", "image_name": "2"}]))
    with pytest.raises(FaceauditError, match=r"record 2: missing key 'embedding'"):
        load_embeddings(path)


def _lines(n=200, dim=4):
    return [_line(f"id{k // 4}", f"{k}.jpg", np.arange(1, dim + 1) + k) for k in range(n)]


@pytest.mark.parametrize("where", [3, 150])  # a bad line in the first and in the second half
def test_malformed_line_names_file_and_line(tmp_path, where, mode):
    lines = _lines()
    lines[where - 1] = '{"identity": "x", "image_name": "y", "embedding": [1, 2,\n'
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(FaceauditError) as info:
        load_embeddings(path)
    assert f"{path}:{where}:" in str(info.value) and "malformed JSON" in str(info.value)


def test_skip_invalid_skips_counts_and_warns(tmp_path, mode):
    lines = _lines()
    for number in (2, 120, 199):
        lines[number - 1] = "not json\n"
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.warns(FaceauditWarning, match=r"skipped 3 invalid line\(s\) \(line 2, 120, 199\)"):
        got = load_embeddings(path, skip_invalid=True)
    assert len(got) == 197
    assert "1.jpg" not in got.image_names.tolist() and "119.jpg" not in got.image_names.tolist()


def test_wrong_vector_length_is_an_error(tmp_path, mode):
    lines = _lines()
    lines[159] = _line("z", "z.jpg", [1.0, 2.0, 3.0])
    path = _write(tmp_path / "len.jsonl", lines)
    with pytest.raises(FaceauditError, match=rf"{path}:160: embedding has length 3, expected 4"):
        load_embeddings(path)
    with pytest.warns(FaceauditWarning):
        assert len(load_embeddings(path, skip_invalid=True)) == 199


def test_second_half_starting_with_another_length(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "_PARALLEL_MIN_BYTES", 0)
    lines = [_line("a", f"{k}", [1.0, 2.0]) for k in range(50)] + [_line("b", f"{k}", [1.0, 2.0, 3.0])
                                                                   for k in range(50)]
    path = _write(tmp_path / "mixed.jsonl", lines)
    with pytest.raises(FaceauditError, match=r"embedding has length 3, expected 2"):
        load_embeddings(path)
    with pytest.warns(FaceauditWarning, match="skipped 50"):
        assert len(load_embeddings(path, skip_invalid=True)) == 50


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_inf_are_errors(tmp_path, bad, mode):
    lines = _lines()
    lines[10] = '{"identity": "x", "image_name": "y", "embedding": [1, %s, 3, 4]}\n' % bad
    path = _write(tmp_path / "nan.jsonl", lines)
    with pytest.raises(FaceauditError, match=rf"{path}:11: .*(NaN or infinite|malformed)"):
        load_embeddings(path)


def test_all_zero_vector_is_an_error(tmp_path, mode):
    lines = _lines()
    lines[5] = _line("x", "y", [0, 0, 0, 0])
    path = _write(tmp_path / "zero.jsonl", lines)
    with pytest.raises(FaceauditError, match=r":6: embedding is an all-zero vector"):
        load_embeddings(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FaceauditError, match="not found"):
        load_embeddings(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(FaceauditError, match="empty"):
        load_embeddings(tmp_path / "empty.jsonl")
    (tmp_path / "blank.jsonl").write_text("\n\n  \n")
    with pytest.raises(FaceauditError, match="no embeddings found"):
        load_embeddings(tmp_path / "blank.jsonl")


def test_duplicates_are_warned_about(tmp_path, mode):
    lines = _lines(20) + [_line("id0", "0.jpg", [4, 3, 2, 1])]
    path = _write(tmp_path / "dup.jsonl", lines)
    with pytest.warns(FaceauditWarning, match=r"1 duplicate \(identity, image_name\) pair\(s\), e.g. id0/0.jpg"):
        load_embeddings(path)


def test_blank_lines_crlf_and_no_final_newline(tmp_path, mode):
    lines = _lines(100)
    lines[40:40] = ["\n", "   \n"]
    text = "".join(lines).replace("\n", "\r\n")
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(text.rstrip("\r\n").encode())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = load_embeddings(path)
    assert len(got) == 100 and got.image_names[-1] == "99.jpg"


def test_line_numbers_after_blank_lines_in_second_half(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "_PARALLEL_MIN_BYTES", 0)
    lines = _lines(100)
    lines[10] = "\n"
    lines[90] = "oops\n"
    path = _write(tmp_path / "b.jsonl", lines)
    with pytest.raises(FaceauditError, match=rf"{path}:91: malformed"):
        load_embeddings(path)


def test_parallel_and_serial_agree(tmp_path, monkeypatch):
    path = save_embeddings(_eset(n=500, dim=32), tmp_path / "s.jsonl")
    serial = load_embeddings(path)
    monkeypatch.setattr(E, "_PARALLEL_MIN_BYTES", 0)
    parallel = load_embeddings(path)
    assert np.array_equal(serial.vectors, parallel.vectors)
    assert serial.identities.tolist() == parallel.identities.tolist()
    assert serial.image_names.tolist() == parallel.image_names.tolist()


def test_capacity_estimate_grows(tmp_path, monkeypatch):
    """Short lines after a long first line: the preallocated array must grow."""
    lines = [_line("a", "0", np.linspace(1, 2, 4) + 0.123456789)] + [_line("b", str(k), [1, 2, 3, 4])
                                                                    for k in range(300)]
    path = _write(tmp_path / "g.jsonl", lines)
    assert len(load_embeddings(path)) == 301


def test_error_in_first_half_stops_the_worker_quickly(tmp_path, monkeypatch):
    import time
    monkeypatch.setattr(E, "_PARALLEL_MIN_BYTES", 0)
    lines = _lines(4000, dim=64)
    lines[1] = "broken\n"
    path = _write(tmp_path / "early.jsonl", lines)
    start = time.perf_counter()
    with pytest.raises(FaceauditError, match=r":2: malformed"):
        load_embeddings(path)
    assert time.perf_counter() - start < 5
