"""`faceaudit embed` end to end vs the bare model, and vs the paper's one-image-at-a-time loop.

    python benchmarks/bench_embed.py [--arch iresnet100] [--images 96] [--batch-size 32]
                                     [--device cpu|cuda|auto] [--workers N] [--threads N]
                                     [--baseline-images 12] [--json FILE]

In one run, on this machine, with random weights (speed does not depend on them):

1. the bare model: batched forward passes on a ready float tensor (the ceiling);
2. the pipeline: ``embed_dataset`` over a generated folder of ``--images`` 112x112 JPEGs
   (read, decode, batch, normalise, forward, L2-normalise, format and fsync the JSON Lines),
   timed from the first image read to the last line on disk, then also with model loading;
3. the paper's loop: one image at a time, open/convert/transform/forward/round/json.dumps and
   an append-open of the output for each image, on ``--baseline-images`` images.

Prints img/s of each, the pipeline's fraction of the bare forward pass (target >= 0.85) and its
speed-up over the paper's loop. On CUDA the forward runs in fp16 autocast, channels-last, and
the script also prints the fraction of the device's fp16 matmul peak (measured here with a
large fp16 matmul) that the pipeline reaches, from the model's FLOPs (torch's FlopCounterMode).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
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
from faceaudit.embed import default_threads, embed_dataset  # noqa: E402
from faceaudit.io.images import normalize_batch  # noqa: E402
from faceaudit.models import create_model, get_spec  # noqa: E402


def make_dataset(root: Path, count: int, identities: int = 8) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    for i in range(count):
        folder = root / f"id_{i % identities:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        noise = rng.integers(-40, 41, (112, 112, 3))
        image = np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:05d}.jpg", quality=95)
    return root


def model_flops(model: torch.nn.Module, device: torch.device) -> float:
    """FLOPs of one 112x112 image (2 per multiply-add), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, 112, 112, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x)
    return float(counter.get_total_flops())


def tame(model: torch.nn.Module) -> torch.nn.Module:
    """Untrained iresnets overflow to NaN over 50 residual blocks: damp each residual branch.
    Same shapes and work; the pipeline refuses non-finite embeddings."""
    with torch.no_grad():
        for block in model.modules():
            if hasattr(block, "bn3") and isinstance(block.bn3, torch.nn.BatchNorm2d):
                block.bn3.weight.mul_(0.05)
    return model


def bare_forward(model, spec, device: torch.device, batch_size: int, images: int, min_seconds: float = 3.0,
                 channels_last: bool = True) -> float:
    """img/s of the model alone on ready float batches (fp16 autocast on CUDA, as the pipeline)."""
    cuda = device.type == "cuda"
    batch = torch.randint(0, 256, (batch_size, 112, 112, 3), dtype=torch.uint8, device=device)
    x = normalize_batch(batch, spec.scale, spec.mean, spec.std)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def step():
        if cuda:
            with torch.autocast("cuda", dtype=torch.float16):
                out = model(x)
        else:
            out = model(x)
        return F.normalize(out.float(), dim=1)

    with torch.inference_mode():
        step()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        done, start = 0, time.perf_counter()
        while done < images or time.perf_counter() - start < min_seconds:
            step()
            done += batch_size
        if cuda:
            torch.cuda.synchronize(device)
        return done / (time.perf_counter() - start)


def paper_loop(model, folder: Path, out: Path, device: torch.device, count: int) -> float:
    """img/s of the replication package's loop: one image at a time, one append per image."""
    from PIL import Image

    paths = sorted(folder.glob("*/*.jpg"))[:count]

    def transform(image):  # transforms.Resize((112,112)), ToTensor(), Normalize(0.5, 0.5)
        if image.size != (112, 112):
            image = image.resize((112, 112), Image.BILINEAR)
        t = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)
        return (t - 0.5) / 0.5

    start = time.perf_counter()
    for path in paths:
        tensor = transform(Image.open(path).convert("RGB")).unsqueeze(0)
        with torch.no_grad():
            features = F.normalize(model(tensor.to(device)), p=2, dim=1).cpu().numpy().flatten()
        entry = {"identity": path.parent.name, "image_name": path.name,
                 "embedding": np.round(features, 5).tolist()}
        with open(out, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
    return len(paths) / (time.perf_counter() - start)


def fp16_matmul_peak(device: torch.device, n: int = 8192, repeats: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.float16)
    b = torch.randn(n, n, device=device, dtype=torch.float16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="iresnet100")
    parser.add_argument("--images", type=int, default=96, help="images embedded by the pipeline (default: 96)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--baseline-images", type=int, default=12,
                        help="images for the paper's one-at-a-time loop (default: 12)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    spec = get_spec(args.arch)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
        images = max(args.images, 20 * args.batch_size)
    else:
        name = f"{platform.processor() or platform.machine()}, {threads} thread(s)"
        images = args.images
    print(f"bench_embed: {args.arch} on {device} ({name}); torch {torch.__version__}; "
          f"{images} images, batch {args.batch_size}")

    results: dict = {"arch": args.arch, "device": str(device), "device_name": name, "images": images,
                     "batch_size": args.batch_size, "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="bench_embed_") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = tame(create_model(args.arch)).eval()
        weights = tmp / "weights.pth"
        torch.save(model.state_dict(), weights)
        model = model.to(device)
        plain = copy.deepcopy(model)  # NCHW, as the paper ran it
        fast = copy.deepcopy(model).to(memory_format=torch.channels_last)  # the pipeline's layout
        folder = make_dataset(tmp / "Dataset", images)
        flops = model_flops(plain, device)
        results["gflop_per_image"] = flops / 1e9
        bare_images = min(images, 2 * args.batch_size)

        bare_nchw = bare_forward(plain, spec, device, args.batch_size, bare_images, channels_last=False)
        bare_before = bare_forward(fast, spec, device, args.batch_size, bare_images)
        summary = embed_dataset(folder, tmp / "out.jsonl", arch=args.arch, weights=weights, device=str(device),
                                batch_size=args.batch_size, workers=args.workers, threads=threads,
                                progress=False, log=lambda message: None)
        bare_after = bare_forward(fast, spec, device, args.batch_size, bare_images)
        bare = (bare_before + bare_after) / 2
        pipeline = summary["embedded"] / summary["pipeline_seconds"]
        whole = summary["embedded"] / summary["seconds"]
        baseline = paper_loop(plain, folder, tmp / "paper.json", device, args.baseline_images)

    results.update(bare_forward_img_s=bare, bare_forward_runs=[bare_before, bare_after],
                   bare_forward_nchw_img_s=bare_nchw, fraction_of_bare_nchw=pipeline / bare_nchw,
                   pipeline_img_s=pipeline,
                   pipeline_with_model_load_img_s=whole, paper_loop_img_s=baseline,
                   fraction_of_bare=pipeline / bare, speedup_over_paper_loop=pipeline / baseline)
    print(f"  model: {flops / 1e9:.2f} GFLOP/image")
    print(f"  bare forward, NCHW     {bare_nchw:9.2f} img/s   (the model as the paper ran it, batched)")
    print(f"  bare forward, ch-last  {bare:9.2f} img/s   (the pipeline's layout; runs before/after: "
          f"{bare_before:.2f}, {bare_after:.2f})")
    print(f"  embed pipeline         {pipeline:9.2f} img/s   = {pipeline / bare:.1%} of the same-layout bare forward "
          f"(target >= 85%), {pipeline / bare_nchw:.1%} of the NCHW one")
    print(f"    with model loading   {whole:9.2f} img/s   ({summary['seconds']:.1f} s for {summary['embedded']} images)")
    print(f"  paper's one-at-a-time  {baseline:9.2f} img/s   -> pipeline is {pipeline / baseline:.2f}x faster")
    print(f"  model compute rate     {pipeline * flops / 1e9:9.1f} GFLOP/s in the pipeline, "
          f"{bare * flops / 1e9:.1f} bare")
    if device.type == "cuda":
        peak = fp16_matmul_peak(device)
        results.update(fp16_matmul_peak_tflops=peak / 1e12, fraction_of_fp16_peak=pipeline * flops / peak)
        print(f"  fp16 matmul peak       {peak / 1e12:9.1f} TFLOP/s (8192^3 matmul, this run) -> pipeline at "
              f"{pipeline * flops / peak:.1%} of it, bare forward at {bare * flops / peak:.1%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
