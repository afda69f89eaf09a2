"""`faceaudit embed` end to end vs the bare model, per precision; where the input side loses; the
paper's one-image-at-a-time loop; how far each precision is from fp32 on real faces.

    python benchmarks/bench_embed.py [--device cpu|cuda|auto] [--precision P ...] [--arch iresnet100]
                                     [--images N] [--batch-size B] [--workers N] [--threads N]
                                     [--faces DIR] [--sface FILE] [--quick] [--json FILE]

In one run, on this machine, with random weights (speed does not depend on them), for each
``--precision`` (fp32 on CPU; fp32, tf32, bf16 and fp16 on CUDA by default):

1. the bare model: ``Embedder.forward`` on a ready batch on the device, in the pipeline's memory
   layout and precision, L2 normalisation included (the ceiling), timed before and after (2);
2. the pipeline: ``embed_dataset`` over a generated folder of 112x112 JPEGs to the paper's
   JSON Lines (read, decode, batch, copy, normalise, forward, copy back, check, format, fsync),
   timed from the first image read to the last line on disk.

Prints img/s of each and the pipeline's fraction of the bare forward (targets: CPU >= 85%;
CUDA fp32 >= 90%, bf16/fp16 >= 75% and >= 8,000 img/s for iresnet100 on an H100/H200).

Then the input side, each stage alone, as img/s ceilings (which one caps the pipeline): decoding
one image (times the workers), collating a batch, the pinned host-to-device copy (CUDA), formatting
a batch of JSON lines (numpy, and orjson/Python for comparison), the fsync of a batch; and the
whole pipeline with a model that costs nothing (the input side's own ceiling).

Finally the paper's loop (one image at a time, a file append per image), and on CUDA the
deviation of each precision from fp32 on real faces: SFace (``--sface``, needs the onnx
package) on the ORL faces (``--faces``, default ../shared/data/orl): the smallest cosine and the
largest difference of one written value.
"""
from __future__ import annotations

import argparse
import json
import os
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
from faceaudit.embed.embedder import Embedder  # noqa: E402
from faceaudit.models import create_model, get_spec  # noqa: E402

QUIET = dict(progress=False, log=lambda message: None)


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(embedder: Embedder, batch_size: int, images: int, min_seconds: float) -> float:
    """img/s of the model alone on a ready batch on the device, as the pipeline runs it."""
    batch = torch.randint(0, 256, (batch_size, 112, 112, 3), dtype=torch.uint8, device=embedder.device)
    x = embedder.inputs(batch)
    embedder.forward(x)
    embedder.forward(x)
    sync(embedder.device)
    done, start = 0, time.perf_counter()
    while done < images or time.perf_counter() - start < min_seconds:
        embedder.forward(x)
        done += batch_size
    sync(embedder.device)
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


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class Free(torch.nn.Module):
    """A 512-D "model" that costs nothing: pooled pixels through a fixed map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 2 * 2, 512)

    def forward(self, x):
        return self.proj(F.adaptive_avg_pool2d(x, 2).flatten(1))


def input_side(folder: Path, tmp: Path, device: torch.device, batch_size: int, workers) -> dict:
    """img/s ceilings of each input-side stage alone, and of the pipeline with a model that costs nothing."""
    import faceaudit.io.jsonl as jsonl
    from faceaudit.embed.reader import collate_images, default_workers
    from faceaudit.io import jsonl_text
    from faceaudit.io.images import decode_rgb, to_model_uint8

    paths = sorted(folder.glob("*/*.jpg"))[:batch_size]
    raw = [p.read_bytes() for p in paths]
    n = len(raw)
    decode = best_of(lambda: [to_model_uint8(decode_rgb(data)) for data in raw], 3) / n
    items = [(i, to_model_uint8(decode_rgb(data)), None) for i, data in enumerate(raw)]
    collate = best_of(lambda: collate_images(items))
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids, names = [p.parent.name for p in paths], [p.name for p in paths]
    fmt = best_of(lambda: jsonl.format_jsonl_lines(ids, names, vectors, 5))
    saved = jsonl_text.decimal_texts
    jsonl_text.decimal_texts = lambda *a: None  # the value-by-value path (orjson when installed)
    try:
        fmt_general = best_of(lambda: jsonl.format_jsonl_lines(ids, names, vectors, 5), 3)
    finally:
        jsonl_text.decimal_texts = saved
    text = jsonl.format_jsonl_lines(ids, names, vectors, 5)
    with open(tmp / "fsync.jsonl", "ab") as handle:
        def write_sync():
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        fsync = best_of(write_sync)
    n_workers = default_workers(device) if workers is None else workers
    out = {"workers": n_workers, "decode_img_s_per_worker": 1 / decode,
           "decode_img_s": max(n_workers, 1) / decode, "collate_img_s": n / collate,
           "format_numpy_img_s": n / fmt, "format_general_img_s": n / fmt_general,
           "format_general_is": "orjson" if jsonl._orjson is not None else "pure Python",
           "fsync_img_s": n / fsync}
    if device.type == "cuda":
        batch = torch.from_numpy(np.stack([a for _, a, _ in items]))
        pinned = torch.empty_like(batch).pin_memory()

        def copy():
            pinned.copy_(batch)
            pinned.to(device, non_blocking=True)
            sync(device)
        out["pinned_copy_img_s"] = n / best_of(copy)
    free = tmp / "free.pt"
    torch.jit.save(torch.jit.script(Free().eval()), free)
    if len(list(folder.glob("*/*.jpg"))) < 20 * batch_size:  # enough batches to see the steady state
        folder = make_dataset(tmp / "Many", 20 * batch_size)
    summary = embed_dataset(folder, tmp / "free.jsonl", arch="torchscript", weights=free, device=str(device),
                            batch_size=batch_size, workers=workers, overwrite=True, **QUIET)
    out["pipeline_free_model_img_s"] = summary["embedded"] / summary["pipeline_seconds"]
    return out


def real_face_deviation(faces: Path, sface: Path, device: torch.device, precisions, tmp: Path) -> dict:
    """Smallest cosine and largest value difference of each precision to fp32, SFace on real faces."""
    def rows(precision):
        out = tmp / f"faces_{precision}.jsonl"
        embed_dataset(faces, out, arch="sface", weights=sface, device=str(device), precision=precision,
                      overwrite=True, **QUIET)
        return np.array([json.loads(line)["embedding"] for line in out.read_text().splitlines()])

    base, found = rows("fp32"), {}
    for precision in precisions:
        if precision == "fp32":
            continue
        other = rows(precision)
        cosine = (base * other).sum(1) / np.linalg.norm(base, axis=1) / np.linalg.norm(other, axis=1)
        found[precision] = {"min_cosine": float(cosine.min()), "max_abs_difference": float(np.abs(base - other).max()),
                            "images": len(base)}
    return found


def fp16_matmul_peak(device: torch.device, n: int = 8192, repeats: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.float16)
    b = torch.randn(n, n, device=device, dtype=torch.float16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="iresnet100")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--precision", action="append", default=None,
                        help="repeatable (default: fp32 on CPU; fp32, tf32, bf16, fp16 on CUDA)")
    parser.add_argument("--images", type=int, default=None, help="images embedded (default: 96 CPU, 8192 CUDA)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 CPU, 256 CUDA")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: the pipeline's)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--baseline-images", type=int, default=12,
                        help="images for the paper's one-at-a-time loop (default: 12)")
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "data" / "orl",
                        help="real faces for the precision deviation (default: ../shared/data/orl)")
    parser.add_argument("--sface", type=Path, default=REPO / "Models" / "face_recognition_sface_2021dec.onnx")
    parser.add_argument("--quick", action="store_true", help="fewer images and shorter timings")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    precisions = args.precision or (["fp32", "tf32", "bf16", "fp16"] if cuda else ["fp32"])
    batch = args.batch_size or (256 if cuda else 32)
    images = args.images or ((2048 if args.quick else 8192) if cuda else (32 if args.quick else 96))
    min_seconds = 1.0 if args.quick else 3.0
    name = torch.cuda.get_device_name(device) if cuda else f"{platform.processor() or platform.machine()}"
    print(f"bench_embed: {args.arch} on {device} ({name}, {threads} CPU thread(s), load {os.getloadavg()[0]:.2f}); "
          f"torch {torch.__version__}; {images} images, batch {batch}")
    spec = get_spec(args.arch)
    results: dict = {"arch": args.arch, "device": str(device), "device_name": name, "images": images,
                     "batch_size": batch, "torch": torch.__version__, "load_average": os.getloadavg(),
                     "precisions": {}}
    with tempfile.TemporaryDirectory(prefix="bench_embed_") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = tame(create_model(args.arch)).eval()
        weights = tmp / "weights.pth"
        torch.save(model.state_dict(), weights)
        model = model.to(device)
        folder = make_dataset(tmp / "Dataset", images)
        flops = model_flops(model, device)
        results["gflop_per_image"] = flops / 1e9
        print(f"  model: {flops / 1e9:.2f} GFLOP/image")
        bare_images = min(images, 4 * batch)
        for precision in precisions:
            embedder = Embedder(model, spec, device, precision=precision)
            torch.backends.cudnn.benchmark = precision != "fp32"  # as the pipeline sets it
            before = bare_forward(embedder, batch, bare_images, min_seconds)
            summary = embed_dataset(folder, tmp / f"out_{precision}.jsonl", arch=args.arch, weights=weights,
                                    device=str(device), batch_size=batch, workers=args.workers, threads=threads,
                                    precision=precision, **QUIET)
            after = bare_forward(embedder, batch, bare_images, min_seconds)
            bare, pipeline = (before + after) / 2, summary["embedded"] / summary["pipeline_seconds"]
            results["precisions"][precision] = {
                "bare_forward_img_s": bare, "bare_forward_runs": [before, after], "pipeline_img_s": pipeline,
                "fraction_of_bare": pipeline / bare, "layout": str(embedder.layout).split(".")[-1],
                "pipeline_gflop_s": pipeline * flops / 1e9, "fp32_recomputed_batches": summary["fp32_recomputed_batches"]}
            print(f"  {precision:<5} bare forward {bare:10.1f} img/s ({before:.1f} before, {after:.1f} after; "
                  f"{results['precisions'][precision]['layout']}); pipeline {pipeline:10.1f} img/s "
                  f"= {pipeline / bare:.1%} of the bare forward")
        sides = input_side(folder, tmp, device, batch, args.workers)
        results["input_side"] = sides
        print("  input side, each stage alone (img/s it could sustain):")
        print(f"    decode + resize   {sides['decode_img_s']:10.0f}  ({sides['decode_img_s_per_worker']:.0f} per "
              f"worker x {sides['workers']} workers)")
        print(f"    collate           {sides['collate_img_s']:10.0f}")
        if cuda:
            print(f"    pinned H2D copy   {sides['pinned_copy_img_s']:10.0f}")
        print(f"    format (numpy)    {sides['format_numpy_img_s']:10.0f}  ({sides['format_general_is']}: "
              f"{sides['format_general_img_s']:.0f}; one thread, beside the model)")
        print(f"    fsync per batch   {sides['fsync_img_s']:10.0f}")
        print(f"    whole pipeline with a model that costs nothing: {sides['pipeline_free_model_img_s']:.0f} img/s")
        baseline = paper_loop(model, folder, tmp / "paper.json", device, args.baseline_images)
        results["paper_loop_img_s"] = baseline
        best = max(v["pipeline_img_s"] for v in results["precisions"].values())
        print(f"  paper's one-at-a-time loop {baseline:.2f} img/s -> the pipeline is {best / baseline:.1f}x faster")
        if cuda:
            peak = fp16_matmul_peak(device)
            results["fp16_matmul_peak_tflops"] = peak / 1e12
            print(f"  fp16 matmul peak {peak / 1e12:.1f} TFLOP/s (8192^3); the fastest pipeline reaches "
                  f"{best * flops / peak:.1%} of it")
            low = [p for p in precisions if p != "fp32"]
            if low and not (args.faces.is_dir() and args.sface.is_file()):
                print(f"  deviation from fp32 on real faces: not measured ({args.faces} or {args.sface} is absent)")
            elif low:
                try:
                    found = real_face_deviation(args.faces, args.sface, device, low, tmp)
                except Exception as exc:  # e.g. the onnx package is missing
                    print(f"  deviation from fp32 on real faces: not measured ({type(exc).__name__}: {exc})")
                else:
                    results["real_face_deviation"] = found
                    for precision, d in found.items():
                        print(f"  {precision} vs fp32, SFace on {d['images']} faces of {args.faces.name}: smallest "
                              f"cosine {d['min_cosine']:.6f}, largest value difference {d['max_abs_difference']:.1e}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
