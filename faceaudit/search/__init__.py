"""Nearest-neighbour search of queries in a reference set: exact, blocked, never an N x M matrix;
or approximate, with one interface over LSH and FAISS.

:mod:`.engine` holds what every exact search shares (checks, error bound, blocks, exact re-scoring);
:mod:`.exact` the searches (best match per query, global top-K pairs, per-query top-k);
:mod:`.chunked` runs long searches in checkpointed chunks that resume after an interruption;
:mod:`.ranks` the exact closed-set identification ranks;
:mod:`.index` one interface (``exact``, ``lsh``, ``faiss-flat``, ``faiss-ivf``, ``faiss-hnsw``) over
:mod:`.backend`, :mod:`.lsh` and :mod:`.faiss_backend`, for in-memory and sharded reference sets.
"""
from faceaudit.search.backend import IndexOptions
from faceaudit.search.chunked import CHECKPOINT_QUERIES, best_match_resumable, top_pairs_resumable
from faceaudit.search.engine import PRECISIONS, as_cosines, block_sizes, exact_pair_scores, exact_scores, reference_parts
from faceaudit.search.exact import BestMatches, Neighbours, TopPairs, best_match, top_k, top_pairs
from faceaudit.search.index import INDEX_KINDS, best_match_index, build_index, search_index, top_pairs_index
from faceaudit.search.ranks import MatedRanks, mated_ranks

__all__ = ["CHECKPOINT_QUERIES", "INDEX_KINDS", "PRECISIONS", "BestMatches", "IndexOptions", "MatedRanks",
           "Neighbours", "TopPairs", "as_cosines", "best_match", "best_match_index", "best_match_resumable",
           "block_sizes", "build_index", "exact_pair_scores", "exact_scores", "mated_ranks", "reference_parts",
           "search_index", "top_k", "top_pairs", "top_pairs_index", "top_pairs_resumable"]
