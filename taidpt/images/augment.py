"""Training-time image augmentation in PIL + numpy, deterministic per draw: DualCoOp's recipe
(random resized crop or resize + cutout, then a horizontal flip) under Dassl's ``INPUT.TRANSFORMS``
names. Every random number comes from the generator the caller passes
(:func:`taidpt.utils.seeding.augmentation_rng`, seeded by seed, epoch and index), so a resumed run
and any number of DataLoader workers see the same pixels. See docs/image-prompting.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from taidpt.images.preprocess import CLIP_MEAN, CLIP_STD, resample_filter, to_normalized_array

TRAIN_TRANSFORMS = ("random_resized_crop", "cutout", "random_flip", "normalize")


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run and with which parameters (from ``INPUT.*``)."""

    size: tuple[int, int] = (224, 224)
    transforms: tuple[str, ...] = ("random_resized_crop", "random_flip", "normalize")
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    cutout_n: int = 1
    cutout_len: int = 16
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        unknown = [t for t in self.transforms if t not in TRAIN_TRANSFORMS]
        if unknown:
            raise ValueError(f"INPUT.TRANSFORMS {unknown} are not available for image training "
                             f"(supported: {', '.join(TRAIN_TRANSFORMS)})")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"INPUT.RRCROP_SCALE must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        resample_filter(self.interpolation)


def random_resized_crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
                            rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(left, top, crop width, crop height)`` of a random resized crop (torchvision's rule)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def cutout(pixels: np.ndarray, n_holes: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Copy of ``pixels`` [H, W, 3] uint8 with ``n_holes`` squares of side ``length`` in random colours."""
    out = pixels.copy()
    h, w = out.shape[:2]
    half = length // 2
    for _ in range(int(n_holes)):
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        colour = rng.integers(0, 256, size=3, dtype=np.uint8)
        out[max(y - half, 0) : min(y + length - half, h), max(x - half, 0) : min(x + length - half, w)] = colour
    return out


def augment(img: Image.Image, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One augmented, normalised float32 array [3, H, W] of an RGB image."""
    height, width = cfg.size
    resample = resample_filter(cfg.interpolation)
    crop, hole = "random_resized_crop" in cfg.transforms, "cutout" in cfg.transforms
    if crop and hole:  # the reference's random choice between the two
        crop = bool(rng.random() < 0.5)
        hole = not crop
    if crop:
        left, top, w, h = random_resized_crop_box(img.width, img.height, cfg.crop_scale, cfg.crop_ratio, rng)
        img = img.resize((width, height), resample, box=(left, top, left + w, top + h))
    else:
        img = img.resize((width, height), resample)
    pixels = np.asarray(img, dtype=np.uint8)
    if hole:
        pixels = cutout(pixels, cfg.cutout_n, cfg.cutout_len, rng)
    if "random_flip" in cfg.transforms and rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    return to_normalized_array(Image.fromarray(np.ascontiguousarray(pixels)), cfg.mean, cfg.std)
