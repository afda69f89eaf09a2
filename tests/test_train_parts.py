"""The parts of `faceaudit train`: the notebook's augmentations against PIL / scipy / their formulas, the
identity-disjoint split, the Siamese tool's pairs against a brute-force listing, the margin heads and the
contrastive loss against their formulas, and the hold-then-cosine schedule."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from faceaudit.errors import FaceauditError
from faceaudit.train import augment as aug
from faceaudit.train.data import siamese_pairs, split_identities
from faceaudit.train.loop import learning_rate
from faceaudit.train.losses import ContrastiveLoss, MarginHead, build_loss


@pytest.fixture(scope="module")
def face():
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (14, 14, 3)).repeat(8, 0).repeat(8, 1)  # blocks: edges and flat areas
    return np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)


def test_greyscale_and_solarize_are_pils(face):
    grey = aug.AUGMENTATIONS["greyscale"](face, None)
    luma = (face.astype(np.int64) @ [19595, 38470, 7471] + 0x8000) >> 16  # ITU-R 601 in 16-bit fixed point
    assert (grey == grey[:, :, :1]).all() and np.array_equal(grey[:, :, 0], luma)
    solar = aug.AUGMENTATIONS["solarize"](face, None)
    assert np.array_equal(solar, np.asarray(ImageOps.solarize(Image.fromarray(face), threshold=128)))


def test_blur_is_a_gaussian_with_mirrored_borders(face):
    from scipy.ndimage import gaussian_filter

    for sigma in (0.25, 0.37, 0.5):
        radius = math.ceil(3 * sigma)
        reference = gaussian_filter(face.astype(np.float64), sigma=(sigma, sigma, 0), mode="mirror",
                                    truncate=radius / sigma)
        out = aug.blur(face, sigma).astype(int)
        assert np.abs(out - reference).max() <= 0.5 + 1e-3  # float32 sums, rounded once
    assert aug.gaussian_kernel(0.5).size == 5 and abs(aug.gaussian_kernel(0.5).sum() - 1) < 1e-6


def test_drawn_parameters_stay_in_the_notebooks_ranges(face):
    for seed in range(20):
        gamma = np.random.default_rng(seed).uniform(*aug.GAMMA)
        expected = np.rint(255 * (face / 255.0) ** gamma).astype(np.uint8)
        assert np.array_equal(aug.AUGMENTATIONS["gamma"](face, np.random.default_rng(seed)), expected)
        bits = int(np.random.default_rng(seed).integers(3, 9))
        quantized = aug.AUGMENTATIONS["quantize"](face, np.random.default_rng(seed)).astype(int)
        step = 1 << (8 - bits)
        assert np.array_equal(quantized, face // step * step + step // 2) and 3 <= bits <= 8
    grey = np.full((112, 112, 3), 128, np.uint8)
    noisy = aug.AUGMENTATIONS["salt-pepper"](grey, np.random.default_rng(0))
    hit = (noisy != 128).any(axis=2)
    assert set(np.unique(noisy[hit])) == {0, 255} and (noisy[hit] == noisy[hit][:, :1]).all()
    assert abs(hit.mean() - aug.SALT_PEPPER_P) < 4 * math.sqrt(0.09 / hit.size)
    assert abs((noisy[hit][:, 0] == 255).mean() - 0.5) < 0.05


def test_augment_names_and_choice(face):
    assert aug.parse_augment("notebook") == aug.NOTEBOOK == aug.parse_augment(None)
    assert aug.parse_augment("none") == () and aug.parse_augment("flip, blur,flip") == ("flip", "blur")
    with pytest.raises(FaceauditError, match="unknown augmentation 'sharpen'"):
        aug.parse_augment("blur,sharpen")
    assert aug.augment(face, (), None) is face
    flipped = aug.augment(face, ("flip",), np.random.default_rng(1))
    assert np.array_equal(flipped, face[:, ::-1])
    picks = [int(np.random.default_rng(s).integers(len(aug.NOTEBOOK))) for s in range(70)]
    assert set(picks) == set(range(7))  # every augmentation is drawn


def test_split_is_identity_disjoint_seeded_and_checked():
    ids = np.repeat([f"p{i}" for i in range(10)], 3)
    split = split_identities(ids, 4, seed=3)
    assert set(ids[split.val_rows]).isdisjoint(ids[split.train_rows]) and len(set(ids[split.val_rows])) == 4
    assert split.classes == sorted(set(ids[split.train_rows]))
    assert (split.labels[split.val_rows] == -1).all()
    assert [split.classes[c] for c in split.labels[split.train_rows]] == list(ids[split.train_rows])
    again, other = split_identities(ids, 4, seed=3), split_identities(ids, 4, seed=4)
    assert again.val_identities == split.val_identities != other.val_identities
    assert len(split_identities(ids, 0.25, seed=3).val_identities) == 4  # at least 4 for two folds
    assert split_identities(ids, 0, seed=3).val_rows.size == 0
    with pytest.raises(FaceauditError, match="1 identity"):
        split_identities(np.array(["a", "a"]), 0, seed=1)
    with pytest.raises(FaceauditError, match="leaves 1 to train on"):
        split_identities(ids, 9, seed=1)
    with pytest.raises(FaceauditError, match="at least 4"):
        split_identities(ids, 2, seed=1)


def test_siamese_pairs_are_every_mated_pair_and_one_negative_each():
    ids = np.array(list("aaabbcddddd"))
    pairs = siamese_pairs(ids, seed=5, epoch=0)
    positives, negatives = pairs[pairs[:, 2] == 1], pairs[pairs[:, 2] == 0]
    brute = {(i, j) for i, j in itertools.combinations(range(ids.size), 2) if ids[i] == ids[j]}
    assert {tuple(sorted(p)) for p in positives[:, :2].tolist()} == brute and len(positives) == len(brute)
    assert len(negatives) == len(positives) and (ids[negatives[:, 0]] != ids[negatives[:, 1]]).all()
    assert sorted(negatives[:, 0]) == sorted(positives[:, 0])  # each positive's anchor gets a negative
    assert np.array_equal(pairs, siamese_pairs(ids, seed=5, epoch=0))
    assert not np.array_equal(pairs, siamese_pairs(ids, seed=5, epoch=1))
    assert len(siamese_pairs(ids, seed=5, epoch=0, limit=4)) == 8
    with pytest.raises(FaceauditError, match="no positive pairs"):
        siamese_pairs(np.array(list("abc")), seed=5, epoch=0)


def test_margin_heads_and_contrastive_loss_follow_their_formulas():
    torch.manual_seed(0)
    features, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    for kind, m in (("arcface", 0.3), ("cosface", 0.35)):
        head = MarginHead(8, 3, kind, scale=16, margin=m)
        cosine = F.normalize(features) @ F.normalize(head.weight).T
        logits = cosine.clone()
        target = cosine[torch.arange(6), labels]
        logits[torch.arange(6), labels] = torch.cos(torch.acos(target) + m) if kind == "arcface" else target - m
        loss, correct = head(features, labels)
        assert torch.allclose(loss, F.cross_entropy(16 * logits, labels), atol=1e-5)
        assert correct == (cosine.argmax(1) == labels).sum()
    head = MarginHead(2, 2, "arcface", scale=1, margin=0.5)  # theta + m beyond pi: cos(theta) - m sin(m)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    loss, _ = head(torch.tensor([[-1.0, 0.01]]), torch.tensor([0]))
    c = -1 / math.hypot(1, 0.01)
    expected = F.cross_entropy(torch.tensor([[c - 0.5 * math.sin(0.5), 0.01 / math.hypot(1, 0.01)]]), torch.tensor([0]))
    assert torch.allclose(loss, expected, atol=1e-5)
    a, b = F.normalize(torch.randn(4, 8)), F.normalize(torch.randn(4, 8))
    same = torch.tensor([1.0, 0.0, 1.0, 0.0])
    d = (a - b).norm(dim=1)
    loss, correct = ContrastiveLoss(1.0)(torch.cat([a, b]), same)
    assert torch.allclose(loss, (same * d ** 2 + (1 - same) * (1 - d).clamp_min(0) ** 2).mean(), atol=1e-6)
    assert correct == ((d < 0.5) == (same > 0)).sum()
    with pytest.raises(FaceauditError, match="--loss"):
        build_loss("triplet", 8, 2)
    with pytest.raises(FaceauditError, match="margin"):
        build_loss("arcface", 8, 2, margin=2.0)


def test_the_notebooks_schedule():
    rates = [learning_rate(e, 0.1, 1e-3, "cosine", hold=10, t_max=5) for e in range(17)]
    assert rates[:10] == [0.1] * 10 and rates[14] == rates[15] == rates[16] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(rates[9:15], rates[10:15]))
    assert rates[12] == pytest.approx(1e-3 + 0.099 * (1 + math.cos(math.pi * 3 / 5)) / 2)
    assert learning_rate(12, 0.1, 1e-3, "constant") == 0.1


def test_val_identities_take_a_count_or_a_fraction():
    import argparse

    from faceaudit.cli.train import _val_identities

    assert _val_identities("10") == 10 and _val_identities("0.25") == 0.25 and _val_identities("0") == 0
    for bad in ("1.5", "-0.2", "-3", "ten"):
        with pytest.raises(argparse.ArgumentTypeError):
            _val_identities(bad)


def test_imprinting_sets_each_class_to_its_mean_direction():
    torch.manual_seed(1)
    head = MarginHead(4, 3)
    untouched = head.weight[2].clone()
    embeddings, labels = torch.randn(5, 4), torch.tensor([0, 0, 1, 1, 1])
    head.imprint(embeddings, labels)
    unit = F.normalize(embeddings)
    for c, rows in ((0, [0, 1]), (1, [2, 3, 4])):
        assert torch.allclose(head.weight[c], F.normalize(unit[rows].mean(0), dim=0), atol=1e-6)
    assert torch.equal(head.weight[2], untouched)  # no embeddings of class 2
