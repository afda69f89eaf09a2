"""Stage 1: one embedding per image of a dataset folder or archive, batched and resumable.

:func:`embed_dataset` reads images through :mod:`faceaudit.sources` (a folder,
``.zip`` or ``.tar[.gz]`` read in place), decodes and resizes them in
DataLoader worker processes, runs the model on batches under
``torch.inference_mode`` (channels-last; fp16 autocast, pinned memory and
non-blocking copies on CUDA; float32 on every core on CPU) and streams the
paper's JSON Lines to the output from a writer thread, so formatting and
fsync overlap the next batch. Non-finite embeddings stop the run with an error.

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

import contextlib
import datetime as _dt
import functools
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from faceaudit.embeddings import (JSONL_SUFFIXES, NPZ_SUFFIX, format_jsonl_lines, load_embeddings,
                                  save_embeddings)
from faceaudit.errors import FaceauditError
from faceaudit.files import write_json
from faceaudit.images import ImageDecodeError, decode_rgb, normalize_batch, to_model_uint8

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

#: settings that must match between a partial output and the run resuming it
RESUME_KEYS = ("arch", "weights_sha256", "embedding_dim", "preprocessing", "flip_tta", "align", "decimals")
ERRORS_HEADER = "path\treason\n"


def default_workers(device: torch.device) -> int:
    """Decoding processes: CPU inference uses every core for the model, so one
    worker suffices there; a GPU needs several to keep it fed."""
    cpus = _cpu_count()
    if device.type == "cuda":
        return max(1, min(8, cpus - 1))
    return 1 if cpus > 1 else 0


def default_threads() -> int:
    """CPU inference threads: ``$OMP_NUM_THREADS`` when set, else every core this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return _cpu_count()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------- output paths

@dataclass
class OutputFiles:
    output: Path
    stream: Path   # the JSON Lines file appended to
    meta: Path     # the stream's sidecar
    errors: Path

    @classmethod
    def for_output(cls, output: str | os.PathLike) -> "OutputFiles":
        output = Path(output)
        suffix = output.suffix.lower()
        if suffix == NPZ_SUFFIX:
            stream = output.with_name(output.name + ".partial.jsonl")
        elif suffix in JSONL_SUFFIXES:
            stream = output
        else:
            raise FaceauditError(f"{output}: unsupported output type {suffix!r} (use .jsonl, .json or .npz)")
        return cls(output, stream, stream.with_name(stream.name + ".meta.json"),
                   output.with_name(output.name + ".errors.tsv"))

    @property
    def is_npz(self) -> bool:
        return self.output != self.stream

    def remove_all(self) -> None:
        for path in {self.output, self.stream, self.meta, self.errors,
                     self.output.with_name(self.output.name + ".meta.json")}:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


# ---------------------------------------------------------------- resume helpers

def truncate_to_last_newline(path: Path) -> int:
    """Cut a half-written last line off ``path``; return how many bytes were removed."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "r+b") as handle:
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            handle.seek(start)
            chunk = handle.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        if keep != size:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    return size - keep


def _loads(data: bytes):
    return _orjson.loads(data) if _orjson is not None else json.loads(data)


def read_done_keys(path: Path) -> set[tuple[str, str]]:
    """(identity, image_name) of every line of a JSON Lines output, reading only the line heads."""
    keys: set[tuple[str, str]] = set()
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            cut = line.find(b'"embedding":')
            try:
                if cut < 0 or not line.rstrip().endswith(b"]}"):
                    raise ValueError("no complete 'embedding' list")
                head = _loads(line[:cut].rstrip().rstrip(b",") + b"}")
                keys.add((str(head["identity"]), str(head["image_name"])))
            except (ValueError, KeyError, TypeError) as exc:
                raise FaceauditError(f"{path}:{number}: malformed line in the partial output ({exc}); "
                                     "use --overwrite to start over") from None
    return keys


def read_error_paths(path: Path) -> set[str]:
    paths: set[str] = set()
    if not path.is_file():
        return paths
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle):
            if number == 0 and line == ERRORS_HEADER:
                continue
            if line.endswith("\n") and "\t" in line:
                paths.add(_unescape(line.split("\t", 1)[0]))
    return paths


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------- worker side

class ImageDataset(torch.utils.data.Dataset):
    """Item ``i``: ``(i, uint8 HxWxC array or None, reason or None)``; never raises for a bad image."""

    def __init__(self, source, members: Sequence[str], input_size=(112, 112), channel_order="RGB",
                 aligner=None):
        self.source = source
        # one numpy array, not a list of str objects: forked workers reading it do not touch
        # per-object reference counts, so its pages stay shared however long the run
        self.members = np.array(members, dtype=str) if len(members) else np.array([], dtype="<U1")
        self.input_size = tuple(input_size)
        self.channel_order = channel_order
        self.aligner = aligner

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, index: int):
        member = str(self.members[index])
        try:
            data = self.source.read(member)
        except FaceauditError as exc:
            return index, None, _one_line(f"unreadable: {exc}")
        except OSError as exc:
            return index, None, _one_line(f"unreadable: {exc}")
        try:
            rgb = decode_rgb(data)
            if self.aligner is not None:
                rgb = self.aligner(rgb)
                if rgb is None:
                    return index, None, "no face found"
            return index, to_model_uint8(rgb, self.input_size, self.channel_order), None
        except ImageDecodeError as exc:
            return index, None, _one_line(str(exc))
        except Exception as exc:  # one odd image must not end a two-million-image run
            return index, None, _one_line(f"{type(exc).__name__}: {exc}")


def collate_images(items):
    """Stack the decoded images; failed items pass through as (index, reason)."""
    good = [(i, a) for i, a, _ in items if a is not None]
    failed = [(i, r) for i, a, r in items if a is None]
    batch = torch.from_numpy(np.stack([a for _, a in good])) if good else None
    return [i for i, _ in good], batch, failed


def _worker_init(lock_fd: int | None, _worker_id: int) -> None:
    torch.set_num_threads(1)
    if lock_fd is not None:  # a forked worker must not keep the output's lock alive after its parent
        with contextlib.suppress(OSError):
            os.close(lock_fd)


# ---------------------------------------------------------------- model side

class Embedder:
    """The model with its preprocessing, on one device: uint8 NHWC batch -> unit float32 (N, D).

    Channels-last memory on every device (measured here: +12-25% on CPU for the iresnets
    and mobilefacenet, and what tensor cores want); fp16 autocast on CUDA, float32 on CPU.
    """

    def __init__(self, model: torch.nn.Module, spec, device: torch.device, flip_tta: bool = False):
        self.spec = spec
        self.device = device
        self.flip_tta = flip_tta
        self.cuda = device.type == "cuda"
        self.model = model.eval().to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        x = batch_uint8.to(self.device, non_blocking=True)
        x = normalize_batch(x, self.spec.scale, self.spec.mean, self.spec.std)
        n = x.shape[0]
        if self.flip_tta:
            x = torch.cat([x, x.flip(3)])
        x = x.contiguous(memory_format=torch.channels_last)
        if self.cuda:
            with torch.autocast("cuda", dtype=torch.float16):
                features = self.model(x)
        else:
            features = self.model(x)
        features = features.float()
        if self.flip_tta:
            features = features[:n] + features[n:]
        return F.normalize(features, p=2, dim=1)

    def warm_up(self, batch_size: int, steps: int = 3) -> None:
        height, width = self.spec.input_size
        dummy = torch.zeros((batch_size, height, width, 3), dtype=torch.uint8)
        for _ in range(steps):
            self(dummy)
        if self.cuda:
            torch.cuda.synchronize(self.device)


# ---------------------------------------------------------------- writer thread

def _after_batch(lines_written: int) -> None:
    """Called after each batch is on disk; tests replace it to slow a run down."""


class _Writer:
    """Formats and appends batches (embeddings and errors) in a thread, fsync'ed per batch."""

    def __init__(self, stream: Path, errors: Path, decimals: int | None):
        self.stream = open(stream, "ab")
        new_errors = not errors.exists() or errors.stat().st_size == 0
        self.errors = open(errors, "a", encoding="utf-8", errors="surrogateescape", newline="\n")
        if new_errors:
            self.errors.write(ERRORS_HEADER)
            self._sync(self.errors)
        self.decimals = decimals
        self.written = 0
        self.failed = 0
        self.failure: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, name="faceaudit-embed-writer", daemon=True)
        self._thread.start()

    @staticmethod
    def _sync(handle) -> None:
        handle.flush()
        os.fsync(handle.fileno())

    def write_errors_now(self, rows: Sequence[tuple[str, str]]) -> None:
        if rows:
            self.errors.write("".join(f"{_escape(p)}\t{_one_line(r)}\n" for p, r in rows))
            self._sync(self.errors)
            self.failed += len(rows)

    def submit(self, identities, names, vectors, errors) -> None:
        if self.failure is not None:
            raise self.failure
        self._queue.put((identities, names, vectors, errors))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.failure is not None:
                continue
            try:
                identities, names, vectors, errors = item
                self.write_errors_now(errors)
                if len(identities):
                    vectors = vectors.numpy() if isinstance(vectors, torch.Tensor) else vectors
                    self.stream.write(format_jsonl_lines(identities, names, vectors, self.decimals))
                    self._sync(self.stream)
                    self.written += len(identities)
                _after_batch(self.written)
            except BaseException as exc:  # surfaced to the main thread by submit() / close()
                self.failure = exc

    def _discard_queued(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()

    def close(self, discard: bool = False) -> None:
        """Write what is queued (or, with ``discard``, only the batch being written) and close.

        A Ctrl-C while waiting discards the queued batches (they are redone on resume) and
        still waits for the one being written, so the files end on a whole line.
        """
        if discard:
            self._discard_queued()
        self._queue.put(None)
        interrupted = False
        while self._thread.is_alive():
            try:
                self._thread.join(0.1)
            except KeyboardInterrupt:
                interrupted = True
                self._discard_queued()
                self._queue.put(None)
        self.stream.close()
        self.errors.close()
        if self.failure is not None:
            raise self.failure
        if interrupted:
            raise KeyboardInterrupt


# ---------------------------------------------------------------- the pipeline

@dataclass
class _Plan:
    todo: list[str]
    new_errors: list[tuple[str, str]] = field(default_factory=list)
    total_images: int = 0
    already_done: int = 0
    order: str = "sorted"


def _plan(source, limit: int | None, done_keys: set, error_paths: set) -> _Plan:
    from faceaudit.sources import split_member
    members = source.images()
    order = "sorted"
    if getattr(source, "sequential", False):
        members = source.storage_order(members)
        order = "archive storage order"
    if limit is not None:
        members = members[:limit]
    plan = _Plan(todo=[], total_images=len(members), order=order)
    for member, reason in sorted(getattr(source, "refused", {}).items()):
        if member not in error_paths:
            plan.new_errors.append((member, f"refused archive member: {reason}"))
    first_of_key: dict[tuple[str, str], str] = {}
    for member in members:
        identity, name = split_member(member)
        key = (identity, name)
        if member in error_paths:
            continue
        if not identity:
            plan.new_errors.append((member, "not inside an identity folder"))
            continue
        if key in first_of_key:
            plan.new_errors.append((member, f"duplicate identity/image_name of {first_of_key[key]}"))
            continue
        first_of_key[key] = member
        if key in done_keys:
            plan.already_done += 1
            continue
        plan.todo.append(member)
    return plan


def _settings(arch: str, info: dict, spec, flip_tta: bool, align: str | None, decimals) -> dict:
    preprocessing = spec.preprocessing() if hasattr(spec, "preprocessing") else {}
    preprocessing = dict(preprocessing, resize="PIL bilinear (torchvision Resize), untouched at input size",
                         formula="(pixel * scale - mean) / std, CHW")
    return {
        "arch": spec.name if hasattr(spec, "name") else arch,
        "weights_sha256": info.get("sha256"),
        "embedding_dim": int(info.get("embedding_dim") or getattr(spec, "embedding_dim", 0)) or None,
        "preprocessing": json.loads(json.dumps(preprocessing)),
        "flip_tta": bool(flip_tta),
        "align": align or "none",
        "decimals": decimals,
    }


def _check_resume(files: OutputFiles, settings: dict) -> dict:
    """The metadata of a partial output, checked against this run's settings."""
    if not files.meta.is_file():
        raise FaceauditError(f"{files.stream} exists but has no {files.meta.name} metadata, so it cannot be "
                             "resumed safely; use --overwrite to start over or choose another output")
    try:
        previous = json.loads(files.meta.read_text())
    except json.JSONDecodeError as exc:
        raise FaceauditError(f"{files.meta}: invalid JSON ({exc}); use --overwrite to start over") from None
    if not isinstance(previous, dict):
        raise FaceauditError(f"{files.meta}: expected a JSON object, got {type(previous).__name__}; "
                             "use --overwrite to start over")
    _compare(files.stream, previous, settings)
    return previous


def _compare(path: Path, previous: dict, settings: dict) -> None:
    diffs = [f"{key}: {previous.get(key)!r} there, {settings[key]!r} now"
             for key in RESUME_KEYS if previous.get(key) != settings[key]]
    if diffs:
        raise FaceauditError(f"{path} was computed with other settings ({'; '.join(diffs)}); "
                             "use --overwrite to start over, or another output file")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def embed_dataset(source_path: str | os.PathLike, output_path: str | os.PathLike = "embeddings.jsonl", *,
                  arch: str = "iresnet100", weights: str | os.PathLike | None = None, device: str = "auto",
                  batch_size: int = 64, workers: int | None = None, flip_tta: bool = False,
                  align: str | None = None, models_dir: str | os.PathLike = "Models",
                  decimals: int | None | str = "auto", overwrite: bool = False, limit: int | None = None,
                  threads: int | None = None, progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Embed every image of ``source_path`` (folder, .zip, .tar[.gz]) into ``output_path``.

    ``threads``: CPU inference threads (default :func:`default_threads`).
    ``decimals``: rounding of the written values; ``"auto"`` means 5 (the
    paper's) for JSON Lines and full float32 precision for ``.npz``; None
    writes float32 values in their shortest round-tripping form.
    Returns a summary dict (counts, errors, speed, paths). Raises
    :class:`FaceauditError` for a missing dataset or weights, an absent GPU
    or a partial output made with other settings.
    """
    from faceaudit.device import resolve_device
    from faceaudit.sources import open_source
    import faceaudit.models as models

    log = log or (lambda message: print(message, file=sys.stderr))
    if batch_size <= 0:
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
    torch_device = resolve_device(device)
    spec = models.get_spec(arch)
    source = open_source(source_path)
    align = None if align in (None, "", "none") else str(align).lower()
    aligner = None
    if align is not None:
        from faceaudit.align import create_aligner
        aligner = create_aligner(align, Path(models_dir))

    started = time.perf_counter()
    model, info = models.load_model(arch, weights, torch_device, models_dir)
    settings = _settings(arch, info, spec, flip_tta, align, decimals)

    files.output.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock(files.output)  # before anything is removed or read: another run may be writing
    try:
        if overwrite:
            files.remove_all()
        # a finished .npz: nothing left to do when it was made the same way
        if files.is_npz and files.output.exists() and not files.stream.exists():
            previous = load_embeddings(files.output).metadata
            _compare(files.output, previous, settings)
            log(f"{files.output} is complete ({previous.get('count', '?')} embeddings); "
                "use --overwrite to compute it again")
            return {"output": str(files.output), "complete": True, "embedded": 0,
                    "total": previous.get("count"), "errors": 0, "already_complete": True}
        return _embed_locked(files, source, source_path, spec, model, info, settings, aligner, torch_device,
                             batch_size, workers, flip_tta, limit, threads, progress, decimals, weights,
                             started, log, lock.fileno())
    finally:
        _unlock(lock)


def _lock(output: Path):
    """An exclusive lock on ``<output>.lock``, held for the whole run: two runs must not
    write (or --overwrite) one output. The file is removed when the run ends."""
    path = output.with_name(output.name + ".lock")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return open(path, "ab")
    while True:
        handle = open(path, "ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise FaceauditError(f"{output} is being written by another run (it holds {path.name}); "
                                 "wait for it to end") from None
        try:
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                return handle
        except FileNotFoundError:
            pass
        handle.close()  # locked a file the run before us removed as it ended: lock the new one


def _unlock(handle) -> None:
    """Remove the lock file while still holding it (a run waiting on it then locks a new one)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(handle.name)
    handle.close()


def _embed_locked(files: OutputFiles, source, source_path: Path, spec, model, info: dict, settings: dict, aligner,
                  torch_device: torch.device, batch_size: int, workers, flip_tta: bool, limit, threads,
                  progress: bool, decimals, weights, started: float, log, lock_fd: int | None = None) -> dict:
    from faceaudit import __version__

    previous: dict = {}
    resumed = files.stream.exists() and files.stream.stat().st_size > 0
    if resumed:
        previous = _check_resume(files, settings)
        cut = truncate_to_last_newline(files.stream)
        if cut:
            log(f"{files.stream}: removed a half-written last line ({cut} bytes); it is redone")
        done_keys = read_done_keys(files.stream)
    else:
        done_keys = set()
        with contextlib.suppress(FileNotFoundError):
            files.errors.unlink()  # errors of an output that no longer exists
    if files.errors.exists():
        truncate_to_last_newline(files.errors)
    error_paths = read_error_paths(files.errors)

    plan = _plan(source, limit, done_keys, error_paths)
    if plan.total_images == 0 and not source.refused:
        raise FaceauditError(f"{source_path}: no images found (extensions: jpg jpeg png bmp webp pgm ppm tif)")

    metadata = {
        **settings,
        "weights": str(info.get("weights", weights) or ""),
        "source": str(source_path),
        "source_kind": getattr(source, "kind", ""),
        "order": plan.order,
        "limit": limit,
        "faceaudit_version": __version__,
        "created": previous.get("created", _now()),
        "updated": _now(),
        "device": str(torch_device),
        "complete": False,
        "count": len(done_keys),
        "errors": len(error_paths),
    }
    if previous and previous.get("source") not in (None, str(source_path)):
        log(f"warning: resuming {files.stream} made from {previous.get('source')} with {source_path}")
    write_json(files.meta, metadata)
    if resumed:
        log(f"resuming {files.stream}: {len(done_keys)} embeddings done, {len(plan.todo)} images to go")

    writer = _Writer(files.stream, files.errors, decimals)
    writer.write_errors_now(plan.new_errors)
    embedded_now = 0
    run_started = time.perf_counter()
    finished = False
    try:
        embedded_now = _run(plan, source, spec, model, torch_device, writer, batch_size, workers, flip_tta,
                            aligner, progress, threads, lock_fd)
        finished = True
    finally:
        try:
            writer.close(discard=not finished)
        finally:
            run_seconds = time.perf_counter() - run_started
            metadata.update(count=len(done_keys) + writer.written, errors=len(error_paths) + writer.failed,
                            updated=_now())
            write_json(files.meta, metadata)
    count, errors_total = metadata["count"], metadata["errors"]
    elapsed = time.perf_counter() - started
    if errors_total == 0:  # no errors file means no errors
        with contextlib.suppress(FileNotFoundError):
            files.errors.unlink()

    if files.is_npz:
        if count == 0:
            raise FaceauditError(f"{source_path}: no image could be embedded; see {files.errors}")
        eset = load_embeddings(files.stream)
        metadata.update(complete=True)
        eset.metadata = dict(metadata)
        save_embeddings(eset, files.output)
        files.stream.unlink()
        files.meta.unlink()
    else:
        metadata.update(complete=True)
        write_json(files.meta, metadata)
    return {
        "output": str(files.output),
        "errors_file": str(files.errors) if errors_total else None,
        "complete": True,
        "embedded": embedded_now,
        "already_done": plan.already_done,
        "total": count,
        "errors": writer.failed,
        "errors_total": errors_total,
        "resumed": resumed,
        "seconds": elapsed,
        "pipeline_seconds": run_seconds,
        "images_per_s": (embedded_now + writer.failed) / run_seconds if run_seconds > 0 else 0.0,
        "device": str(torch_device),
        "arch": settings["arch"],
        "weights_sha256": settings["weights_sha256"],
    }


def _run(plan: _Plan, source, spec, model, device: torch.device, writer: _Writer, batch_size: int,
         workers: int | None, flip_tta: bool, aligner, progress: bool, threads: int | None = None,
         lock_fd: int | None = None) -> int:
    from tqdm import tqdm

    from faceaudit.sources import split_member

    if not plan.todo:
        return 0
    if device.type == "cpu":
        torch.set_num_threads(threads or default_threads())
    else:
        torch.backends.cudnn.benchmark = True
    workers = default_workers(device) if workers is None else int(workers)
    dataset = ImageDataset(source, plan.todo, spec.input_size, spec.channel_order, aligner)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_images,
        pin_memory=device.type == "cuda", worker_init_fn=functools.partial(_worker_init, lock_fd) if workers else None,
        prefetch_factor=4 if workers else None, persistent_workers=False)
    embedder = Embedder(model, spec, device, flip_tta)
    if device.type == "cuda":
        embedder.warm_up(batch_size)
    embedded = 0
    bar = tqdm(total=len(plan.todo), unit="img", disable=not progress, dynamic_ncols=True, file=sys.stderr,
               smoothing=0.1)
    pending = None  # the previous batch: fetched from the device while this one computes

    def hand_over(item) -> int:
        vectors, members, errors = item
        if vectors is not None:
            vectors = vectors.cpu()
            bad = ~torch.isfinite(vectors).all(dim=1)
            if bad.any():
                raise FaceauditError(
                    f"the model gave NaN or infinite values for {members[int(bad.nonzero()[0])]!r} "
                    f"({int(bad.sum())} of {len(members)} in its batch): the weights do not suit --arch "
                    f"{spec.name}, or fp16 overflowed (try --device cpu)")
        keys = [split_member(m) for m in members]
        identities = [k[0] for k in keys]
        names = [k[1] for k in keys]
        writer.submit(identities, names, vectors, errors)
        return len(members)

    try:
        for indices, batch, failed in loader:
            errors = [(plan.todo[i], reason) for i, reason in failed]
            vectors = embedder(batch) if batch is not None else None
            if pending is not None:
                embedded += hand_over(pending)
            pending = (vectors, [plan.todo[i] for i in indices], errors)
            bar.update(len(indices) + len(failed))
        if pending is not None:
            embedded += hand_over(pending)
    finally:
        bar.close()
    return embedded


def format_summary(summary: dict) -> str:
    """The one-paragraph report printed at the end of a run."""
    if summary.get("already_complete"):
        return f"{summary['output']}: already complete ({summary.get('total')} embeddings); nothing to do"
    text = (f"embedded {summary['embedded']} image(s) at {summary['images_per_s']:.1f} img/s on "
            f"{summary['device']} ({summary['seconds']:.1f} s in all); "
            f"{summary['output']} holds {summary['total']} embedding(s)")
    if summary.get("already_done"):
        text += f", {summary['already_done']} of them from before"
    if summary.get("errors_total"):
        text += (f"\nskipped {summary['errors_total']} file(s) (unreadable, corrupt, not an image or refused; "
                 f"{summary['errors']} this run), listed in {summary['errors_file']}")
    return text
