"""Regenerate the InsightFace reference fixtures used by tests/test_models.py.

The reference code is NOT part of this project. Run this script against an
InsightFace checkout (or just its three backbone files) kept outside the repo::

    python tests/data/make_insightface_fixtures.py /tmp/insightface/recognition/arcface_torch

where that folder holds ``backbones/{__init__,iresnet,mobilefacenet}.py``. It writes

- ``insightface_layouts.json``: for r18, r34, r50, r100, r200 and mbf, every
  ``get_model(name).state_dict()`` entry in order, as "key shape kind", and the
  settings (stride, padding, groups, eps, ...) of every module that holds tensors
  (:func:`module_entries`; in full for r18 and mbf, as a SHA-256 for all);
- ``insightface_outputs.json``: for r18 and mbf, the reference output (eval mode)
  on :func:`seeded_input` with the weights of :func:`seeded_state_dict`.

The two seeded recipes below are imported by the tests, so both sides build the
same weights and input from the same code. Each tensor's values depend only on
its key, shape and the seed, never on the order of the state_dict.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import zlib
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
LAYOUTS = HERE / "insightface_layouts.json"
OUTPUTS = HERE / "insightface_outputs.json"

#: our registry name -> the name arcface_torch's get_model() takes
REFERENCE_NAMES = {
    "iresnet18": "r18",
    "iresnet34": "r34",
    "iresnet50": "r50",
    "iresnet100": "r100",
    "iresnet200": "r200",
    "mobilefacenet": "mbf",
}
OUTPUT_ARCHS = ("r18", "mbf")
WEIGHT_SEED = 0
INPUT_SEED = 1
BATCH = 2
DECIMALS = 5

SOURCE = {
    "repo": "deepinsight/insightface",
    "files": {
        "recognition/arcface_torch/backbones/__init__.py": "5ef98047542b18d911cef1e10c6c02273c4adff3",
        "recognition/arcface_torch/backbones/iresnet.py": "d9cb10e6bda109bc9b4a6ca8b92d7f3342b56492",
        "recognition/arcface_torch/backbones/mobilefacenet.py": "1fe6356f679085298e408d31986e349423c1521c",
    },
}
FORMAT = ("one string per state_dict entry, in state_dict order: 'key shape kind'; shape = dims "
          "joined by 'x' ('-' for a 0-d tensor); kind: p = parameter, f = frozen parameter "
          "(requires_grad False), b = float32 buffer, i = int64 buffer")


def layout_entries(model: torch.nn.Module) -> list[str]:
    """The model's state_dict as 'key shape kind' strings (see FORMAT)."""
    params = dict(model.named_parameters())
    entries = []
    for key, tensor in model.state_dict(keep_vars=True).items():
        shape = "x".join(map(str, tensor.shape)) or "-"
        if key in params:
            kind = "p" if params[key].requires_grad else "f"
        else:
            kind = "i" if tensor.dtype == torch.int64 else "b"
        entries.append(f"{key} {shape} {kind}")
    return entries


def module_entries(model: torch.nn.Module) -> list[str]:
    """'name: Class(settings)' for every module that owns parameters or buffers.

    Catches what a key/shape layout cannot: strides, padding, groups, BatchNorm eps
    and momentum. Parameter-free modules (Dropout, Flatten) are left out.
    """
    return [f"{name}: {_settings(module)}" for name, module in model.named_modules()
            if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))]


def _settings(m: torch.nn.Module) -> str:
    """A module's hyper-parameters, spelled out independently of torch's changing reprs."""
    if isinstance(m, torch.nn.Conv2d):
        return (f"Conv2d({m.in_channels}, {m.out_channels}, k={m.kernel_size}, s={m.stride}, p={m.padding}, "
                f"d={m.dilation}, g={m.groups}, bias={m.bias is not None}, mode={m.padding_mode})")
    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
        return (f"{type(m).__name__}({m.num_features}, eps={m.eps}, momentum={m.momentum}, "
                f"affine={m.affine}, stats={m.track_running_stats})")
    if isinstance(m, torch.nn.PReLU):
        return f"PReLU({m.num_parameters})"
    if isinstance(m, torch.nn.Linear):
        return f"Linear({m.in_features}, {m.out_features}, bias={m.bias is not None})"
    return f"{type(m).__name__}({m.extra_repr()})"


def digest(entries: list[str]) -> str:
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def _generator(key: str, seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))


def seeded_state_dict(template: dict[str, torch.Tensor], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """Deterministic, well-scaled random values for every entry of ``template``.

    conv / linear weights ~ N(0, 1/fan_in); 1-D weights (BN gamma, PReLU slopes)
    ~ U(0.2, 1.2); biases and running means ~ N(0, 0.1^2); running variances
    ~ U(0.5, 1.5); num_batches_tracked = 0.
    """
    out = {}
    for key in sorted(template):
        shape = tuple(template[key].shape)
        leaf = key.rsplit(".", 1)[-1]
        g = _generator(key, seed)
        if leaf == "num_batches_tracked":
            out[key] = torch.zeros(shape, dtype=torch.int64)
        elif leaf == "running_var":
            out[key] = 0.5 + torch.rand(shape, generator=g)
        elif leaf in ("running_mean", "bias"):
            out[key] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            out[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        else:
            out[key] = 0.2 + torch.rand(shape, generator=g)
    return out


def seeded_input(seed: int = INPUT_SEED, batch: int = BATCH) -> torch.Tensor:
    """A ``batch`` x 3 x 112 x 112 input in [-1, 1], as ArcFace preprocessing gives."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 3, 112, 112), generator=g) * 2 - 1


def main(reference_dir: str) -> None:
    sys.path.insert(0, str(Path(reference_dir).resolve()))
    from backbones import get_model  # the InsightFace reference, outside this repo

    layouts, modules, module_digests = {}, {}, {}
    for ours, theirs in REFERENCE_NAMES.items():
        with torch.device("meta"):
            model = get_model(theirs)
        layouts[theirs] = layout_entries(model)
        module_digests[theirs] = digest(module_entries(model))
        if theirs in OUTPUT_ARCHS:
            modules[theirs] = module_entries(model)
    manifest = {"source": SOURCE, "torch": torch.__version__, "format": FORMAT,
                "names": REFERENCE_NAMES, "layouts": layouts,
                "module_settings_sha256": module_digests, "module_settings": modules}
    LAYOUTS.write_text(json.dumps(manifest, separators=(",", ":")) + "\n")

    outputs = {}
    x = seeded_input()
    for theirs in OUTPUT_ARCHS:
        model = get_model(theirs)
        model.load_state_dict(seeded_state_dict(model.state_dict()), strict=True)
        with torch.no_grad():
            y = model.eval()(x)
        outputs[theirs] = [[round(v, DECIMALS) for v in row] for row in y.tolist()]
    OUTPUTS.write_text(json.dumps({
        "source": SOURCE, "torch": torch.__version__,
        "recipe": (f"weights = seeded_state_dict(model.state_dict(), seed={WEIGHT_SEED}); "
                   f"input = seeded_input(seed={INPUT_SEED}, batch={BATCH}); model.eval()(input), "
                   f"rounded to {DECIMALS} decimals (tests/data/make_insightface_fixtures.py)"),
        "outputs": outputs,
    }, separators=(",", ":")) + "\n")
    print(f"wrote {LAYOUTS} ({LAYOUTS.stat().st_size} bytes) and {OUTPUTS} ({OUTPUTS.stat().st_size} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
