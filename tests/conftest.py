"""Shared test helpers: the read-only data in ../shared (found in place, never copied) and the
real models (fetched with faceaudit's own pinned, sha256-checked fetch code)."""
import functools
import os
from pathlib import Path

import numpy as np
import pytest

from faceaudit.models import fetch
from faceaudit.errors import FaceauditError

REPO = Path(__file__).resolve().parents[1]
# beside the checkout, or where FACEAUDIT_SHARED_DATA says (a GPU machine given a copy of it)
SHARED_DATA = Path(os.environ.get("FACEAUDIT_SHARED_DATA") or REPO.parent / "shared" / "data")


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; the test is skipped with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data folder sits beside the checkout in CI)")
    return path


@pytest.fixture
def shared_data():
    return shared_path


@functools.lru_cache(maxsize=None)
def _fetched_model(name: str) -> Path | str:
    """A verified copy in the repo's Models/ is used in place; otherwise the model is fetched
    into .pytest_cache/faceaudit-models. A failure comes back as its message."""
    if fetch.is_present(name, REPO / "Models"):
        return fetch.model_path(name, REPO / "Models")
    try:
        return fetch.ensure_model(name, REPO / ".pytest_cache" / "faceaudit-models")
    except FaceauditError as exc:
        return str(exc)


def real_model(name: str) -> Path:
    """The verified file of model ``name`` (sface, yunet, arcface-mbf, scrfd: any name
    ``faceaudit models fetch`` knows); the test is skipped when it cannot be had."""
    pytest.importorskip("onnx", reason="reading the real ONNX models needs the onnx package (faceaudit[onnx])")
    found = _fetched_model(name)
    if not isinstance(found, Path):
        pytest.skip(f"the {name} model could not be fetched (offline?): {found}")
    return found


def orl_faces(subjects=range(1, 41), shots=(1, 2), size=112) -> np.ndarray:
    """ORL faces (92x112 grey photos) as RGB uint8 resized to size x size: (N, size, size, 3),
    subject by subject; skipped when ORL is absent."""
    from PIL import Image

    root = shared_path("orl")
    images = []
    for s in subjects:
        for k in shots:
            grey = Image.open(root / f"s{s}" / f"{k}.pgm").convert("RGB")
            images.append(np.asarray(grey.resize((size, size), Image.Resampling.BILINEAR)))
    return np.stack(images)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays."""
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
