"""Stage 1: one embedding per image of a dataset folder or archive, batched and resumable.

``embed_dataset`` is the whole pipeline (:mod:`.pipeline`); its parts are the steps of a run
(:mod:`.steps`), the reader (:mod:`.reader`: what to embed, decoding in workers), the model
side in the precision asked for (:mod:`.embedder`), the writer thread (:mod:`.writer`), resume +
lock (:mod:`.resume`) and the ranks of a torchrun job (:mod:`.distributed`).
"""
from faceaudit.embed.embedder import default_threads
from faceaudit.embed.pipeline import embed_dataset, format_summary

__all__ = ["default_threads", "embed_dataset", "format_summary"]
