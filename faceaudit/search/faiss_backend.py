"""FAISS backends (the optional ``faiss`` extra): ``faiss-flat`` (``IndexFlatIP``, exhaustive),
``faiss-ivf`` (``IndexIVFFlat``: k-means lists, ``nprobe`` of them searched) and ``faiss-hnsw``
(``IndexHNSWFlat``, a proximity graph), all on inner products of unit vectors (= cosine).

FAISS finds the candidates; their scores are then re-computed exactly
(:func:`~faceaudit.search.backend.rescore`), so every backend returns the same numbers for the
same pairs. With ``device`` CUDA and a GPU build of FAISS (faiss-gpu) the flat and IVF indexes
run on the GPU. A sharded reference set gets one IVF quantizer, trained once on a seeded sample
of all shards, and one index per shard: the layout of FAISS's ``IndexShards``.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.search.backend import Index, IndexOptions, check_queries, rescore
from faceaudit.search.exact import Neighbours

_ADD_ROWS = 1 << 16           # rows added at a time: a memory-mapped shard is read piece by piece
_MIN_ROWS_PER_LIST = 39       # FAISS's k-means warns below 39 training rows per list
_TRAIN_ROWS_PER_LIST = 256    # ... and uses at most 256 per list (fewer, or fewer than its 25 iterations,
                              # cost recall: 0.86 instead of 0.98 at nprobe 8 on 100k face-like vectors)


def import_faiss():
    """The faiss module, or a one-line error saying what to install."""
    try:
        import faiss
    except ImportError:
        raise FaceauditError("the FAISS backends need FAISS: pip install 'faceaudit[faiss]' (faiss-cpu), "
                             "or faiss-gpu for CUDA; or use --index exact or lsh") from None
    return faiss


def ivf_lists(n_references: int, asked: int | None) -> int:
    """Inverted lists: as asked, else 4 * sqrt(N); never fewer than 39 training rows per list."""
    lists = int(asked) if asked else int(round(4 * math.sqrt(n_references)))
    return max(1, min(lists, n_references // _MIN_ROWS_PER_LIST))


def _on_gpu(faiss, index, options: IndexOptions):
    if not str(options.device).startswith("cuda"):
        return index
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        warnings.warn("this FAISS build has no GPU support (install faiss-gpu); searching on the CPU",
                      FaceauditWarning, stacklevel=3)
        return index
    device = int(str(options.device).partition(":")[2] or 0)
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), device, index)


class FaissIndex(Index):
    kind = "faiss"

    @classmethod
    def prepare(cls, references, options: IndexOptions):
        """For IVF: an empty ``IndexIVFFlat`` whose quantizer is trained (FAISS's k-means, 25
        iterations) on a seeded sample of ``256 x lists`` rows of the whole reference set (every shard)."""
        if cls.kind != "faiss-ivf":
            import_faiss()
            return None
        faiss = import_faiss()
        n, d = len(references), references.shape[1]
        lists = ivf_lists(n, options.ivf_lists)
        rng = np.random.default_rng(options.seed)
        rows = np.sort(rng.choice(n, min(n, _TRAIN_ROWS_PER_LIST * lists), replace=False))
        sample = np.ascontiguousarray(references[rows], dtype=np.float32)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(options.seed)
        index.train(sample)
        return index

    def __init__(self, references: np.ndarray, options: IndexOptions, shared=None):
        super().__init__(references, options)
        faiss = import_faiss()
        d = references.shape[1]
        if self.kind == "faiss-flat":
            index = faiss.IndexFlatIP(d)
        elif self.kind == "faiss-ivf":
            index = faiss.clone_index(shared if shared is not None else self.prepare(references, options))
            index.nprobe = max(1, min(int(options.ivf_probe), index.nlist))
        else:
            index = faiss.IndexHNSWFlat(d, int(options.hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(options.hnsw_ef_construction)
            index.hnsw.efSearch = int(options.hnsw_ef_search)
        if self.kind != "faiss-hnsw":
            index = _on_gpu(faiss, index, options)
        for s in range(0, len(references), _ADD_ROWS):
            index.add(np.ascontiguousarray(references[s:s + _ADD_ROWS], dtype=np.float32))
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> Neighbours:
        q = check_queries(queries, self.references.shape[1])
        _, candidates = self.index.search(q, min(int(k), len(self.references)))
        return rescore(q, self.references, candidates, k)


class FaissFlat(FaissIndex):
    kind = "faiss-flat"


class FaissIVF(FaissIndex):
    kind = "faiss-ivf"


class FaissHNSW(FaissIndex):
    kind = "faiss-hnsw"
