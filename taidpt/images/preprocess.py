"""Test-time image preprocessing in numpy + PIL, identical to Dassl's test transform
(``Resize(max(size), BICUBIC) -> CenterCrop -> ToTensor -> Normalize``), operation for operation,
so that an exported model served without torch sees exactly the pixels the PyTorch evaluation saw
(tests check bit-equality against torchvision).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "INTERPOLATIONS",
    "ImageLoadError",
    "PreprocessConfig",
    "center_crop",
    "load_rgb",
    "preprocess",
    "resize_shorter",
    "to_rgb",
    "to_normalized_array",
]

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# Names accepted for ``interpolation`` and the PIL filter each maps to (torchvision uses the
# same PIL filters for PIL inputs).
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class ImageLoadError(OSError):
    """An image file could not be opened or decoded.

    Raised for missing, empty, truncated or undecodable files so that callers can report the
    path and skip or count the image instead of crashing deep inside a long run.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot load image {self.path}: {reason}")

    def __reduce__(self):  # keep the (path, reason) signature when sent across processes
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that defines the test-time preprocessing of one model.

    ``size`` is an int (square crop) or ``(height, width)``; as in Dassl the shorter side is
    first resized to ``max(size)``.
    """

    size: int | tuple[int, int] = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    interpolation: str = "bicubic"
    exif_transpose: bool = False

    def __post_init__(self) -> None:
        _crop_hw(self.size)
        resample_filter(self.interpolation)
        _channel_stats(self.mean, "mean")
        if np.any(_channel_stats(self.std, "std") == 0):
            raise ValueError(f"std must be non-zero, got {self.std}")

    @property
    def out_hw(self) -> tuple[int, int]:
        """The (height, width) of the preprocessed image."""
        return _crop_hw(self.size)

    def __call__(self, img: Image.Image) -> np.ndarray:
        return preprocess(img, self.size, self.mean, self.std, self.interpolation)


def input_size(cfg: Any) -> tuple[int, int]:
    """``(height, width)`` of a config's ``INPUT.SIZE``: the one reading of the input size that
    evaluation, training augmentation, results and export metadata share."""
    size = tuple(int(s) for s in cfg.INPUT.SIZE)
    if len(size) not in (1, 2) or min(size) < 1:
        raise ValueError(f"INPUT.SIZE must be (height, width) in pixels, got {tuple(cfg.INPUT.SIZE)}")
    return (size[0], size[-1])


def resample_filter(interpolation: str) -> Image.Resampling:
    try:
        return INTERPOLATIONS[interpolation.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown interpolation {interpolation!r}; expected one of {sorted(INTERPOLATIONS)}"
        ) from None


def _crop_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        h, w = (int(s) for s in size)
    elif isinstance(size, (tuple, list)) and len(size) == 1:
        h = w = int(size[0])
    else:
        raise ValueError(f"size must be an int or a (height, width) pair, got {size!r}")
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def _channel_stats(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.shape != (3,):
        raise ValueError(f"{name} must have 3 values (one per RGB channel), got {values!r}")
    return arr


def resize_shorter(img: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    """Resize so that the shorter side equals ``size``, keeping the aspect ratio.

    The longer side becomes ``int(size * long / short)`` (truncated, torchvision's rule). An image
    already at the target size is returned unchanged, as torchvision does.
    """
    if int(size) <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    size = int(size)
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resample_filter(interpolation))


def center_crop(img: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Crop the centre ``(height, width)`` region with torchvision's offsets.

    Offsets are ``int(round((H - h) / 2.0))`` and ``int(round((W - w) / 2.0))`` (Python's
    round-half-to-even). An image smaller than the crop is first padded with zeros on each side,
    left/top getting ``(crop - dim) // 2`` and right/bottom the rest, as torchvision does.
    """
    crop_h, crop_w = _crop_hw(size)
    w, h = img.size
    if crop_w > w or crop_h > h:
        pad_l = (crop_w - w) // 2 if crop_w > w else 0
        pad_t = (crop_h - h) // 2 if crop_h > h else 0
        pad_r = (crop_w - w + 1) // 2 if crop_w > w else 0
        pad_b = (crop_h - h + 1) // 2 if crop_h > h else 0
        padded = Image.new(img.mode, (w + pad_l + pad_r, h + pad_t + pad_b), 0)
        padded.paste(img, (pad_l, pad_t))
        img = padded
        w, h = img.size
        if (w, h) == (crop_w, crop_h):
            return img
    top = int(round((h - crop_h) / 2.0))
    left = int(round((w - crop_w) / 2.0))
    return img.crop((left, top, left + crop_w, top + crop_h))


def to_normalized_array(
    img: Image.Image,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> np.ndarray:
    """Convert an RGB image to a float32 ``[3, H, W]`` array: ``(x / 255 - mean) / std``.

    Every step is done in float32 in the same order as ToTensor + Normalize, so the result is
    bit-identical to torchvision's.
    """
    if img.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {img.mode!r}; load it with load_rgb()")
    mean_arr = _channel_stats(mean, "mean")[:, None, None]
    std_arr = _channel_stats(std, "std")[:, None, None]
    if np.any(std_arr == 0):
        raise ValueError(f"std must be non-zero, got {std}")
    x = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    x /= np.float32(255.0)
    x -= mean_arr
    x /= std_arr
    return x


def preprocess(
    img: Image.Image,
    size: int | tuple[int, int],
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    interpolation: str = "bicubic",
) -> np.ndarray:
    """Dassl's test transform: shorter side to ``max(size)``, centre crop ``size``, normalise.

    Returns a float32 ``[3, H, W]`` array. ``img`` must be RGB (see :func:`load_rgb`).
    """
    crop_hw = _crop_hw(size)
    img = resize_shorter(img, max(crop_hw), interpolation)
    img = center_crop(img, crop_hw)
    return to_normalized_array(img, mean, std)


def _sixteen_bit_to_rgb(img: Image.Image) -> Image.Image:
    # PIL's convert() clips 16/32-bit integer values to 255, which turns most 16-bit images
    # white; scale the 0..65535 range down to 0..255 instead.
    arr = np.asarray(img).astype(np.float64)
    arr = np.clip(arr, 0.0, 65535.0) * (255.0 / 65535.0)
    gray = np.rint(arr).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """A decoded image in RGB mode, converted as :func:`load_rgb` converts files (alpha dropped,
    16/32-bit grey scaled to 8 bits); always a new image, independent of ``im``'s file."""
    if im.mode.startswith("I;16") or im.mode == "I":
        return _sixteen_bit_to_rgb(im)
    with warnings.catch_warnings():
        # "Palette images with Transparency expressed in bytes should be converted to
        # RGBA": harmless here (alpha is dropped either way) and noisy over a dataset.
        warnings.filterwarnings("ignore", message="Palette images with Transparency")
        rgb = im.convert("RGB")
    rgb.load()
    return rgb


def load_rgb(path: str | os.PathLike, exif_transpose: bool = False, draft: int | None = None) -> Image.Image:
    """Open an image file and return it fully decoded in RGB mode.

    Conversion follows Dassl's ``Image.open(path).convert("RGB")`` (alpha is dropped, palettes
    expanded, CMYK converted), except for 16/32-bit integer grey images (modes ``I;16*`` and
    ``I``), whose 0..65535 range is scaled to 8 bits instead of clipped. ``exif_transpose``
    applies the EXIF orientation tag (off by default, like Dassl). ``draft`` (a JPEG only; off by
    default) lets libjpeg decode at 1/2, 1/4 or 1/8 scale, the smallest whose sides stay >= ``draft``
    pixels (``Image.draft``): much faster for a large photo, close to but not bit-identical with Dassl.

    Raises :class:`ImageLoadError` for a missing, empty, truncated or undecodable file; the
    pixel data are decoded inside the guarded block so truncation is detected here.
    """
    path_str = os.fspath(path)
    if not os.path.exists(path_str):
        raise ImageLoadError(path_str, "no such file")
    if not os.path.isfile(path_str):
        raise ImageLoadError(path_str, "not a regular file")
    if os.path.getsize(path_str) == 0:
        raise ImageLoadError(path_str, "file is empty (0 bytes)")
    try:
        with Image.open(path_str) as im:
            if draft and im.format == "JPEG":
                im.draft("RGB", (draft, draft))
            im.load()
            if exif_transpose:
                im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except ImageLoadError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageLoadError(path_str, f"{type(exc).__name__}: {exc}") from exc
