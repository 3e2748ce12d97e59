"""Pieces of the image-prompting trainers: augmentation, few-shot sampler, DualCoOp / CoOp models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from taidpt.images.augment import AugmentConfig, augment, cutout, random_resized_crop_box
from taidpt.captions.classes import load_class_list
from taidpt.engine.config import get_cfg_default
from taidpt.images.fewshot import sample_few_shot
from taidpt.networks.image_prompt_models import CoOpModel, DualCoOpModel, DualPromptLearner, dual_logits
from taidpt.images.train_data import load_train_set
from taidpt.images.partial_labels import load_or_create
from taidpt.images.preprocess import to_normalized_array
from taidpt.utils.seeding import augmentation_rng

CLASSES = ["dog", "cat", "car"]


def photo(width: int = 90, height: int = 70, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


# ----------------------------------------------------------------------------- augmentation
ALL = ("random_resized_crop", "cutout", "random_flip", "normalize")


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    cfg = AugmentConfig(size=(64, 48), transforms=ALL, crop_scale=(0.5, 1.0), cutout_len=20)
    img = photo()
    a = augment(img, cfg, augmentation_rng(1, 0, 5))
    assert a.shape == (3, 64, 48) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, augment(img, cfg, augmentation_rng(1, 0, 5)))
    draws = [augment(img, cfg, augmentation_rng(s, e, i)) for s, e, i in ((2, 0, 5), (1, 1, 5), (1, 0, 6))]
    assert all(not np.array_equal(a, d) for d in draws)


def test_normalize_only_is_a_plain_resize():
    img, cfg = photo(), AugmentConfig(size=(32, 32), transforms=("normalize",))
    expected = to_normalized_array(img.resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(augment(img, cfg, augmentation_rng(0, 0, 0)), expected)


def test_flip_mirrors_the_resized_image():
    img = photo()
    plain = augment(img, AugmentConfig(size=(32, 32), transforms=("normalize",)), augmentation_rng(0, 0, 0))
    flip = AugmentConfig(size=(32, 32), transforms=("random_flip", "normalize"))
    flips = [augment(img, flip, augmentation_rng(0, 0, i)) for i in range(12)]
    flipped = [np.array_equal(f, plain[:, :, ::-1]) for f in flips]
    kept = [np.array_equal(f, plain) for f in flips]
    assert all(a or b for a, b in zip(flipped, kept)) and any(flipped) and any(kept)


def test_random_resized_crop_box_stays_inside_and_respects_the_scale():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, w, h = random_resized_crop_box(90, 70, (0.5, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= left and 0 <= top and left + w <= 90 and top + h <= 70
        assert 0.5 * 90 * 70 * 0.9 <= w * h <= 90 * 70


def test_cutout_paints_one_square_in_one_colour_and_copies():
    pixels = np.zeros((40, 40, 3), dtype=np.uint8)
    out = cutout(pixels, 1, 10, np.random.default_rng(3))
    painted = np.any(out != 0, axis=-1)
    assert pixels.max() == 0  # the input is untouched
    ys, xs = np.nonzero(painted)
    assert 0 < painted.sum() <= 100 and painted[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].all()
    assert len({tuple(c) for c in out[painted]}) == 1


def test_unknown_transform_is_refused():
    with pytest.raises(ValueError, match="MLC_Policy"):
        AugmentConfig(transforms=("MLC_Policy", "normalize"))


# ----------------------------------------------------------------------------- few-shot sampler
def test_few_shot_sampler_gives_every_class_k_positives_deterministically():
    rng = np.random.default_rng(0)
    targets = (rng.random((300, 6)) < np.array([0.02, 0.05, 0.1, 0.3, 0.5, 0.7])).astype(np.int8)
    targets[5, 0] = -1  # an ignored entry never counts as a positive
    for k in (1, 2, 4, 8, 16):
        rows = sample_few_shot(targets, k, seed=1)
        assert np.array_equal(rows, np.unique(rows))
        have = (targets[rows] == 1).sum(axis=0)
        assert (have >= np.minimum(k, (targets == 1).sum(axis=0))).all()
        assert len(rows) <= k * targets.shape[1]
        assert np.array_equal(rows, sample_few_shot(targets, k, seed=1))
    assert not np.array_equal(sample_few_shot(targets, 4, seed=1), sample_few_shot(targets, 4, seed=2))
    with pytest.raises(ValueError, match="NUM_SHOTS"):
        sample_few_shot(targets, 0, seed=1)


def test_few_shot_sampler_counts_shared_images_for_every_label():
    targets = np.array([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=np.int8)
    rows = sample_few_shot(targets, 1, seed=0)
    assert len(rows) == 1 and targets[rows[0]].tolist() == [1, 1]  # one image serves both classes


# ----------------------------------------------------------------------------- models
def test_dual_logits_follow_the_reference_formula():
    torch.manual_seed(0)
    norm = torch.nn.functional.normalize
    glob, dense = norm(torch.randn(2, 8), dim=-1), norm(torch.randn(2, 5, 8), dim=-1)
    t_pos, t_neg = norm(torch.randn(3, 8), dim=-1), norm(torch.randn(3, 8), dim=-1)
    z_g, z_l = dual_logits(glob, dense, t_pos, t_neg, 50.0, 20.0)
    for b in range(2):
        for c in range(3):
            pos = [float(dense[b, l] @ t_pos[c]) for l in range(5)]
            neg = [float(dense[b, l] @ t_neg[c]) for l in range(5)]
            w = [math.exp(20 * p) for p in pos]
            local = 50 * sum(wi / sum(w) * (p - n) for wi, p, n in zip(w, pos, neg))
            assert z_l[b, c].item() == pytest.approx(local, rel=1e-4, abs=1e-4)
            assert z_g[b, c].item() == pytest.approx(50 * float(glob[b] @ t_pos[c] - glob[b] @ t_neg[c]), rel=1e-5)


def test_dualcoop_model_scales_scorer_and_reference_checkpoint(tiny_rn):
    torch.manual_seed(0)
    model = DualCoOpModel(tiny_rn, CLASSES, n_ctx=4, csc=True, merge_rate=0.0)
    pl = model.prompt_learner
    assert isinstance(pl, DualPromptLearner) and pl.ctx.shape == pl.ctx_neg.shape == (3, 4, tiny_rn.ln_final.weight.shape[0])
    assert [v.item() for v in pl.scales()] == pytest.approx([50.0, 20.0], rel=1e-6)
    assert {id(p) for p in model.trainable_parameters()} == {id(pl.ctx), id(pl.ctx_double), id(pl.temperature),
                                                              id(pl.spatial_T)}
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        z_g, z_l = model(images)
        scores, s_g, s_l = model.image_scorer()(images)
    assert torch.allclose(z_g, s_g, atol=1e-5) and torch.allclose(z_l, s_l, atol=1e-5) and torch.equal(scores, s_l)

    # a reference Caption_dual state (ctx_neg, fixed-token buffers) loads into a fresh model
    state = {"ctx": torch.randn_like(pl.ctx), "ctx_neg": torch.randn_like(pl.ctx), "temperature": torch.tensor(3.0),
             "spatial_T": torch.tensor(2.0), "token_prefix": torch.zeros(1)}
    other = DualCoOpModel(tiny_rn, CLASSES, n_ctx=4, csc=True)
    other.prompt_learner.load_reference_state(state)
    assert torch.equal(other.prompt_learner.ctx_neg, state["ctx_neg"])
    assert other.prompt_learner.scales()[0].item() == pytest.approx(math.exp(3.0))
    with pytest.raises(KeyError, match="temperature"):
        other.prompt_learner.load_reference_state({"ctx": state["ctx"], "ctx_neg": state["ctx_neg"]})


def test_dualcoop_gradients_reach_both_contexts_and_scales(tiny_rn):
    torch.manual_seed(0)
    model = DualCoOpModel(tiny_rn, CLASSES, n_ctx=4, csc=True)
    z_g, z_l = model(torch.randn(2, 3, 64, 64))
    z_l.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trainable_parameters())


def test_coop_model_ties_the_local_branch_to_the_trained_context(tiny_rn):
    torch.manual_seed(0)
    tied = CoOpModel(tiny_rn, CLASSES, n_ctx=4, train_local=False)
    t_g, t_l = tied.class_embeddings()
    assert torch.equal(t_g, t_l) and tied.trainable_parameters() == [tied.prompt_learner.ctx]
    both = CoOpModel(tiny_rn, CLASSES, n_ctx=4, train_local=True)
    t_g, t_l = both.class_embeddings()
    assert not torch.equal(t_g, t_l) and len(both.trainable_parameters()) == 2


# ----------------------------------------------------------------------------- training splits
def _cfg(root, name: str, class_file):
    cfg = get_cfg_default()
    cfg.DATASET.NAME, cfg.DATASET.ROOT, cfg.DATASET.CLASS_LIST = name, str(root), str(class_file)
    return cfg


def test_coco_train2014_and_nuswide_train_are_read_by_the_core_readers(tmp_path):
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("person\ncar\ndog\n")
    classes = load_class_list(str(classes_file))
    coco = tmp_path / "COCO"
    (coco / "annotations").mkdir(parents=True)
    images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg"} for i in (5, 3, 9)]
    cats = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    anns = [{"id": 1, "image_id": 5, "category_id": 18}, {"id": 2, "image_id": 3, "category_id": 1}]
    (coco / "annotations" / "instances_train2014.json").write_text(json.dumps(
        {"images": images, "categories": cats, "annotations": anns}))
    (coco / "train2014").mkdir()
    for i in (5, 3):  # 9 is listed but missing
        photo(8, 8).save(coco / "train2014" / f"COCO_train2014_{i:012d}.jpg")
    train = load_train_set(_cfg(tmp_path, "COCO2014", classes_file), classes)
    assert train.name == "coco2014_train2014" and train.targets.tolist() == [[1, 0, 0], [0, 0, 1]]
    assert [p.rsplit("_", 1)[-1] for p in train.missing] == ["000000000009.jpg"]
    labels = load_or_create(tmp_path / "mask.npz", train, 0.5, seed=1)
    assert int((labels != 0).sum()) == 3 and set(np.unique(labels)) <= {-1, 0, 1}

    nus = tmp_path / "NUSWIDE"
    (nus / "ImageList").mkdir(parents=True)
    (nus / "TrainTestLabels").mkdir()
    (nus / "Concepts81.txt").write_text("person\ncar\ndog\n")
    (nus / "ImageList" / "TrainImagelist.txt").write_text("a\\1.jpg\r\nb\\2.jpg\r\n")
    for concept, vals in {"person": "1\n0\n", "car": "0\n0\n", "dog": "1\n1\n"}.items():
        (nus / "TrainTestLabels" / f"Labels_{concept}_Train.txt").write_text(vals)
    for rel in ("a/1.jpg", "b/2.jpg"):
        (nus / "Flickr" / rel).parent.mkdir(parents=True, exist_ok=True)
        photo(8, 8).save(nus / "Flickr" / rel)
    train = load_train_set(_cfg(tmp_path, "NUSWIDE", classes_file), classes)
    assert train.name == "nuswide_Train" and train.targets.tolist() == [[1, 0, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="TRAIN_ANNOTATION"):
        load_train_set(_cfg(tmp_path, "CSV", classes_file), classes)
