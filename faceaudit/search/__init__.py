"""Nearest-neighbour search of queries in a reference set: exact, blocked, never an N x M matrix.

:mod:`.engine` holds what every search shares (checks, error bound, blocks, exact re-scoring);
:mod:`.exact` the searches (best match per query, global top-K pairs, per-query top-k);
:mod:`.chunked` runs long searches in checkpointed chunks that resume after an interruption.
"""
from faceaudit.search.chunked import CHECKPOINT_QUERIES, best_match_resumable, top_pairs_resumable
from faceaudit.search.engine import PRECISIONS, as_cosines, block_sizes, exact_scores
from faceaudit.search.exact import BestMatches, Neighbours, TopPairs, best_match, top_k, top_pairs

__all__ = ["CHECKPOINT_QUERIES", "PRECISIONS", "BestMatches", "as_cosines", "Neighbours", "TopPairs", "best_match",
           "best_match_resumable", "block_sizes", "exact_scores", "top_k", "top_pairs", "top_pairs_resumable"]
