"""``faceaudit export``: a trained run's backbone as fp16 weights and an int8 CPU model, and the clustering
project's table, measured: size on disk, images per second on this machine, and verification on the run's
held-out identities next to fp32 (the same pairs ``faceaudit train`` evaluated after each epoch). On CUDA
the fp16 row computes in fp16; on a CPU, which has no fast fp16, in fp32 from the fp16 weights, as
``faceaudit embed`` does with the file there. int8 runs on the CPU.

Files, under ``RUN_DIR/export/``: ``backbone_fp16.pth`` (a half-precision state_dict in the same layout:
``faceaudit embed --arch ARCH --weights`` loads it into fp32), ``backbone_int8.pt`` (TorchScript:
``faceaudit embed --arch torchscript --weights``), ``export.csv`` / ``export.md`` (the table) and
``export.json`` (the table with its settings).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from faceaudit.errors import FaceauditError
from faceaudit.io.files import atomic_write, read_json, write_json
from faceaudit.io.images import normalize_batch
from faceaudit.train.data import cached_faces
from faceaudit.train.evaluation import embed_rows, verification_numbers
from faceaudit.train.export import fp16_state, images_per_second, quantize_int8, save_torchscript, unit_forward
from faceaudit.stages.train import BACKBONE_FILE, SETTINGS_FILE, data_for
from faceaudit.stages.variability import pair_scores

EXPORT_DIR = "export"
COLUMNS = ("precision", "file", "size_mb", "device", "arithmetic", "images_per_s", "speedup", "eer", "accuracy", "accuracy_std",
           "f1", "cosine_to_fp32_mean", "cosine_to_fp32_min")


def _check(run_dir: Path, precisions: Sequence[str], calibration: int, batch_size: int, seconds: float) -> dict:
    unknown = [p for p in precisions if p not in ("fp16", "int8")]
    if unknown:
        raise FaceauditError(f"unknown --precision {unknown[0]!r}; use fp16 and/or int8")
    if calibration <= 0 or batch_size <= 0 or not seconds > 0:
        raise FaceauditError("--calibration, --batch-size and --seconds must be > 0")
    for name in (SETTINGS_FILE, BACKBONE_FILE):
        if not (run_dir / name).is_file():
            raise FaceauditError(f"{run_dir}: no {name}; export a folder made by faceaudit train")
    return read_json(run_dir / SETTINGS_FILE)


def _batches(faces: np.ndarray, rows: np.ndarray, spec, batch_size: int):
    for start in range(0, rows.size, batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(faces[rows[start:start + batch_size]]))
        yield normalize_batch(batch, spec.scale, spec.mean, spec.std).contiguous()


def run(run_dir, precisions: Sequence[str] = ("fp16", "int8"), *, calibration: int = 256, batch_size: int = 32,
        seconds: float = 5.0, device: str = "cpu", threads: int | None = None,
        echo: Callable[[str], None] = print) -> dict:
    """Export, measure and tabulate; returns the table as a list of dicts (also in ``export.json``)."""
    import faceaudit.models as models
    from faceaudit.device import resolve_device
    from faceaudit.embed.embedder import default_threads
    from faceaudit.report.page import markdown_table, write_table

    run_dir = Path(run_dir)
    settings = _check(run_dir, precisions, calibration, batch_size, seconds)
    torch_device = resolve_device(device)
    torch.set_num_threads(threads or default_threads())
    spec = models.get_spec(settings["arch"])
    faces = cached_faces(run_dir)
    split, sets = data_for(settings, faces)
    if not sets:
        raise FaceauditError(f"{run_dir} was trained with --val-identities 0: no held-out faces to verify on")
    val, array, out_dir = sets[0], faces.array(), run_dir / EXPORT_DIR
    bench_rows = np.resize(val.rows, batch_size)  # the first faces, repeated when there are fewer
    bench = next(_batches(array, bench_rows, spec, batch_size))
    model, _ = models.load_model(spec.name, run_dir / BACKBONE_FILE, torch_device)
    table: list[dict] = []

    def measure(precision: str, path: Path, net, forward, ready: torch.Tensor, where: torch.device,
                arithmetic: str) -> None:
        vectors = embed_rows(forward, array, val.rows, batch_size)
        numbers = verification_numbers(pair_scores(vectors, val.pairs), val)
        speed = images_per_second(net, ready, seconds)
        reference = table[0]["_vectors"] if table else vectors
        cosine = np.einsum("ij,ij->i", vectors, reference)
        table.append({"precision": precision, "file": str(path), "size_mb": path.stat().st_size / 1e6,
                      "device": str(where), "arithmetic": arithmetic, "images_per_s": speed,
                      "speedup": speed / table[0]["images_per_s"] if table else 1.0,
                      "eer": numbers["eer"], "accuracy": numbers["accuracy"], "accuracy_std": numbers["accuracy_std"],
                      "f1": numbers["f1"], "cosine_to_fp32_mean": float(cosine.mean()),
                      "cosine_to_fp32_min": float(cosine.min()), "_vectors": vectors})

    measure("fp32", run_dir / BACKBONE_FILE, model, unit_forward(model, spec, torch_device), bench.to(torch_device),
            torch_device, "fp32")
    if "fp16" in precisions:
        path = out_dir / "backbone_fp16.pth"
        with atomic_write(path, "wb") as handle:
            torch.save(fp16_state(model), handle)
        if torch_device.type == "cuda":  # fp16 arithmetic
            half = copy.deepcopy(model).half().eval()
            measure("fp16", path, half, unit_forward(half, spec, torch_device, half=True),
                    bench.to(torch_device).half(), torch_device, "fp16")
        else:  # a CPU has no fast fp16 (32x slower here): the file's weights in fp32, as faceaudit embed loads it
            widened, _ = models.load_model(spec.name, path, torch_device)
            measure("fp16", path, widened, unit_forward(widened, spec, torch_device), bench, torch_device,
                    "fp32 from fp16 weights")
    if "int8" in precisions:
        sample = np.sort(np.random.default_rng(settings["seed"]).permutation(split.train_rows)[:calibration])
        quantized = quantize_int8(model, _batches(array, sample, spec, batch_size))
        path = out_dir / "backbone_int8.pt"
        with atomic_write(path, "wb") as handle:
            save_torchscript(quantized, handle)
        measure("int8", path, quantized, unit_forward(quantized, spec, "cpu"), bench, torch.device("cpu"),
                "int8 (PReLU in fp32)")
    rows = [{key: value for key, value in row.items() if key != "_vectors"} for row in table]
    write_table(out_dir / "export", COLUMNS, [[row[c] for c in COLUMNS] for row in rows])
    write_json(out_dir / "export.json", {"run_dir": str(run_dir), "arch": spec.name, "batch_size": batch_size,
                                         "threads": torch.get_num_threads(), "calibration_faces": calibration,
                                         "quantized_engine": torch.backends.quantized.engine,
                                         "val_identities": val.n_identities, "val_images": int(val.rows.size),
                                         "mated_pairs": int(val.mated.sum()),
                                         "non_mated_pairs": int((~val.mated).sum()), "rows": rows})
    echo(markdown_table(COLUMNS, [[row[c] for c in COLUMNS] for row in rows]))
    return rows
