"""`faceaudit train`'s training step vs a bare forward + backward + optimizer-step loop on the same batch.

    python benchmarks/bench_train.py [--arch mobilefacenet] [--batch-size 32] [--steps 6] [--epoch-batches 4]
                                     [--rounds 3] [--device cpu|cuda|auto] [--threads N] [--workers N]
                                     [--quick] [--json FILE]

In one run, on this machine, with the same initial weights for both:

1. bare: ``model(x)`` on a ready, normalised, channels-last float batch, a cosine-softmax cross-entropy over
   100 classes, ``zero_grad``, ``backward``, ``SGD.step`` (on CUDA under fp16 autocast with a GradScaler);
2. ours, the step: ``Trainer.step`` on the same batch as uint8 NHWC (normalisation, ArcFace margin head,
   accuracy count, GradScaler bookkeeping included);
3. ours, the epoch: ``Trainer.run_epoch`` over ``--epoch-batches`` batches of a face cache, the notebook's
   augmentations and the DataLoader (``--workers``, default as ``faceaudit train``'s) included, per batch; after an untimed epoch, each of
   ``--rounds`` epochs is followed by as many bare steps, its baseline.

The step loops alternate, one timed step each in turn, so a busy shared machine slows both alike; the
medians are compared. Prints seconds per step, images per second and the fractions ours / bare
(target: the step >= 0.80), and the load average.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceaudit.device import resolve_device  # noqa: E402
from faceaudit.embed import default_threads  # noqa: E402
from faceaudit.io.images import normalize_batch  # noqa: E402
from faceaudit.models import create_model, get_spec  # noqa: E402
from faceaudit.train.augment import NOTEBOOK  # noqa: E402
from faceaudit.train.data import AugmentedFaces, Faces, classification_epoch, default_workers  # noqa: E402
from faceaudit.train.loop import Trainer  # noqa: E402
from faceaudit.train.losses import MarginHead  # noqa: E402

CLASSES = 100


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_step(model, weight, optimizer, scaler, x, labels, device):
    """The floor: forward, a plain cosine-softmax loss, backward, step."""
    with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
        features = model(x)
    logits = 16 * F.linear(F.normalize(features.float()), F.normalize(weight))
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="mobilefacenet")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed steps of each loop (after one warm-up)")
    parser.add_argument("--epoch-batches", type=int, default=4, help="batches of each timed epoch")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs, each followed by as many bare steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core)")
    parser.add_argument("--workers", type=int, default=None, help="augmentation processes (default: faceaudit's)")
    parser.add_argument("--quick", action="store_true", help="batch 8, 3 steps, 2 epoch batches")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.steps, args.epoch_batches, args.rounds = 8, 3, 2, 1
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads or default_threads())
    spec = get_spec(args.arch)
    height, width = spec.input_size
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (args.batch_size, height, width, 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, CLASSES, args.batch_size))

    torch.manual_seed(0)
    backbone = create_model(args.arch)
    head = MarginHead(spec.embedding_dim, CLASSES)
    bare_model = copy.deepcopy(backbone).to(device).to(memory_format=torch.channels_last).train()
    bare_weight = torch.nn.Parameter(head.weight.detach().clone().to(device))
    bare_opt = torch.optim.SGD(list(bare_model.parameters()) + [bare_weight], lr=0.01, momentum=0.5)
    bare_scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    x = normalize_batch(images.to(device), spec.scale, spec.mean, spec.std).contiguous(memory_format=torch.channels_last)
    y = labels.to(device)
    trainer = Trainer(backbone, head, spec, device, lr=0.01, momentum=0.5, weight_decay=0.0, schedule=lambda e: 0.01)

    def ours():
        trainer.step(images, labels)

    def bare():
        bare_step(bare_model, bare_weight, bare_opt, bare_scaler, x, y, device)

    times = {"ours": [], "bare": []}
    for name, step in (("ours", ours), ("bare", bare)):  # warm-up
        step()
    _sync(device)
    for _ in range(args.steps):
        for name, step in (("ours", ours), ("bare", bare)):
            start = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    ours_s, bare_s = float(np.median(times["ours"])), float(np.median(times["bare"]))

    with tempfile.TemporaryDirectory() as folder:  # whole epochs, data path included, alternating with bare steps
        path = Path(folder) / "faces.npy"
        n = args.batch_size * args.epoch_batches
        np.save(path, rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8))
        faces = Faces(path, [f"id{i % CLASSES}/{i}.png" for i in range(n)],
                      np.array([f"id{i % CLASSES}" for i in range(n)]), [])
        dataset = AugmentedFaces(faces, NOTEBOOK, 0)
        plan = classification_epoch(np.arange(n), np.arange(n) % CLASSES, args.batch_size, 0, 0)
        workers = default_workers(device) if args.workers is None else args.workers
        epochs, bare_runs = [], []
        trainer.run_epoch(dataset, plan, workers, "warm-up epoch", progress=False)
        for _ in range(args.rounds):
            start = time.perf_counter()
            trainer.run_epoch(dataset, plan, workers, "timed epoch", progress=False)
            _sync(device)
            epochs.append((time.perf_counter() - start) / len(plan.keys))
            start = time.perf_counter()
            for _ in plan.keys:
                bare()
            _sync(device)
            bare_runs.append((time.perf_counter() - start) / len(plan.keys))
        epoch_s, epoch_bare_s = float(np.median(epochs)), float(np.median(bare_runs))

    load = os.getloadavg()
    result = {"arch": spec.name, "device": str(device), "threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "steps": args.steps, "bare_s": bare_s, "ours_step_s": ours_s,
              "ours_epoch_s_per_batch": epoch_s, "bare_s_beside_epochs": epoch_bare_s,
              "step_fraction": bare_s / ours_s, "epoch_fraction": epoch_bare_s / epoch_s,
              "load_average": load, "torch": torch.__version__}
    print(f"{spec.name}, batch {args.batch_size}, {device}, {torch.get_num_threads()} threads; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    print(f"bare forward+backward+step: {bare_s:.3f} s/step ({args.batch_size / bare_s:.1f} img/s)")
    print(f"Trainer.step:               {ours_s:.3f} s/step ({args.batch_size / ours_s:.1f} img/s) = "
          f"{bare_s / ours_s:.1%} of bare (target >= 80%)")
    print(f"Trainer.run_epoch:          {epoch_s:.3f} s/batch ({args.batch_size / epoch_s:.1f} img/s) = "
          f"{epoch_bare_s / epoch_s:.1%} of bare ({epoch_bare_s:.3f} s/step in the same rounds; augmentation "
          f"and DataLoader included)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
