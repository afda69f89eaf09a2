"""faceaudit: is a (synthetic) face dataset fit to stand in for real faces?

The public names are the one data type every stage works on and its loaders;
the stages live in their own modules (variability, leakage, embed, search).
"""
from faceaudit.embeddings import EmbeddingSet, load_embeddings, save_embeddings
from faceaudit.errors import FaceauditError

__version__ = "0.1.0"
__all__ = ["EmbeddingSet", "FaceauditError", "load_embeddings", "save_embeddings", "__version__"]
