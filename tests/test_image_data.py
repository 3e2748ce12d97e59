"""taidpt.images.loaders: the evaluation dataset/loader never crashes on a bad image and counts it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from taidpt.images.loaders import ImageSetDataset, make_test_loader, split_ok
from taidpt.images.preprocess import PreprocessConfig, load_rgb, preprocess
from taidpt.images.readers.common import ImageSet
from taidpt.images.readers.csv import read_csv


def _write_images(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "rgb": folder / "rgb.jpg",
        "gray": folder / "gray.png",
        "rgba": folder / "rgba.png",
        "corrupt": folder / "corrupt.jpg",
        "empty": folder / "empty.jpg",
    }
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(paths["rgb"], quality=95)
    Image.fromarray(rng.integers(0, 256, (50, 30), dtype=np.uint8)).save(paths["gray"])
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA").save(paths["rgba"])
    data = paths["rgb"].read_bytes()
    paths["corrupt"].write_bytes(data[: len(data) // 3])  # truncated JPEG
    paths["empty"].write_bytes(b"")
    return paths


@pytest.fixture()
def image_set(tmp_path: Path) -> ImageSet:
    paths = _write_images(tmp_path / "imgs")
    order = ["rgb", "corrupt", "gray", "empty", "rgba"]
    targets = np.array([[1, 0], [0, 1], [-1, 1], [1, 1], [0, 0]], dtype=np.int8)
    return ImageSet(paths=[str(paths[k]) for k in order], targets=targets, classnames=("a", "b"), name="fixture")


def test_items_and_decoding(image_set: ImageSet, caplog) -> None:
    cfg = PreprocessConfig(size=32)
    ds = ImageSetDataset(image_set, cfg)
    assert len(ds) == 5
    item = ds[0]
    assert set(item) == {"img", "label", "index", "ok"}
    assert item["ok"] is True and item["index"] == 0
    assert item["img"].dtype == torch.float32 and item["img"].shape == (3, 32, 32)
    assert np.array_equal(item["img"].numpy(), preprocess(load_rgb(image_set.paths[0]), 32))
    assert item["label"].dtype == torch.float32 and item["label"].tolist() == [1.0, 0.0]

    gray = ds[2]
    assert gray["ok"] and gray["img"].shape == (3, 32, 32)
    # grey decodes to three equal channels before normalisation
    raw = torch.stack([gray["img"][c] * cfg.std[c] + cfg.mean[c] for c in range(3)])
    assert torch.allclose(raw[0], raw[1], atol=1e-6) and torch.allclose(raw[1], raw[2], atol=1e-6)
    assert gray["label"].tolist() == [-1.0, 1.0]  # ignored labels are kept as -1

    rgba = ds[4]
    assert rgba["ok"] and rgba["img"].shape == (3, 32, 32)

    with caplog.at_level(logging.WARNING, logger="taidpt.images.loaders"):
        bad = ds[1]
    assert bad["ok"] is False
    assert torch.count_nonzero(bad["img"]) == 0 and bad["img"].shape == (3, 32, 32)
    assert bad["label"].tolist() == [0.0, 1.0]
    assert "corrupt.jpg" in caplog.text
    assert ds[3]["ok"] is False


def test_loader_counts_bad_images(image_set: ImageSet) -> None:
    ds = ImageSetDataset(image_set, PreprocessConfig(size=(24, 32)))
    loader = make_test_loader(ds, batch_size=2, num_workers=0, seed=1)
    assert isinstance(loader.sampler, torch.utils.data.SequentialSampler)
    seen, bad_all, shapes = [], [], []
    for batch in loader:
        ok_batch, bad = split_ok(batch)
        seen.extend(ok_batch["index"].tolist())
        bad_all.extend(bad)
        shapes.append(tuple(ok_batch["img"].shape[1:]))
        assert ok_batch["img"].shape[0] == ok_batch["label"].shape[0] == len(ok_batch["index"])
        assert bool(ok_batch["ok"].all())
    assert seen == [0, 2, 4]
    assert bad_all == [1, 3]
    assert [Path(ds.path(i)).name for i in bad_all] == ["corrupt.jpg", "empty.jpg"]
    assert set(shapes) == {(3, 24, 32)}


def test_loader_with_workers_and_seed(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    _write_images(folder)
    csv_path = tmp_path / "set.csv"
    csv_path.write_text("path,labels\nimgs/rgb.jpg,a\nimgs/corrupt.jpg,b\nimgs/gray.png,a;b\n")
    ds = ImageSetDataset(read_csv(csv_path))
    loader = make_test_loader(ds, batch_size=3, num_workers=1, seed=123)
    assert loader.generator.initial_seed() == 123
    assert loader.pin_memory == torch.cuda.is_available()
    (batch,) = list(loader)
    ok_batch, bad = split_ok(batch)
    assert bad == [1]
    assert ok_batch["img"].shape == (2, 3, 224, 224)
    assert ok_batch["label"].tolist() == [[1.0, 0.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="batch_size"):
        make_test_loader(ds, batch_size=0, num_workers=0, seed=0)


def test_split_ok_all_good_passes_through() -> None:
    batch = {"img": torch.zeros(2, 3, 4, 4), "label": torch.zeros(2, 1), "index": torch.tensor([5, 6]), "ok": torch.tensor([True, True])}
    out, bad = split_ok(batch)
    assert out is batch and bad == []
