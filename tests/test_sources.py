"""Image sources: folders and archives read in place, unsafe members refused."""
import io
import multiprocessing
import pickle
import tarfile
import zipfile
from pathlib import Path

import pytest

from faceaudit.errors import FaceauditError
from faceaudit.io.sources import open_source, split_member, unsafe_reason

FILES = {
    "alice/1.jpg": b"alice-one",
    "alice/2.PNG": b"alice-two",
    "bob/1.jpg": b"bob-one",
    "bob/notes.txt": b"not an image",
    "carol/sub/3.pgm": b"carol-three",
}


def make_folder(root: Path) -> Path:
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def make_zip(path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in FILES.items():
            archive.writestr(prefix + name, data)
    return path


def make_tar(path: Path, mode: str, prefix: str = "") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, data in reversed(list(FILES.items())):  # stored out of sorted order on purpose
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(params=["folder", "zip", "tar", "tar.gz", "tgz", "tar.xz"])
def source_path(request, tmp_path):
    kind = request.param
    if kind == "folder":
        return make_folder(tmp_path / "data")
    if kind == "zip":
        return make_zip(tmp_path / "data.zip")
    mode = {"tar": "w", "tar.gz": "w:gz", "tgz": "w:gz", "tar.xz": "w:xz"}[kind]
    return make_tar(tmp_path / f"data.{kind}", mode)


def test_every_format_lists_and_reads_the_same(source_path):
    with open_source(source_path) as source:
        assert source.members() == sorted(FILES)
        assert source.images() == ["alice/1.jpg", "alice/2.PNG", "bob/1.jpg", "carol/sub/3.pgm"]
        for member in source.members():
            assert source.read(member) == FILES[member]
        assert source.refused == {}
        # reading twice, backwards, still works (compressed tars seek back)
        assert source.read("alice/1.jpg") == FILES["alice/1.jpg"]
        assert sorted(source.storage_order(source.images())) == source.images()


def test_split_member():
    assert split_member("carol/sub/3.pgm") == ("sub", "3.pgm")
    assert split_member("alice/1.jpg") == ("alice", "1.jpg")


def _read_in_child(source):
    return source.read("bob/1.jpg")


def test_sources_pickle_and_read_in_other_processes(source_path):
    source = open_source(source_path)
    source.read("alice/1.jpg")  # opens a handle that must not travel
    clone = pickle.loads(pickle.dumps(source))
    assert clone.read("alice/2.PNG") == FILES["alice/2.PNG"]
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_read_in_child, (source,)) == FILES["bob/1.jpg"]


def test_find_by_path_prefix_and_name(tmp_path):
    prefixed = open_source(make_zip(tmp_path / "p.zip", prefix="CASIA-WebFace/"))
    assert prefixed.find("alice/1.jpg") == "CASIA-WebFace/alice/1.jpg"
    plain = open_source(make_zip(tmp_path / "q.zip"))
    assert plain.find("CASIA-WebFace/alice/1.jpg") == "alice/1.jpg"
    assert plain.find("./bob/1.jpg") == "bob/1.jpg"
    assert plain.find("elsewhere/3.pgm") == "carol/sub/3.pgm"  # unique file name
    assert plain.find("nobody/1.jpg") is None  # '1.jpg' is ambiguous, no folder match
    assert plain.find("missing.jpg") is None


def test_zip_slip_absolute_and_symlink_members_are_refused(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("good/1.jpg", b"ok")
        archive.writestr("../../escape.jpg", b"evil")
        archive.writestr("/etc/abs.jpg", b"evil")
        link = zipfile.ZipInfo("good/link.jpg")
        link.external_attr = (0o120777 << 16)
        archive.writestr(link, "/etc/passwd")
    before = set(tmp_path.rglob("*"))
    source = open_source(path)
    assert source.members() == ["good/1.jpg"]
    assert source.refused == {"../../escape.jpg": "path with '..'", "/etc/abs.jpg": "absolute path",
                              "good/link.jpg": "symbolic link"}
    with pytest.raises(FaceauditError, match="refused"):
        source.read("../../escape.jpg")
    assert set(tmp_path.rglob("*")) == before  # nothing written anywhere
    assert not (tmp_path.parent / "escape.jpg").exists()


def test_tar_dotdot_links_and_devices_are_refused(tmp_path):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in (("good/1.jpg", b"ok"), ("good/../../up.jpg", b"evil"), ("/abs/2.jpg", b"evil")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, kind in (("good/sym.jpg", tarfile.SYMTYPE), ("good/hard.jpg", tarfile.LNKTYPE),
                           ("good/dev.jpg", tarfile.CHRTYPE), ("good/fifo.jpg", tarfile.FIFOTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    source = open_source(path)
    assert source.members() == ["good/1.jpg"]
    assert source.refused == {
        "good/../../up.jpg": "path with '..'", "/abs/2.jpg": "absolute path",
        "good/sym.jpg": "link", "good/hard.jpg": "link",
        "good/dev.jpg": "device or special file", "good/fifo.jpg": "device or special file",
    }
    assert source.read("good/1.jpg") == b"ok"
    with pytest.raises(FaceauditError, match="refused"):
        source.read("good/sym.jpg")


def test_unsafe_reason():
    assert unsafe_reason("a/b.jpg") is None
    assert unsafe_reason("a/../b.jpg") == "path with '..'"
    assert unsafe_reason("C:/x.jpg") == "absolute path"
    assert unsafe_reason("\\x.jpg") == "absolute path"


@pytest.mark.parametrize("name,content,message", [
    ("broken.zip", b"PK\x03\x04 this is not really a zip", "corrupt"),
    ("broken.tar.gz", b"\x1f\x8b\x08\x00garbage", "corrupt"),
    ("photo.rar", b"Rar!\x1a\x07\x00", "unsupported"),
])
def test_corrupt_or_unsupported_archives_are_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FaceauditError, match=message) as error:
        open_source(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_truncated_zip_is_an_error(tmp_path):
    good = make_zip(tmp_path / "good.zip").read_bytes()
    bad = tmp_path / "cut.zip"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(FaceauditError, match="cut.zip"):
        open_source(bad)


def test_missing_source_is_an_error(tmp_path):
    with pytest.raises(FaceauditError, match="no such folder or archive"):
        open_source(tmp_path / "absent")


def test_reading_an_unknown_member_is_an_error(tmp_path):
    source = open_source(make_folder(tmp_path / "d"))
    with pytest.raises(FaceauditError, match="no member"):
        source.read("zed/9.jpg")
