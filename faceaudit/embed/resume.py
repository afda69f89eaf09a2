"""Resuming and guarding one embedding output: its files, the half-written last line, the
images already done, the settings check and the lock that keeps a second run away."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from faceaudit.errors import FaceauditError
from faceaudit.io.embeddings import JSONL_SUFFIXES, NPZ_SUFFIX
from faceaudit.io.files import read_json
from faceaudit.io.jsonl import loads

#: settings that must match between a partial output and the run resuming it
RESUME_KEYS = ("arch", "weights_sha256", "embedding_dim", "preprocessing", "flip_tta", "align", "decimals",
               "precision")
#: names of the side files a run writes beside its output; no output may be called so
SIDE_FILE_SUFFIXES = (".partial.jsonl", ".meta.json", ".errors.tsv", ".lock", ".partial.npz")
ERRORS_HEADER = "path\treason\n"


@dataclass
class OutputFiles:
    """Every file of one run: the output, the JSON Lines stream appended to (the output itself, or
    ``<output>.partial.jsonl`` for an ``.npz``), its metadata sidecar and the errors file."""

    output: Path
    stream: Path   # the JSON Lines file appended to
    meta: Path     # the stream's sidecar
    errors: Path

    @classmethod
    def for_output(cls, output: str | os.PathLike) -> "OutputFiles":
        output = Path(output)
        if output.is_dir():
            raise FaceauditError(f"{output}: is a folder; give the output a file name, e.g. {output / 'embeddings.jsonl'}")
        side = next((s for s in SIDE_FILE_SUFFIXES if output.name.lower().endswith(s)), None)
        if side:
            raise FaceauditError(f"{output}: names ending in {side} are kept for a run's side files; "
                                 "choose another output name")
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


def line_key(line: bytes, path: Path, number: int) -> tuple[str, str]:
    """(identity, image_name) of one output line, reading only its head."""
    cut = line.find(b'"embedding":')
    try:
        if cut < 0 or not line.rstrip().endswith(b"]}"):
            raise ValueError("no complete 'embedding' list")
        head = loads(line[:cut].rstrip().rstrip(b",") + b"}")
        return str(head["identity"]), str(head["image_name"])
    except (ValueError, KeyError, TypeError) as exc:
        raise FaceauditError(f"{path}:{number}: malformed line in the partial output ({exc}); "
                             "use --overwrite to start over") from None


def read_done_keys(path: Path) -> set[tuple[str, str]]:
    """(identity, image_name) of every line of a JSON Lines output, reading only the line heads."""
    with open(path, "rb") as handle:
        return {line_key(line, path, number) for number, line in enumerate(handle, 1) if line.strip()}


def read_error_paths(path: Path) -> set[str]:
    paths: set[str] = set()
    if not path.is_file():
        return paths
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle):
            if number == 0 and line == ERRORS_HEADER:
                continue
            if line.endswith("\n") and "\t" in line:
                paths.add(unescape_path(line.split("\t", 1)[0]))
    return paths


def escape_path(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def unescape_path(text: str) -> str:
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



def check_resume(files: OutputFiles, settings: dict) -> dict:
    """The metadata of a partial output, checked against this run's settings."""
    if not files.meta.is_file():
        raise FaceauditError(f"{files.stream} exists but has no {files.meta.name} metadata, so it cannot be "
                             "resumed safely; use --overwrite to start over or choose another output")
    try:
        previous = read_json(files.meta)
    except FaceauditError as exc:
        raise FaceauditError(f"{exc}; use --overwrite to start over") from None
    if not isinstance(previous, dict):
        raise FaceauditError(f"{files.meta}: expected a JSON object, got {type(previous).__name__}; "
                             "use --overwrite to start over")
    compare_settings(files.stream, previous, settings)
    return previous


def check_same_dataset(path: Path, previous: dict, source: str, fingerprint: str) -> str | None:
    """Refuse to resume ``path`` from another dataset than the one it was made from.

    The same folder or archive is the same dataset (it may have grown); elsewhere, a copy with the
    same image names and sizes is the same dataset moved (returns a note saying so).
    """
    before = previous.get("source")
    if before is None or Path(before).resolve() == Path(source):  # older outputs kept the path as typed
        return None
    if previous.get("source_fingerprint") == fingerprint:
        return f"the dataset moved from {before} to {source}; resuming"
    raise FaceauditError(f"{path} was made from another dataset ({before}, not {source}); "
                         "use --overwrite to start over, or another output file")


def compare_settings(path: Path, previous: dict, settings: dict) -> None:
    previous = {"precision": _precision_before_it_was_recorded(previous), **previous}
    diffs = [f"{key}: {previous.get(key)!r} there, {settings[key]!r} now"
             for key in RESUME_KEYS if previous.get(key) != settings[key]]
    if diffs:
        raise FaceauditError(f"{path} was computed with other settings ({'; '.join(diffs)}); "
                             "use --overwrite to start over, or another output file")


def _precision_before_it_was_recorded(previous: dict) -> str:
    """Outputs written before ``precision`` was recorded ran fp32 on CPU and fp16 autocast on CUDA."""
    return "fp16" if str(previous.get("device", "cpu")).startswith("cuda") else "fp32"


def lock_output(output: Path):
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


def unlock_output(handle) -> None:
    """Remove the lock file while still holding it (a run waiting on it then locks a new one)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(handle.name)
    handle.close()
