"""faceaudit: is a (synthetic) face dataset fit to stand in for real faces?

The public names are the one data type every stage works on and its loaders, plus the
modules most used from Python: ``variability``, ``leakage`` (stages), ``metrics``
(evaluation) and ``search``. They are imported on first use, so ``import faceaudit``
stays light.
"""
import importlib

from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.io.embeddings import EmbeddingSet, load_embeddings, save_embeddings
from faceaudit.version import __version__

_LAZY_MODULES = {
    "variability": "faceaudit.stages.variability",
    "leakage": "faceaudit.stages.leakage",
    "metrics": "faceaudit.evaluate.metrics",
    "search": "faceaudit.search",
}

__all__ = ["EmbeddingSet", "FaceauditError", "FaceauditWarning", "load_embeddings", "save_embeddings",
           "__version__", *_LAZY_MODULES]


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        module = importlib.import_module(_LAZY_MODULES[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'faceaudit' has no attribute {name!r}")
