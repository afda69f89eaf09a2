"""SFace throughput on this machine: our PyTorch module vs onnxruntime, same batch, same run.

    python benchmarks/bench_sface.py [--batch 64] [--repeats 5] [--models-dir Models] [--device cpu]

The model file is taken from ``--models-dir`` (fetched there with the real fetch code when
absent; skipped with a message when that fails, e.g. offline). Inputs are real ORL faces
when ../shared/data/orl is present, else random pixels (throughput does not depend on
content). onnxruntime runs the same file with its batch dimension made dynamic; both use
every core this process may use. Prints images/second, best of ``--repeats`` timed runs
after one warm-up, and the agreement (min cosine) between the two on that batch.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceaudit.models import fetch  # noqa: E402
from faceaudit.errors import FaceauditError  # noqa: E402


def faces(batch: int) -> tuple[np.ndarray, str]:
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


def best_rate(run, batch: int, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return batch / min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models-dir", type=Path, default=REPO / "Models")
    parser.add_argument("--device", default="cpu", help="device for the torch module (cpu, cuda)")
    args = parser.parse_args(argv)

    try:
        path = fetch.ensure_model("sface", args.models_dir, log=print)
    except FaceauditError as exc:
        print(f"bench_sface: skipped, no SFace model: {exc}")
        return 0
    try:
        from faceaudit.models import load_model
        from faceaudit.models.onnx_weights import onnxruntime_session
        session = onnxruntime_session(path)
    except FaceauditError as exc:
        print(f"bench_sface: skipped: {exc}")
        return 0

    x, content = faces(args.batch)
    model, _ = load_model("sface", path, args.device)
    xt = torch.from_numpy(x).to(args.device)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def run_torch():
        with torch.inference_mode():
            out = model(xt)
        if out.is_cuda:
            torch.cuda.synchronize()
        return out

    def run_ort():
        return session.run(None, {"data": x})[0]

    ours, theirs = run_torch().float().cpu().numpy(), run_ort()
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    torch_rate = best_rate(run_torch, args.batch, args.repeats)
    ort_rate = best_rate(run_ort, args.batch, args.repeats)

    import onnxruntime

    print(f"SFace 112x112 -> 128-D, batch {args.batch} of {content}, best of {args.repeats} "
          f"({platform.processor() or platform.machine()}, {cpus} usable cores, "
          f"torch {torch.__version__} threads {torch.get_num_threads()}, onnxruntime {onnxruntime.__version__})")
    print(f"  torch module ({args.device}): {torch_rate:8.1f} img/s")
    print(f"  onnxruntime (cpu):   {ort_rate:8.1f} img/s")
    print(f"  torch / onnxruntime: {torch_rate / ort_rate:.2f}x;  min cosine torch vs onnxruntime: {cos.min():.7f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
