"""Training objectives: the ArcFace and CosFace margin heads (a normalised classifier over the training
identities, as InsightFace's arcface_torch) and the Siamese tool's margin contrastive loss on pairs.

Each takes the backbone's float32 features and the batch's targets and returns ``(loss, correct)``:
the mean loss and how many samples the batch got right (classification: the nearest class centre is
the true one; pairs: the distance is on the right side of half the margin).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from faceaudit.errors import FaceauditError

LOSSES = ("arcface", "cosface", "contrastive")
#: (scale, margin) when not given: the notebook's ArcFace (s 16, m 0.3), CosFace's paper margin at the same
#: scale, and a contrastive margin of 1 on unit vectors (distances lie in [0, 2])
DEFAULTS = {"arcface": (16.0, 0.3), "cosface": (16.0, 0.35), "contrastive": (None, 1.0)}


class MarginHead(nn.Module):
    """Cosine classifier with an additive angular (ArcFace: ``cos(theta + m)``) or cosine (CosFace:
    ``cos(theta) - m``) margin on the true class, logits scaled by ``s``, cross-entropy.

    ArcFace's ``cos(theta + m)`` stops falling once ``theta + m`` passes pi; there, as arcface_torch,
    ``cos(theta) - m sin(m)`` takes its place so the logit keeps falling with the angle.
    """

    def __init__(self, embedding_dim: int, classes: int, kind: str = "arcface", scale: float = 16.0,
                 margin: float = 0.3):
        super().__init__()
        if kind not in ("arcface", "cosface"):
            raise FaceauditError(f"unknown margin head {kind!r}; use arcface or cosface")
        self.kind, self.scale, self.margin = kind, float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(classes, embedding_dim).normal_(0.0, 0.01))
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold = math.cos(math.pi - margin)

    @torch.no_grad()
    def imprint(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Each class's weight := the direction of its mean unit embedding (weight imprinting, Qi et al. 2018):
        a pretrained backbone then starts with a head that already knows the classes, so the first
        gradients refine it instead of undoing it. A class without embeddings keeps its weight."""
        sums = torch.zeros_like(self.weight).index_add_(0, labels.to(self.weight.device),
                                                       F.normalize(embeddings.float()).to(self.weight.device))
        present = sums.norm(dim=1) > 0
        self.weight[present] = F.normalize(sums[present])

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cosine = F.linear(F.normalize(features), F.normalize(self.weight)).clamp(-1.0, 1.0)
        target = cosine.gather(1, labels[:, None])
        if self.kind == "arcface":
            sine = (1.0 - target * target).clamp_min(0.0).sqrt()
            shifted = target * self.cos_m - sine * self.sin_m
            shifted = torch.where(target > self.threshold, shifted, target - self.margin * self.sin_m)
        else:
            shifted = target - self.margin
        logits = cosine.scatter(1, labels[:, None], shifted) * self.scale
        correct = (cosine.detach().argmax(1) == labels).sum()
        return F.cross_entropy(logits, labels), correct


class ContrastiveLoss(nn.Module):
    """Hadsell et al.'s margin contrastive loss on L2-normalised embeddings:
    ``same * d^2 + (1 - same) * max(0, margin - d)^2``, averaged over the pairs.

    The batch holds the anchors' features, then their partners' (:func:`faceaudit.train.data.siamese_epoch`).
    """

    def __init__(self, margin: float = 1.0):
        super().__init__()
        self.margin = float(margin)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(features)
        anchors, partners = unit.chunk(2)
        return ((anchors - partners).square().sum(1)).clamp_min(1e-12).sqrt()

    def forward(self, features: torch.Tensor, same: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.distances(features)
        loss = same * d.square() + (1 - same) * (self.margin - d).clamp_min(0.0).square()
        correct = ((d.detach() < self.margin / 2) == (same > 0.5)).sum()
        return loss.mean(), correct


def build_loss(kind: str, embedding_dim: int, classes: int, scale: float | None = None,
               margin: float | None = None) -> nn.Module:
    """The objective ``kind`` (:data:`LOSSES`), with the :data:`DEFAULTS` for what is not given."""
    if kind not in LOSSES:
        raise FaceauditError(f"unknown --loss {kind!r}; use {', '.join(LOSSES)}")
    default_scale, default_margin = DEFAULTS[kind]
    margin = default_margin if margin is None else float(margin)
    if kind == "contrastive":
        if not margin > 0:
            raise FaceauditError(f"--margin of the contrastive loss must be > 0, got {margin}")
        return ContrastiveLoss(margin)
    scale = default_scale if scale is None else float(scale)
    if not scale > 0 or not 0 <= margin < math.pi / 2:
        raise FaceauditError(f"--scale must be > 0 and --margin in [0, pi/2), got {scale} and {margin}")
    return MarginHead(embedding_dim, classes, kind, scale, margin)
