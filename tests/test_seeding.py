"""The seed recipes (``taidpt/utils/seeding.py``): pinned draws per recipe, the negative-seed rule,
and no generator seeded by hand anywhere else in ``taidpt``.

A recipe whose pinned values change changes every result drawn through it (caption order,
augmentation, masks, few-shot sets, the demo's data and pretraining): that must be a deliberate
change, with results, caches and the demo's ``PRETRAIN_VERSION`` reconsidered.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from taidpt.utils import seeding
from taidpt.utils.seeding import (
    augmentation_rng,
    caption_sample_rng,
    demo_item_rng,
    demo_pretraining_order_rng,
    epoch_order_generator,
    epoch_order_seed,
    few_shot_rng,
    is_seeded,
    label_seed,
    loader_generator,
    partial_mask_rng,
    seed_demo_clip_init,
    seed_or_zero,
    set_random_seed,
    synthetic_images_rng,
    validation_split_rng,
)

ROOT = Path(__file__).resolve().parents[1]
BIG = 10**6


@pytest.fixture
def restore_global_rngs() -> Iterator[None]:
    """Leave Python's, numpy's and torch's global generators as the test found them."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


def test_negative_means_unseeded_and_draws_as_zero():
    assert [is_seeded(s) for s in (-5, -1, 0, 3)] == [False, False, True, True]
    assert [seed_or_zero(s) for s in (-5, -1, 0, 3, np.int64(7))] == [0, 0, 0, 3, 7]
    assert [label_seed(c, s) for c in (-1, 0, 2) for s in (-1, 5)] == [0, 5, 0, 0, 2, 2]


@pytest.mark.parametrize("recipe, args", [
    (augmentation_rng, (2, 3)), (few_shot_rng, (4,)), (partial_mask_rng, (0.5,)), (validation_split_rng, ()),
])
def test_unseeded_runs_key_their_generators_with_zero(recipe, args):
    assert np.array_equal(recipe(-1, *args).integers(0, BIG, 4), recipe(0, *args).integers(0, BIG, 4))


def test_epoch_order_is_a_function_of_seed_and_epoch():
    assert epoch_order_seed(3, 2) == 3 * 1_000_003 + 2 and epoch_order_seed(-1, 0) == 0
    assert torch.randperm(10, generator=epoch_order_generator(3, 2)).tolist() == [4, 6, 9, 0, 8, 5, 1, 2, 3, 7]
    assert torch.randperm(10, generator=epoch_order_generator(-1, 0)).tolist() == [4, 1, 7, 5, 3, 9, 0, 8, 6, 2]


@pytest.mark.parametrize("rng, expected", [
    (lambda: validation_split_rng(5).permutation(10), [6, 4, 7, 9, 0, 2, 5, 3, 8, 1]),
    (lambda: augmentation_rng(1, 2, 3).integers(0, BIG, 4), [964015, 670472, 872316, 111014]),
    (lambda: few_shot_rng(1, 4).integers(0, BIG, 4), [603470, 394825, 386859, 850277]),
    (lambda: partial_mask_rng(1, 0.5).integers(0, BIG, 4), [794181, 20837, 217745, 741929]),
    (lambda: caption_sample_rng(0).integers(0, BIG, 4), [850624, 636961, 511136, 269786]),
    (lambda: synthetic_images_rng(0).integers(0, BIG, 4), [850624, 636961, 511136, 269786]),
    (lambda: demo_item_rng(2023, 2, 5).integers(0, BIG, 4), [596087, 822412, 848325, 668693]),
    (lambda: demo_pretraining_order_rng(0).integers(0, BIG, 4), [850624, 636961, 511136, 269786]),
    (lambda: torch.randint(0, BIG, (4,), generator=loader_generator(7)), [741615, 413892, 725721, 975286]),
], ids=["validation_split", "augmentation", "few_shot", "partial_mask", "caption_sample", "synthetic_images",
        "demo_item", "demo_pretraining_order", "test_loader"])
def test_pinned_draws(rng, expected):
    assert [int(v) for v in rng()] == expected


def test_keyed_recipes_separate_their_keys():
    draw = lambda g: g.integers(0, BIG, 4).tolist()  # noqa: E731
    assert len({str(draw(augmentation_rng(*k))) for k in ((1, 2, 3), (1, 2, 4), (1, 3, 3), (2, 2, 3))}) == 4
    assert draw(partial_mask_rng(1, 0.5)) != draw(partial_mask_rng(1, 0.6))
    assert draw(few_shot_rng(1, 4)) != draw(few_shot_rng(1, 8))
    assert draw(demo_item_rng(0, 0, 0)) != draw(demo_item_rng(0, 2, 0))


def test_global_seeding(restore_global_rngs):
    set_random_seed(3)
    assert (random.randint(0, BIG), int(np.random.randint(0, BIG)), torch.randint(0, BIG, (2,)).tolist()) == \
        (249523, 71530, [658986, 761048])
    seed_demo_clip_init(4)
    assert torch.randint(0, BIG, (3,)).tolist() == [361530, 139694, 344631]


# Seeding a generator by hand: what only taidpt/utils/seeding.py may do.
HAND_SEEDED = re.compile(r"default_rng\(|SeedSequence\(|PCG64\(|np\.random\.Generator\(|torch\.Generator\(|"
                         r"manual_seed(_all)?\(|np\.random\.seed\(|random\.seed\(|"
                         r"max\((int\()?(cfg\.SEED|self\.seed|seed)\b|(?i:seed)\)?\s*(>=|<)\s*0\b")


def test_no_generator_is_seeded_outside_the_seeding_module():
    offenders = []
    for path in sorted((ROOT / "taidpt").rglob("*.py")):
        if path == Path(seeding.__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if HAND_SEEDED.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, offenders
