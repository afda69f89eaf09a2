"""Stage 1: one embedding per image of a dataset folder or archive, batched and resumable.

:func:`embed_dataset` reads images through :mod:`faceaudit.io.sources` (a folder,
``.zip`` or ``.tar[.gz]`` read in place), decodes and resizes them in
DataLoader worker processes, runs the model on batches under
``torch.inference_mode`` in the ``precision`` asked for (fp32 with TF32 off by
default, on every device; pinned memory and non-blocking copies both ways on
CUDA; every core on CPU) and streams the paper's JSON Lines to the output from
a writer thread, so formatting and fsync overlap the next batch. Non-finite
embeddings stop the run with an error (after an fp32 retry of a bf16/fp16 batch).
Under ``torchrun`` the images are split across the ranks (:mod:`.distributed`);
the steps of a run are in :mod:`.steps`.

Files of one run, for ``OUT`` = ``embeddings.jsonl``:

- ``OUT``: paper-format lines, appended and fsynced batch by batch;
- ``OUT.meta.json``: model, weights sha256, preprocessing, options, counts;
  written when the run starts (``"complete": false``) and when it ends;
- ``OUT.errors.tsv``: ``path<TAB>reason`` (after a ``path<TAB>reason`` header) for
  every image skipped (unreadable, corrupt, empty, not an image, refused archive
  member, outside an identity folder, duplicate name, no face found); removed at the
  end of a run that had none;
- ``OUT.lock``: locked (``flock``) for the whole run, so a second run on the same
  output, ``--overwrite`` included, is refused instead of removing files in use;
  removed at the end.

For ``OUT`` = ``embeddings.npz`` the lines stream to ``OUT.partial.jsonl``
(with its own ``.meta.json``), which is converted to ``OUT`` at the end and
removed; an interrupted ``.npz`` run resumes from the partial file.

Resume: a run whose output already exists continues it. The images already in
the output or in the errors file are skipped, a half-written last line is cut
off and redone, and the model, weights and options must equal those recorded
in the metadata (else an error suggests ``--overwrite``). Order: sorted member
paths; a compressed tar is read in its storage order (reading it sorted would
decompress it again for every image).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

from faceaudit import checks
from faceaudit.embed import distributed
from faceaudit.embed.resume import OutputFiles, lock_output, unlock_output
from faceaudit.embed.steps import Job, finished_npz, run_one_process
from faceaudit.errors import FaceauditError


def _settings(arch: str, info: dict, spec, flip_tta: bool, align: str | None, decimals, precision: str) -> dict:
    preprocessing = spec.preprocessing() if hasattr(spec, "preprocessing") else {}
    preprocessing = dict(preprocessing, resize="PIL bilinear (torchvision Resize), untouched at input size",
                         formula="(pixel * scale - mean) / std, CHW")
    if info.get("preprocessing_flags"):  # --arch onnx: what the flags changed from the graph's values
        preprocessing["flags"] = info["preprocessing_flags"]
    return {
        "arch": spec.name if hasattr(spec, "name") else arch,
        "weights_sha256": info.get("sha256"),
        "embedding_dim": int(info.get("embedding_dim") or getattr(spec, "embedding_dim", 0)) or None,
        "preprocessing": json.loads(json.dumps(preprocessing)),
        "flip_tta": bool(flip_tta),
        "align": align or "none",
        "decimals": decimals,
        "precision": precision,
    }


def default_batch_size(device) -> int:
    """Images per batch: 64 on CPU; 256 on CUDA, where a batch must be large for the GPU to be busy."""
    return 256 if device.type == "cuda" else 64


def embed_dataset(source_path: str | os.PathLike, output_path: str | os.PathLike = "embeddings.jsonl", *,
                  arch: str = "iresnet100", weights: str | os.PathLike | None = None, device: str = "auto",
                  batch_size: int | None = None, workers: int | None = None, flip_tta: bool = False,
                  align: str | None = None, models_dir: str | os.PathLike = "Models",
                  decimals: int | None | str = "auto", overwrite: bool = False, limit: int | None = None,
                  threads: int | None = None, progress: bool = True, log: Callable[[str], None] | None = None,
                  weights_option: str = "--weights", precision: str = "fp32",
                  preprocessing: dict | None = None) -> dict:
    """Embed every image of ``source_path`` (folder, .zip, .tar[.gz]) into ``output_path``.

    ``precision``: ``fp32`` (default: IEEE float32 with TF32 off, the CPU's numbers on every
    device), or on CUDA ``tf32``, ``bf16``, ``fp16`` for speed (see :mod:`.embedder`).
    ``preprocessing``: for ``arch="onnx"``, what replaces the input size, channel order,
    mean and std read from the graph (keys ``input_size``, ``channel_order``, ``mean``,
    ``std``); recorded in the metadata and checked on resume.
    ``batch_size``: default :func:`default_batch_size`. ``threads``: CPU inference threads
    (default :func:`~faceaudit.embed.default_threads`).
    ``decimals``: rounding of the written values; ``"auto"`` means 5 (the
    paper's) for JSON Lines and full float32 precision for ``.npz``; None
    writes float32 values in their shortest round-tripping form; a value of decimals that
    rounds an embedding to all zeros stops the run at its first batch.
    ``weights_option``: the caller's name for the weights flag, used in error messages.
    Run under ``torchrun`` with more than one process, each rank embeds its share and rank 0
    merges (:mod:`.distributed`).
    Returns a summary dict (counts, errors, speed, paths). Raises
    :class:`FaceauditError` for a missing dataset or weights, an absent GPU
    or a partial output made with other settings.
    """
    import torch

    from faceaudit.device import resolve_device
    from faceaudit.embed.embedder import default_threads
    from faceaudit.io.sources import open_source
    import faceaudit.models as models

    log = log or (lambda message: print(message, file=sys.stderr))
    if batch_size is not None and batch_size <= 0:
        raise FaceauditError(f"batch size must be > 0, got {batch_size}")
    if workers is not None and workers < 0:
        raise FaceauditError(f"workers must be >= 0, got {workers}")
    if limit is not None and limit <= 0:
        raise FaceauditError(f"limit must be > 0, got {limit}")
    files = OutputFiles.for_output(output_path)
    if decimals == "auto":
        decimals = None if files.is_npz else 5
    if decimals is not None and not (0 <= int(decimals) <= 9):
        raise FaceauditError(f"decimals must be between 0 and 9 (or none), got {decimals}")
    source_path = Path(source_path)
    if not source_path.exists():
        raise FaceauditError(f"{source_path}: dataset folder or archive not found")
    ranks = distributed.from_environment()
    torch_device = resolve_device(device) if ranks is None else distributed.rank_device(device, ranks)
    precision = checks.embed_precision(precision, torch_device.type)
    spec = models.get_spec(arch)
    if precision != "fp32" and spec.name == "onnx":
        raise FaceauditError(f"--precision {precision} is for PyTorch models; --arch onnx runs in onnxruntime, "
                             "in the graph's own precision (use fp32)")
    source = open_source(source_path)
    align = None if align in (None, "", "none") else str(align).lower()
    aligner = None
    if align is not None:
        from faceaudit.faces import create_aligner
        aligner = create_aligner(align, Path(models_dir))

    started = time.perf_counter()
    if torch_device.type == "cpu":  # before loading: an onnxruntime session is opened with this many threads
        torch.set_num_threads(threads or default_threads())
    model, info = models.load_model(arch, weights, torch_device, models_dir, option=weights_option,
                                    preprocessing=preprocessing)
    spec = spec.with_preprocessing(info)  # --arch onnx: read from its file
    job = Job(files=files, source=source, source_path=source_path, spec=spec, model=model, info=info,
              settings=_settings(arch, info, spec, flip_tta, align, decimals, precision), aligner=aligner,
              device=torch_device, batch_size=batch_size or default_batch_size(torch_device), workers=workers,
              limit=limit, threads=threads, progress=progress, decimals=decimals, weights=weights, log=log,
              workers_share=ranks.local_world if ranks else 1, started=started)
    if ranks is not None:
        return distributed.embed_ranks(job, ranks, overwrite)

    files.output.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_output(files.output)  # before anything is removed or read: another run may be writing
    try:
        if overwrite:
            files.remove_all()
            distributed.remove_parts(files)
        distributed.refuse_unmerged_parts(files)
        done = finished_npz(job)  # a finished .npz made the same way: nothing left to do
        if done is not None:
            log(f"{files.output} is complete ({done['total'] if done['total'] is not None else '?'} embeddings); "
                "use --overwrite to compute it again")
            return done
        return run_one_process(job, lock.fileno())
    finally:
        unlock_output(lock)


def format_summary(summary: dict) -> str:
    """The one-paragraph report printed at the end of a run."""
    if summary.get("already_complete"):
        return f"{summary['output']}: already complete ({summary.get('total')} embeddings); nothing to do"
    where = summary["device"] + (f", {summary['ranks']} processes" if summary.get("ranks") else "")
    text = (f"embedded {summary['embedded']} image(s) at {summary['images_per_s']:.1f} img/s on "
            f"{where} in {summary.get('precision', 'fp32')} ({summary['seconds']:.1f} s in all); "
            f"{summary['output']} holds {summary['total']} embedding(s)")
    if summary.get("already_done"):
        text += f", {summary['already_done']} of them from before"
    if summary.get("fp32_recomputed_batches"):
        text += f"; {summary['fp32_recomputed_batches']} batch(es) recomputed in fp32 after a non-finite result"
    if summary.get("errors_total"):
        text += (f"\nskipped {summary['errors_total']} file(s) (unreadable, corrupt, not an image or refused; "
                 f"{summary['errors']} this run), listed in {summary['errors_file']}")
    return text
