"""taidpt.images.preprocess: bit-exact parity with Dassl's torchvision test transform, image loading."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taidpt.images.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    ImageLoadError,
    PreprocessConfig,
    center_crop,
    load_rgb,
    preprocess,
    resize_shorter,
    to_normalized_array,
)

REPO = Path(__file__).resolve().parents[1]


def _noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    # noise plus a gradient so resampling has both edges and smooth regions to get right
    grad = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    noise = rng.integers(0, 256, (h, w, 3))
    return Image.fromarray(((grad + noise) / 2).astype(np.uint8))


SHAPES = {
    "portrait": (300, 500),
    "landscape": (500, 301),
    "square": (256, 256),
    "smaller": (50, 30),
    "exact": (224, 224),
    "odd": (225, 227),
}


@pytest.mark.parametrize("size", [224, 448, 64])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_preprocess_matches_torchvision_exactly(shape: str, size: int) -> None:
    T = pytest.importorskip("torchvision.transforms")
    w, h = SHAPES[shape]
    img = _noise_image(w, h, seed=w * 7 + h)
    tf = T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    expected = tf(img).numpy()
    got = preprocess(img, size, CLIP_MEAN, CLIP_STD)
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (3, size, size)
    # PIL does the resampling on both sides and the arithmetic is the same float32 sequence
    assert np.array_equal(got, expected), float(np.abs(got - expected).max())


def test_rectangular_size_follows_dassl_resize_max_then_crop() -> None:
    T = pytest.importorskip("torchvision.transforms")
    img = _noise_image(400, 260, seed=3)
    size = (96, 128)  # (height, width); Dassl resizes the shorter side to max(size)
    tf = T.Compose(
        [
            T.Resize(max(size), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    got = preprocess(img, size)
    assert got.shape == (3, 96, 128)
    assert np.array_equal(got, tf(img).numpy())


@pytest.mark.parametrize("interp", ["bilinear", "nearest"])
def test_other_interpolations_match_torchvision(interp: str) -> None:
    T = pytest.importorskip("torchvision.transforms")
    img = _noise_image(333, 250, seed=5)
    mode = {"bilinear": T.InterpolationMode.BILINEAR, "nearest": T.InterpolationMode.NEAREST}[interp]
    tf = T.Compose([T.Resize(64, interpolation=mode), T.CenterCrop(64), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    assert np.array_equal(preprocess(img, 64, interpolation=interp), tf(img).numpy())


@pytest.mark.parametrize("img_wh", [(10, 7), (3, 20), (9, 9), (40, 40)])
@pytest.mark.parametrize("crop", [(8, 12), 16, (5, 4)])
def test_center_crop_matches_torchvision_including_padding(img_wh, crop) -> None:
    T = pytest.importorskip("torchvision.transforms")
    img = _noise_image(*img_wh, seed=1)
    expected = np.asarray(T.CenterCrop(crop)(img))
    got = np.asarray(center_crop(img, crop))
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_center_crop_offsets_round_half_to_even() -> None:
    arr = np.arange(6 * 227 * 3, dtype=np.uint32).reshape(6, 227, 3) % 251
    img = Image.fromarray(arr.astype(np.uint8))
    # W - w = 3 -> 1.5 rounds to 2; H - h = 1 -> 0.5 rounds to 0
    out = np.asarray(center_crop(img, (5, 224)))
    assert np.array_equal(out, arr[0:5, 2:226].astype(np.uint8))


def test_resize_shorter_sizes_and_skip() -> None:
    img = _noise_image(300, 501)
    out = resize_shorter(img, 224)
    assert out.size == (224, int(224 * 501 / 300))  # 374, truncated not rounded
    out = resize_shorter(_noise_image(501, 300), 224)
    assert out.size == (374, 224)
    same = _noise_image(224, 300)
    assert resize_shorter(same, 224) is same  # already at the target size: untouched
    with pytest.raises(ValueError, match="interpolation"):
        resize_shorter(img, 224, interpolation="cubic-ish")


def test_to_normalized_array_formula_and_mode_check() -> None:
    arr = np.array([[[0, 128, 255], [10, 20, 30]]], dtype=np.uint8)  # 1 x 2 x 3
    img = Image.fromarray(arr)
    out = to_normalized_array(img, CLIP_MEAN, CLIP_STD)
    assert out.dtype == np.float32 and out.shape == (3, 1, 2)
    mean = np.asarray(CLIP_MEAN, np.float32)[:, None, None]
    std = np.asarray(CLIP_STD, np.float32)[:, None, None]
    ref = (arr.transpose(2, 0, 1).astype(np.float32) / np.float32(255) - mean) / std
    assert np.array_equal(out, ref)
    assert out[0, 0, 0] == pytest.approx((0 - CLIP_MEAN[0]) / CLIP_STD[0], rel=1e-6)
    with pytest.raises(ValueError, match="RGB"):
        to_normalized_array(img.convert("L"))
    with pytest.raises(ValueError, match="3 values"):
        to_normalized_array(img, (0.5, 0.5), CLIP_STD)


def test_preprocess_config() -> None:
    cfg = PreprocessConfig(size=(32, 48))
    assert cfg.out_hw == (32, 48)
    img = _noise_image(100, 60)
    assert np.array_equal(cfg(img), preprocess(img, (32, 48)))
    with pytest.raises(ValueError):
        PreprocessConfig(size=0)
    with pytest.raises(ValueError):
        PreprocessConfig(interpolation="fancy")
    with pytest.raises(ValueError):
        PreprocessConfig(std=(0.0, 1.0, 1.0))


# ---------------------------------------------------------------------------------------------
# load_rgb


def test_load_rgb_modes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (12, 16), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    out = load_rgb(tmp_path / "gray.png")
    assert out.mode == "RGB" and out.size == (16, 12)
    assert all(np.array_equal(np.asarray(out)[..., c], gray) for c in range(3))

    rgba = rng.integers(0, 256, (12, 16, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    # Dassl semantics: alpha is dropped, not composited
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "rgba.png")), rgba[..., :3])

    Image.fromarray(rgba, "RGBA").convert("P").save(tmp_path / "pal.png")
    pal = load_rgb(tmp_path / "pal.png")
    assert pal.mode == "RGB"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's note about palette transparency
        with Image.open(tmp_path / "pal.png") as im:
            reference = im.convert("RGB")
    assert np.array_equal(np.asarray(pal), np.asarray(reference))

    Image.fromarray(rgba[..., :3]).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert load_rgb(tmp_path / "cmyk.jpg").mode == "RGB"


def test_load_rgb_scales_16_bit_instead_of_clipping(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")
    out = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]  # PIL's convert would give [0, 255, 255, 255]

    Image.fromarray(values.astype(np.int32)).save(tmp_path / "deep32.tif")
    out32 = np.asarray(load_rgb(tmp_path / "deep32.tif"))
    assert out32[0, :, 1].tolist() == [0, 1, 128, 255]


def test_load_rgb_exif_transpose(tmp_path: Path) -> None:
    img = _noise_image(20, 10)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (20, 10)
    assert load_rgb(tmp_path / "rot.jpg", exif_transpose=True).size == (10, 20)


def test_load_rgb_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageLoadError, match="no such file") as info:
        load_rgb(missing)
    assert isinstance(info.value, OSError)
    assert info.value.path == str(missing)
    assert str(missing) in str(info.value)

    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_rgb(empty)

    good = tmp_path / "good.jpg"
    _noise_image(64, 64).save(good, quality=95)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated"):
        load_rgb(truncated)

    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageLoadError) as info:
        load_rgb(garbage)
    assert info.value.reason.startswith("UnidentifiedImageError")

    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_rgb(tmp_path)

    # the (path, reason) signature survives copying (e.g. across worker processes)
    err = copy.deepcopy(ImageLoadError("a.jpg", "bad"))
    assert (err.path, err.reason) == ("a.jpg", "bad")


def test_torch_free_modules_import_and_run_without_torch(tmp_path: Path) -> None:
    _noise_image(40, 30).save(tmp_path / "x.png")
    code = f"""
import sys
sys.modules["torch"] = None  # any "import torch" now raises ImportError
sys.modules["torchvision"] = None
import numpy as np
import taidpt.images.preprocess as p
import taidpt.evaluation.metrics as m
import taidpt.images.readers as t
arr = p.preprocess(p.load_rgb({str(tmp_path / "x.png")!r}), 32)
assert arr.shape == (3, 32, 32) and arr.dtype == np.float32
assert m.mean_ap(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[1, 0], [0, 1]])) == 100.0
assert not any(k == "torch" or k.startswith("torch.") for k, v in sys.modules.items() if v is not None)
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
