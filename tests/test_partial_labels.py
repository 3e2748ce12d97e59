"""Partial labels (masking, the mask file) and the partial-label losses against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from taidpt.images.partial_labels import load, load_or_create, mask_labels, save, to_partial
from taidpt.networks.partial_losses import image_prompt_loss, partial_asl_loss, partial_bce_loss, partial_ranking_loss
from taidpt.images.readers.common import ImageSet


def full_labels(n: int = 50, c: int = 7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n, c)) < 0.3, 1, -1).astype(np.int8)


def test_to_partial_maps_core_targets():
    core = np.array([[1, 0, -1]], dtype=np.int8)  # positive, negative, ignored (VOC difficult)
    assert to_partial(core).tolist() == [[1, -1, 0]]


@pytest.mark.parametrize("proportion", [0.1, 0.3, 0.5, 0.9])
def test_mask_keeps_exactly_the_proportion_and_never_flips_a_label(proportion):
    labels = full_labels()
    masked = mask_labels(labels, proportion, seed=1)
    assert int((masked != 0).sum()) == round(proportion * labels.size)
    kept = masked != 0
    assert np.array_equal(masked[kept], labels[kept])  # a kept label is the true one


def test_mask_is_deterministic_per_seed_and_proportion():
    labels = full_labels()
    a = mask_labels(labels, 0.5, seed=1)
    assert np.array_equal(a, mask_labels(labels, 0.5, seed=1))
    assert not np.array_equal(a, mask_labels(labels, 0.5, seed=2))
    assert not np.array_equal(a, mask_labels(labels, 0.6, seed=1))
    assert np.array_equal(mask_labels(labels, 1.0, seed=3), labels)


def test_mask_counts_only_known_entries():
    labels = full_labels()
    labels[:, 0] = 0  # unknown from the start (e.g. difficult, ignored)
    masked = mask_labels(labels, 0.5, seed=0)
    assert (masked[:, 0] == 0).all()
    assert int((masked != 0).sum()) == round(0.5 * int((labels != 0).sum()))


def test_mask_refuses_a_bad_proportion():
    with pytest.raises(ValueError, match="PARTIAL_PROPORTION"):
        mask_labels(full_labels(), 0.0, seed=0)


def _image_set(n: int = 20) -> ImageSet:
    targets = (full_labels(n, 4) == 1).astype(np.int8)
    return ImageSet(paths=[f"/data/{i}.jpg" for i in range(n)], targets=targets, classnames=("a", "b", "c", "d"),
                    name="fixture")


def test_mask_file_is_written_reused_and_checked(tmp_path):
    image_set, path = _image_set(), tmp_path / "run" / "partial_labels.npz"
    first = load_or_create(path, image_set, 0.4, seed=3)
    with np.load(path, allow_pickle=False) as data:  # plain arrays, no pickle
        assert set(data.files) == {"labels", "paths", "classnames", "proportion", "seed"}
        assert np.array_equal(data["labels"], first) and list(data["paths"]) == image_set.paths
    # the stored mask wins over a re-draw: overwrite it with another valid mask and it is the one used
    other = mask_labels(to_partial(image_set.targets), 0.4, seed=99)
    save(path, other, image_set.paths, image_set.classnames, 0.4, 3)
    assert np.array_equal(load_or_create(path, image_set, 0.4, seed=3), other)
    with pytest.raises(ValueError, match="proportion 0.4 != 0.5"):
        load(path, image_set.paths, image_set.classnames, 0.5, 3)
    with pytest.raises(ValueError, match="seed 3 != 4"):
        load(path, image_set.paths, image_set.classnames, 0.4, 4)
    with pytest.raises(ValueError, match="images listed"):
        load(path, image_set.paths[::-1], image_set.classnames, 0.4, 3)


# ----------------------------------------------------------------------------- losses
def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_partial_asl_matches_a_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 1.5, 3.0]])
    targets = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 0.0, 1.0]])

    def pos(x: float) -> float:  # gamma+ = 1
        p = _sigmoid(x)
        return -(1 - p) * math.log(p)

    def neg(x: float) -> float:  # gamma- = 2, clip 0.05
        pm = min(1.0, 1 - _sigmoid(x) + 0.05)
        return -((1 - pm) ** 2) * math.log(pm)

    expected = (pos(2.0) + neg(-1.0) + neg(-0.3) + pos(3.0)) / 2  # the unknown entries add nothing; / batch
    assert partial_asl_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_unknown_entries_contribute_nothing_to_any_loss():
    torch.manual_seed(0)
    targets = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 1.0, -1.0, 0.0]])
    for fn in (partial_asl_loss, partial_bce_loss, partial_ranking_loss):
        logits = torch.randn(2, 4, requires_grad=True)
        loss = fn(logits, targets)
        loss.backward()
        assert torch.all(logits.grad[targets == 0] == 0), fn.__name__
        assert torch.any(logits.grad[targets != 0] != 0), fn.__name__
        changed = logits.detach().clone()
        changed[targets == 0] += 100.0  # whatever the model says about unknown labels
        assert fn(changed, targets).item() == pytest.approx(loss.item(), abs=1e-6), fn.__name__


def test_partial_bce_and_ranking_hand_values():
    logits = torch.tensor([[1.0, 0.0, -2.0]])
    targets = torch.tensor([[1.0, 0.0, -1.0]])
    bce = (-math.log(_sigmoid(1.0)) - math.log(1 - _sigmoid(-2.0))) / 2
    assert partial_bce_loss(logits, targets).item() == pytest.approx(bce, rel=1e-6)
    logits = torch.tensor([[0.5, 2.0, 0.0]])
    # one known pair (positive 0.5, negative 0.0); the unknown 2.0 would add max(0, 1 - 0.5 + 2) otherwise
    assert partial_ranking_loss(logits, targets).item() == pytest.approx(1 - 0.5 + 0.0)


def test_image_prompt_loss_selects_the_branch():
    g, loc = torch.tensor([[1.0, -1.0]]), torch.tensor([[-2.0, 3.0]])
    t = torch.tensor([[1.0, -1.0]])
    assert image_prompt_loss("bce", "global", g, loc, t) == partial_bce_loss(g, t)
    assert image_prompt_loss("bce", "local", g, loc, t) == partial_bce_loss(loc, t)
    both = image_prompt_loss("asl", "both", g, loc, t, gamma_neg=4.0, gamma_pos=0.0, clip=0.0)
    assert both.item() == pytest.approx((partial_asl_loss(g, t, 4.0, 0.0, 0.0) + partial_asl_loss(loc, t, 4.0, 0.0, 0.0)).item())
    with pytest.raises(ValueError, match="unknown loss"):
        image_prompt_loss("focal", "local", g, loc, t)
    with pytest.raises(ValueError, match="branch"):
        image_prompt_loss("asl", "middle", g, loc, t)
