"""The real offline models on this machine: our PyTorch modules vs onnxruntime, same batch, same run.

    python benchmarks/bench_real_models.py [--models arcface-mbf sface] [--batch 64] [--repeats 10]
                                           [--models-dir Models] [--device cpu] [--quick]

For each model (InsightFace's ArcFace MobileFaceNet ``arcface-mbf`` and OpenCV's SFace), its
file is taken from ``--models-dir`` (fetched there with the real fetch code when absent; the
model is skipped with a message when that fails, e.g. offline). Inputs are real ORL faces when
../shared/data/orl is present, else random pixels (throughput does not depend on content),
preprocessed as the model's spec says. onnxruntime runs the same file with its batch dimension
made dynamic; both use every core this process may use. Prints images/second, best of
``--repeats`` timed runs after one warm-up (the two take turns, so that the load of a shared
machine falls on both alike), their ratio, and how far apart the two outputs are on that batch
(largest absolute difference, smallest cosine). The CPU time per image (this process, all
threads) is steadier than img/s on a loaded machine. ``--quick``: batch 16, 2 repeats.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceaudit.errors import FaceauditError  # noqa: E402
from faceaudit.models import fetch, get_spec, load_model  # noqa: E402


def faces(batch: int) -> tuple[np.ndarray, str]:
    """``batch`` 112x112 RGB uint8 faces, NCHW float32 0..255."""
    orl = REPO.parent / "shared" / "data" / "orl"
    if orl.is_dir():
        from PIL import Image

        paths = sorted(orl.glob("s*/*.pgm"))[:batch]
        images = [np.asarray(Image.open(p).convert("RGB").resize((112, 112), Image.Resampling.BILINEAR))
                  for p in paths]
        while len(images) < batch:
            images += images[: batch - len(images)]
        return np.stack(images).transpose(0, 3, 1, 2).astype(np.float32), "ORL faces"
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, size=(batch, 3, 112, 112)).astype(np.float32), "random pixels"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def best_rates(runs, batch: int, repeats: int) -> list[tuple[float, float]]:
    """(images per second, CPU milliseconds per image) of each run, best of ``repeats``; the runs
    take turns, so that a shared machine's load falls on both alike."""
    for run in runs:
        run()  # warm-up
    wall, cpu = [float("inf")] * len(runs), [float("inf")] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            start, start_cpu = time.perf_counter(), _cpu_seconds()
            run()
            wall[i] = min(wall[i], time.perf_counter() - start)
            cpu[i] = min(cpu[i], _cpu_seconds() - start_cpu)
    return [(batch / w, 1000 * c / batch) for w, c in zip(wall, cpu)]


def bench(name: str, pixels: np.ndarray, args) -> str:
    """One model: our module and onnxruntime on the same preprocessed batch; the lines to print."""
    from faceaudit.models.onnx_weights import onnxruntime_session

    try:
        path = fetch.ensure_model(name, args.models_dir, log=print)
        session = onnxruntime_session(path)
    except FaceauditError as exc:
        return f"{name}: skipped: {exc}"
    spec = get_spec(name)
    x = ((pixels * spec.scale - spec.mean) / spec.std).astype(np.float32)
    model, _ = load_model(name, path, args.device)
    model = model.to(memory_format=torch.channels_last)  # as the embedding pipeline runs it
    xt = torch.from_numpy(x).to(args.device).contiguous(memory_format=torch.channels_last)
    input_name = session.get_inputs()[0].name

    def run_torch():
        with torch.inference_mode():
            out = model(xt)
        if out.is_cuda:
            torch.cuda.synchronize()
        return out

    def run_ort():
        return session.run(None, {input_name: x})[0]

    ours, theirs = run_torch().float().cpu().numpy(), run_ort()
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    (torch_rate, torch_cpu), (ort_rate, ort_cpu) = best_rates([run_torch, run_ort], len(x), args.repeats)
    return (f"{name}: 112x112 -> {spec.embedding_dim}-D\n"
            f"  torch module ({args.device}): {torch_rate:8.1f} img/s, {torch_cpu:6.1f} CPU ms/img\n"
            f"  onnxruntime (cpu):   {ort_rate:8.1f} img/s, {ort_cpu:6.1f} CPU ms/img\n"
            f"  torch / onnxruntime: {torch_rate / ort_rate:.2f}x img/s, {ort_cpu / torch_cpu:.2f}x by CPU time;  "
            f"largest |difference| "
            f"{np.abs(ours - theirs).max():.1e} (outputs up to {np.abs(theirs).max():.1f}), "
            f"smallest cosine {cos.min():.7f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["arcface-mbf", "sface"], help="default: arcface-mbf sface")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models-dir", type=Path, default=REPO / "Models")
    parser.add_argument("--device", default="cpu", help="device for the torch modules (cpu, cuda)")
    parser.add_argument("--quick", action="store_true", help="batch 16, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = 16, 2
    try:
        import onnxruntime
    except ImportError:
        print("bench_real_models: skipped: onnxruntime is not installed (pip install 'faceaudit[onnx]')")
        return 0

    pixels, content = faces(args.batch)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"batch {args.batch} of {content}, best of {args.repeats} ({platform.processor() or platform.machine()}, "
          f"{cpus} usable cores, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__} "
          f"threads {torch.get_num_threads()}, onnxruntime {onnxruntime.__version__})")
    for name in args.models:
        print(bench(name, pixels, args))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
