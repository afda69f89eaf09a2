"""Shared test helpers: the read-only data in ../shared (found in place, never copied) and the
real models (fetched with faceaudit's own pinned, sha256-checked fetch code)."""
import functools
import os
from pathlib import Path

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
    """The verified file of model ``name`` (sface, yunet); the test is skipped when it cannot be had."""
    found = _fetched_model(name)
    if not isinstance(found, Path):
        pytest.skip(f"the {name} model could not be fetched (offline?): {found}")
    return found
