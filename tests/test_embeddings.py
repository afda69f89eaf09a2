"""Embedding files: round trips, the JSON-array form, every error, and the 2-process JSONL reader."""
import json
import warnings

import numpy as np
import pytest

from faceaudit.io import jsonl as E
from faceaudit.errors import FaceauditWarning
from faceaudit.io.embeddings import EmbeddingSet, load_embeddings, save_embeddings
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


def test_error_in_first_half_does_not_wait_for_the_worker(tmp_path, monkeypatch):
    """A bad line in the first half is reported without waiting for the second half's worker:
    here that worker never answers, so waiting for it would end in 'stopped', not the line."""
    import time
    monkeypatch.setattr(E, "_PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(E, "_range_worker", lambda conn, *args: time.sleep(60))
    lines = _lines(4000, dim=64)
    lines[1] = "broken\n"
    path = _write(tmp_path / "early.jsonl", lines)
    with pytest.raises(FaceauditError, match=r":2: malformed"):
        load_embeddings(path)


@pytest.mark.parametrize("metadata", ["[1, 2]", '"text"', "3"])
@pytest.mark.parametrize("suffix", [".jsonl", ".npz"])
def test_metadata_that_is_not_an_object_names_the_file(tmp_path, metadata, suffix):
    eset = _eset()
    path = tmp_path / f"set{suffix}"
    if suffix == ".npz":
        np.savez(path, vectors=eset.vectors, identities=eset.identities, image_names=eset.image_names,
                 metadata=np.array(metadata))
        where = r"set\.npz: 'metadata' must be a JSON object"
    else:
        save_embeddings(eset, path)
        (tmp_path / "set.jsonl.meta.json").write_text(metadata)
        where = r"set\.jsonl\.meta\.json: expected a JSON object"
    with pytest.raises(FaceauditError, match=where):
        load_embeddings(path)


def test_saving_without_metadata_removes_an_old_sidecar(tmp_path):
    path = save_embeddings(_eset(), tmp_path / "set.jsonl")
    assert (tmp_path / "set.jsonl.meta.json").is_file()
    bare = _eset(seed=1)
    bare.metadata = {}
    save_embeddings(bare, path)
    assert not (tmp_path / "set.jsonl.meta.json").exists()
    assert load_embeddings(path).metadata == {"source_file": str(path)}


def test_duplicates_counted_over_the_whole_file(tmp_path):
    lines = _lines(40)
    lines[30:30] = [_line("id2", "9.jpg", [1, 2, 3, 4]), _line("id2", "9.jpg", [2, 2, 3, 4]),
                    _line("id1", "4.jpg", [1, 1, 1, 1])]  # 3 rows too many: id2/9.jpg thrice, id1/4.jpg twice
    path = _write(tmp_path / "dups.jsonl", lines)
    with pytest.warns(FaceauditWarning, match=r"^.*: 3 duplicate \(identity, image_name\) pair\(s\), "
                                              r"e\.g\. (id2/9\.jpg|id1/4\.jpg)$"):
        load_embeddings(path)
    with warnings.catch_warnings():  # same names under other identities are not duplicates
        warnings.simplefilter("error")
        load_embeddings(_write(tmp_path / "ok.jsonl", [_line("a", "1.jpg", [1, 0]), _line("b", "1.jpg", [0, 1]),
                                                        _line("a1", ".jpg", [1, 1])]))


def test_json_array_records_checked_as_parsed(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[{"identity": "a", "image_name": "1", "embedding": [1.0, 2.0]},'
                    ' {"identity": "a", "image_name": "2", "embedding": [1.0, NaN]}, 7]')
    with pytest.raises(FaceauditError, match=r"arr\.json: record 2: embedding has NaN"):
        load_embeddings(path)
    with pytest.warns(FaceauditWarning, match="skipped 2 invalid record"):
        got = load_embeddings(path, skip_invalid=True)
    assert got.image_names.tolist() == ["1"]


@pytest.mark.parametrize("decimals", [5, 0, None])
def test_lines_are_the_same_bytes_with_and_without_orjson(monkeypatch, decimals):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[0, :9] = [1e-5, -1.5e-5, 1e-6, -2.5e-7, 0.0, -0.0, 1e-45, 0.99999, -7e-5]  # every notation
    identities = ["José", 'quote"back\\slash', "tab\there"] * 16 + ["a", "b"]
    names = [f"{k:03d}.jpg" for k in range(50)]
    fast = E.format_jsonl_lines(identities, names, vectors, decimals)
    monkeypatch.setattr(E, "_orjson", None)
    plain = E.format_jsonl_lines(identities, names, vectors, decimals)
    assert plain == fast
    assert fast.startswith(b'{"identity":"Jos\xc3\xa9","image_name":"000.jpg","embedding":[')
