"""taidpt.images.readers: readers on small fixtures written in the real file formats."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taidpt.images.readers import TESTSET_READERS, read_testset
from taidpt.images.readers.coco import read_coco2014, read_coco_format
from taidpt.images.readers.common import ImageSet
from taidpt.images.readers.csv import read_csv
from taidpt.images.readers.nuswide import read_nuswide
from taidpt.images.readers.voc import VOC_CLASSES, read_voc2007


def _jpg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 30, 200)).save(path)


# ---------------------------------------------------------------------------------------------
# VOC2007

VOC_IDS = ["000001", "000002", "000004", "000006"]
# (image id, class) -> label in the file (1 / 0 = difficult); everything else is -1
VOC_LABELS = {
    ("000001", "dog"): 1,
    ("000001", "person"): 1,
    ("000002", "car"): 1,
    ("000002", "person"): 0,  # difficult
    ("000004", "tvmonitor"): 1,
    ("000006", "aeroplane"): 1,
}


def _write_voc(root: Path, with_image: tuple[str, ...] = ("000001", "000002", "000004")) -> Path:
    main = root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "test.txt").write_text("".join(f"{i}\n" for i in VOC_IDS))
    for cls in VOC_CLASSES:
        lines = []
        for i in VOC_IDS:
            v = VOC_LABELS.get((i, cls), -1)
            lines.append(f"{i} {v:2d}\n")  # the devkit pads: "000001 -1", "000001  1"
        (main / f"{cls}_test.txt").write_text("".join(lines))
    for i in with_image:
        _jpg(root / "VOCdevkit" / "VOC2007" / "JPEGImages" / f"{i}.jpg")
    return main


def test_voc_difficult_negative_vs_ignore_and_missing(tmp_path: Path, caplog) -> None:
    _write_voc(tmp_path)
    with caplog.at_level(logging.WARNING, logger="taidpt.images.readers.common"):
        ds = read_voc2007(tmp_path)
    assert isinstance(ds, ImageSet)
    assert ds.classnames == VOC_CLASSES and len(VOC_CLASSES) == 20
    assert ds.classnames[0] == "aeroplane" and ds.classnames[-1] == "tvmonitor"
    assert ds.name == "voc2007_test"
    # 000006 has no JPEG: collected, not raised, and removed from paths/targets
    assert len(ds.missing) == 1 and ds.missing[0].endswith("JPEGImages/000006.jpg")
    assert "000006.jpg" in caplog.text
    assert [Path(p).stem for p in ds.paths] == ["000001", "000002", "000004"]
    assert ds.targets.dtype == np.int8 and ds.targets.shape == (3, 20)
    col = {c: j for j, c in enumerate(VOC_CLASSES)}
    assert ds.targets[0, col["dog"]] == 1 and ds.targets[0, col["person"]] == 1
    assert ds.targets[0].sum() == 2
    assert ds.targets[1, col["person"]] == 0  # difficult -> negative (reference behaviour)
    assert ds.targets[2, col["tvmonitor"]] == 1

    official = read_voc2007(tmp_path, difficult="ignore")
    assert official.targets[1, col["person"]] == -1
    diff = official.targets != ds.targets
    assert diff.sum() == 1  # only the difficult entry changes
    assert (official.targets == -1).sum() == 1


def test_voc_bad_label_files(tmp_path: Path) -> None:
    main = _write_voc(tmp_path)
    dog = main / "dog_test.txt"
    dog.write_text("000001  1\n000002 -1\n000004 -1\n")  # one id short
    with pytest.raises(ValueError, match=r"dog_test\.txt"):
        read_voc2007(tmp_path)
    dog.write_text("000001  1\n000002 -1\n000004 -1\n000099 -1\n")  # unknown id
    with pytest.raises(ValueError, match=r"dog_test\.txt:4: image id '000099'"):
        read_voc2007(tmp_path)
    dog.write_text("000001  1\n000002 x\n000004 -1\n000006 -1\n")
    with pytest.raises(ValueError, match=r"dog_test\.txt:2: expected '<image id> <1\|-1\|0>'"):
        read_voc2007(tmp_path)
    dog.write_text("000001  1\n000002 -1\n000004 -1\n000006 -1\n000001 -1\n")
    with pytest.raises(ValueError, match=r"dog_test\.txt:5: duplicate"):
        read_voc2007(tmp_path)
    dog.write_text("000001  1\n000002 -1\n000004 -1\n000006 -1\n")
    assert len(read_voc2007(tmp_path)) == 3
    (main / "cat_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"cat_test\.txt"):
        read_voc2007(tmp_path)
    with pytest.raises(ValueError, match="difficult"):
        read_voc2007(tmp_path, difficult="drop")


def test_voc_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        read_voc2007(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as info:
        read_voc2007(tmp_path)
    assert str(tmp_path / "VOCdevkit" / "VOC2007") in str(info.value)
    assert "VOCdevkit" in str(info.value)


# ---------------------------------------------------------------------------------------------
# COCO


def _coco_json(path: Path, extra_annotations: list[dict] | None = None) -> None:
    data = {
        "info": {"description": "fixture"},
        "licenses": [],
        "images": [
            {"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "width": 8, "height": 8},
            {"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "width": 8, "height": 8},
            {"id": 99, "file_name": "COCO_val2014_000000000099.jpg", "width": 8, "height": 8},
            {"id": 13, "file_name": "COCO_val2014_000000000013.jpg", "width": 8, "height": 8},
        ],
        # deliberately not in id order: the class index must follow category id
        "categories": [
            {"id": 18, "name": "dog", "supercategory": "animal"},
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 3, "name": "car", "supercategory": "vehicle"},
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 18, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0},
            {"id": 2, "image_id": 42, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0},
            {"id": 3, "image_id": 42, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0},
            {"id": 4, "image_id": 7, "category_id": 3, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 1},
            {"id": 5, "image_id": 13, "category_id": 18, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0},
        ]
        + (extra_annotations or []),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_coco2014_through_pycocotools(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    coco = tmp_path / "COCO"
    _coco_json(coco / "annotations" / "instances_val2014.json")
    for iid in (42, 7, 99):  # 13 is missing on disk
        _jpg(coco / "val2014" / f"COCO_val2014_{iid:012d}.jpg")
    ds = read_coco2014(tmp_path)
    assert ds.classnames == ("person", "car", "dog")  # category ids 1, 3, 18
    assert ds.name == "coco2014_val2014"
    assert [Path(p).name for p in ds.paths] == [
        "COCO_val2014_000000000007.jpg",
        "COCO_val2014_000000000042.jpg",
        "COCO_val2014_000000000099.jpg",
    ]
    assert ds.targets.tolist() == [[0, 1, 0], [1, 0, 1], [0, 0, 0]]  # 99 has no annotation
    assert ds.targets.dtype == np.int8
    assert [Path(p).name for p in ds.missing] == ["COCO_val2014_000000000013.jpg"]

    same = read_coco_format(coco / "annotations" / "instances_val2014.json", coco / "val2014")
    assert same.paths == ds.paths and np.array_equal(same.targets, ds.targets)
    via_registry = read_testset("coco_format", coco / "annotations" / "instances_val2014.json", image_dir=coco / "val2014")
    assert np.array_equal(via_registry.targets, ds.targets)


def test_coco_errors(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    with pytest.raises(FileNotFoundError, match=r"instances_val2014\.json"):
        (tmp_path / "COCO" / "val2014").mkdir(parents=True)
        read_coco2014(tmp_path)
    json_path = tmp_path / "COCO" / "annotations" / "instances_val2014.json"
    _coco_json(json_path, [{"id": 77, "image_id": 7, "category_id": 5, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(ValueError, match=r"category_id 5") as info:
        read_coco2014(tmp_path)
    assert str(json_path) in str(info.value) and "77" in str(info.value)
    _coco_json(json_path, [{"id": 78, "image_id": 1234, "category_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(ValueError, match=r"image_id 1234"):
        read_coco2014(tmp_path)
    json_path.write_text('{"images": [], "categories": [}')
    with pytest.raises(ValueError, match=r"instances_val2014\.json:1: invalid JSON"):
        read_coco2014(tmp_path)
    json_path.write_text('{"images": [{"id": 1}], "categories": []}')
    with pytest.raises(ValueError, match=r"images\[0\] must be an object with the keys"):
        read_coco2014(tmp_path)


# ---------------------------------------------------------------------------------------------
# NUS-WIDE


def _write_nuswide(root: Path) -> Path:
    base = root / "NUSWIDE"
    (base / "ImageList").mkdir(parents=True)
    (base / "TrainTestLabels").mkdir()
    (base / "Concepts81.txt").write_text("airport\r\nanimal\r\nbeach\r\n")
    images = ["actor\\0001_2124494179.jpg", "animal\\0002_1.jpg", "beach\\0003_2.jpg"]
    (base / "ImageList" / "TestImagelist.txt").write_text("\r\n".join(images) + "\r\n")
    labels = {"airport": [0, 0, 1], "animal": [1, 1, 0], "beach": [0, 0, 1]}
    for concept, vals in labels.items():
        (base / "TrainTestLabels" / f"Labels_{concept}_Test.txt").write_text("".join(f"{v}\n" for v in vals))
    _jpg(base / "Flickr" / "actor" / "0001_2124494179.jpg")
    _jpg(base / "Flickr" / "beach" / "0003_2.jpg")
    return base


def test_nuswide_backslash_paths_and_labels(tmp_path: Path) -> None:
    base = _write_nuswide(tmp_path)
    ds = read_nuswide(tmp_path)
    assert ds.classnames == ("airport", "animal", "beach")
    assert ds.paths == [
        str(base / "Flickr" / "actor" / "0001_2124494179.jpg"),
        str(base / "Flickr" / "beach" / "0003_2.jpg"),
    ]
    assert ds.targets.tolist() == [[0, 1, 0], [1, 0, 1]]
    assert ds.missing == [str(base / "Flickr" / "animal" / "0002_1.jpg")]
    assert ds.name == "nuswide_Test"
    assert read_testset("nuswide", tmp_path).paths == ds.paths


def test_nuswide_bad_files(tmp_path: Path) -> None:
    base = _write_nuswide(tmp_path)
    label = base / "TrainTestLabels" / "Labels_animal_Test.txt"
    label.write_text("1\n1\n")
    with pytest.raises(ValueError, match=r"Labels_animal_Test\.txt: has 2 labels but .*TestImagelist\.txt lists 3"):
        read_nuswide(tmp_path)
    label.write_text("1\n2\n0\n")
    with pytest.raises(ValueError, match=r"Labels_animal_Test\.txt:2: expected 0 or 1"):
        read_nuswide(tmp_path)
    label.write_text("1\n\n0\n")
    with pytest.raises(ValueError, match=r"Labels_animal_Test\.txt:2: empty line"):
        read_nuswide(tmp_path)
    label.unlink()
    with pytest.raises(FileNotFoundError, match=r"Labels_animal_Test\.txt"):
        read_nuswide(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"NUSWIDE"):
        read_nuswide(tmp_path / "NUSWIDE")  # root given one level too deep


# ---------------------------------------------------------------------------------------------
# CSV


def test_csv_label_list_style(tmp_path: Path) -> None:
    _jpg(tmp_path / "imgs" / "a.jpg")
    _jpg(tmp_path / "imgs" / "b.jpg")
    abs_img = tmp_path / "elsewhere" / "c.jpg"
    _jpg(abs_img)
    csv_path = tmp_path / "data.csv"
    csv_path.write_text(f"path,labels\nimgs/a.jpg,dog;cat\nimgs/b.jpg,\n{abs_img},car|dog\nimgs/gone.jpg,cat\n")
    ds = read_csv(csv_path)
    assert ds.classnames == ("car", "cat", "dog")  # sorted when not given
    assert ds.paths == [str(tmp_path / "imgs" / "a.jpg"), str(tmp_path / "imgs" / "b.jpg"), str(abs_img)]
    assert ds.targets.tolist() == [[0, 1, 1], [0, 0, 0], [1, 0, 1]]
    assert ds.missing == [str(tmp_path / "imgs" / "gone.jpg")]
    assert ds.name == "data"
    assert ds.csv_labels == "names"

    given = read_csv(csv_path, classnames=["dog", "cat", "car", "bird"])
    assert given.classnames == ("dog", "cat", "car", "bird")
    assert given.targets.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]]
    with pytest.raises(ValueError, match=r"data\.csv:4: unknown class name 'car'"):
        read_csv(csv_path, classnames=["dog", "cat"])


def test_csv_matrix_style_and_image_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _jpg(root / "x.jpg")
    _jpg(root / "y.jpg")
    csv_path = tmp_path / "meta" / "m.csv"
    csv_path.parent.mkdir()
    csv_path.write_text("path,person,bicycle\nx.jpg,1,-1\ny.jpg,0,1\n")
    ds = read_csv(csv_path, image_root=root)
    assert ds.classnames == ("person", "bicycle")
    assert ds.targets.tolist() == [[1, 0], [-1, 1]]  # the file has a -1: VOC convention
    assert ds.csv_labels == "voc"
    assert ds.paths == [str(root / "x.jpg"), str(root / "y.jpg")]
    reordered = read_csv(csv_path, classnames=("bicycle", "person"), image_root=root)
    assert reordered.targets.tolist() == [[0, 1], [1, -1]]
    # relative to the CSV's folder by default: the images are not there
    assert len(read_csv(csv_path).missing) == 2
    via_registry = read_testset("csv", csv_path, image_root=root)
    assert np.array_equal(via_registry.targets, ds.targets)

    csv_path.write_text("path,person,bicycle\nx.jpg,1,-1\ny.jpg,0,yes\n")
    with pytest.raises(ValueError, match=r"m\.csv:3: expected 1, 0 or -1"):
        read_csv(csv_path, image_root=root)
    csv_path.write_text("path,person,bicycle\nx.jpg,1\n")
    with pytest.raises(ValueError, match=r"m\.csv:2: expected 3 columns"):
        read_csv(csv_path, image_root=root)
    csv_path.write_text("file,person\nx.jpg,1\n")
    with pytest.raises(ValueError, match=r"m\.csv:1: expected a header"):
        read_csv(csv_path, image_root=root)
    csv_path.write_text("path,person,bicycle\nx.jpg,1,0\n")
    with pytest.raises(ValueError, match=r"header classes do not match"):
        read_csv(csv_path, classnames=["person", "car"], image_root=root)
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        read_csv(tmp_path / "nothere.csv")


def test_registry(tmp_path: Path) -> None:
    assert set(TESTSET_READERS) == {"voc2007", "coco2014", "nuswide", "coco_format", "csv"}
    with pytest.raises(ValueError, match="unknown test set 'imagenet'"):
        read_testset("imagenet", tmp_path)
    _write_voc(tmp_path)
    assert read_testset("voc2007", tmp_path, difficult="ignore").targets.min() == -1


# ---------------------------------------------------------------------------------------------
# CSV label conventions


def _csv_with_images(tmp_path: Path, body: str) -> Path:
    for name in ("a", "b", "c", "d"):
        _jpg(tmp_path / f"{name}.jpg")
    csv_path = tmp_path / "set.csv"
    csv_path.write_text("path,cat,dog\n" + body)
    return csv_path


def test_csv_written_the_voc_way_reads_minus_one_as_negative(tmp_path: Path) -> None:
    from taidpt.evaluation.metrics import evaluate_multilabel

    csv_path = _csv_with_images(tmp_path, "a.jpg,1,-1\nb.jpg,-1,1\nc.jpg,-1,0\nd.jpg,1,-1\n")
    ds = read_csv(csv_path)
    assert ds.csv_labels == "voc"
    assert ds.targets.tolist() == [[1, 0], [0, 1], [0, -1], [1, 0]]  # 0 = VOC difficult: ignored
    # scores that rank every positive last: the 1 / -1 file must not report 100 mAP any more
    res = evaluate_multilabel(-ds.targets.astype(float), None, ds.targets, ds.classnames)
    assert res["mAP"]["merged"] < 60.0
    assert res["excluded_classes"] == {}


def test_csv_one_hot_reads_zero_as_negative_and_conventions_can_be_forced(tmp_path: Path) -> None:
    csv_path = _csv_with_images(tmp_path, "a.jpg,1,0\nb.jpg,0,1\nc.jpg,0,0\n")
    auto = read_csv(csv_path)
    assert auto.csv_labels == "binary" and auto.targets.tolist() == [[1, 0], [0, 1], [0, 0]]
    assert read_csv(csv_path, labels="binary").targets.tolist() == auto.targets.tolist()
    voc = read_csv(csv_path, labels="voc")  # 0 = ignored, so no class has a negative left
    assert voc.csv_labels == "voc" and voc.targets.tolist() == [[1, -1], [-1, 1], [-1, -1]]

    csv_path.write_text("path,cat,dog\na.jpg,1,0\nb.jpg,0,1\nc.jpg,-1,0\n")
    with pytest.raises(ValueError, match=r"set\.csv:4: -1 in a CSV read as binary labels") as info:
        read_csv(csv_path, labels="binary")
    assert "DATASET.CSV_LABELS" in str(info.value)
    with pytest.raises(ValueError, match=r"DATASET\.CSV_LABELS\) must be one of auto, voc, binary; got 'onehot'"):
        read_csv(csv_path, labels="onehot")


def test_csv_labels_config_key_and_results_record_the_convention(tmp_path: Path) -> None:
    from taidpt.engine.config import get_cfg_default
    from taidpt.images.registry import load_test_set
    from taidpt.evaluation.scoring import ScoredSet, results_from_scores

    csv_path = _csv_with_images(tmp_path, "a.jpg,1,-1\nb.jpg,-1,1\nc.jpg,-1,-1\ngone.jpg,1,1\n")
    cfg = get_cfg_default()
    cfg.DATASET.NAME, cfg.DATASET.ROOT, cfg.DATASET.ANNOTATION = "CSV", str(tmp_path), "set.csv"
    assert cfg.DATASET.CSV_LABELS == "auto"
    image_set, classes = load_test_set(cfg)
    assert image_set.csv_labels == "voc" and list(classes.names) == ["cat", "dog"]
    scored = ScoredSet(np.zeros((3, 2)), None, image_set.targets, None)
    results = results_from_scores(scored, classes.names, 0.5, None, image_set)
    assert results["csv_labels"] == "voc"
    assert results["n_missing_images"] == 1
    assert "csv_labels" not in ImageSet(["x"], np.ones((1, 1)), ("a",), "n").result_fields()
    cfg.DATASET.CSV_LABELS = "binary"
    with pytest.raises(ValueError, match=r"set\.csv:2: -1"):
        load_test_set(cfg)


# ---------------------------------------------------------------------------------------------
# one-line errors: wrong COCO field types, bytes that are not UTF-8


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["annotations"][2].update(category_id=[1]),
         r"annotations\[2\]\.category_id must be an integer or string id, got \[1\]"),
        (lambda d: d["images"][1].update(file_name=5), r"images\[1\]\.file_name must be a non-empty string, got 5"),
        (lambda d: d["annotations"][0].pop("id"),
         r"annotations\[0\] must be an object with the keys .*'id' is missing"),
        (lambda d: d["categories"][2].update(id=None),
         r"categories\[2\]\.id must be an integer or string id, got None"),
        (lambda d: d["images"].__setitem__(0, [42]), r"images\[0\] must be an object with the keys"),
        (lambda d: d.update(annotations={"id": 1}), r"expected a list under the key 'annotations'"),
    ],
)
def test_coco_wrong_field_types_are_one_line(tmp_path: Path, change, expected: str) -> None:
    pytest.importorskip("pycocotools")
    json_path = tmp_path / "instances.json"
    _coco_json(json_path)
    data = json.loads(json_path.read_text())
    change(data)
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=expected) as info:
        read_coco_format(json_path, tmp_path)
    assert str(json_path) in str(info.value) and "\n" not in str(info.value)


def _not_utf8(path: Path, text: str, line: int) -> int:
    """Write ``text`` with a Latin-1 'e acute' spliced into the start of ``line`` (1-based); returns
    its byte offset."""
    lines = text.encode().split(b"\n")
    offset = sum(len(x) + 1 for x in lines[: line - 1])
    lines[line - 1] = b"\xe9" + lines[line - 1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines))
    return offset


def test_files_that_are_not_utf8_name_line_and_byte_offset(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    csv_path = tmp_path / "set.csv"
    offset = _not_utf8(csv_path, "path,cat\na.jpg,1\nb.jpg,0\n", 3)
    with pytest.raises(ValueError, match=re.escape(f"{csv_path}:3: not UTF-8 (byte 0xe9 at offset {offset})")):
        read_csv(csv_path)

    json_path = tmp_path / "coco.json"
    _coco_json(json_path)
    text = json.dumps(json.loads(json_path.read_text()), indent=1)
    offset = _not_utf8(json_path, text, 5)
    with pytest.raises(ValueError, match=re.escape(f"{json_path}:5: not UTF-8 (byte 0xe9 at offset {offset})")):
        read_coco_format(json_path, tmp_path)

    voc = tmp_path / "voc"
    main = _write_voc(voc)
    offset = _not_utf8(main / "test.txt", "".join(f"{i}\n" for i in VOC_IDS), 2)
    with pytest.raises(ValueError, match=re.escape(f"{main / 'test.txt'}:2: not UTF-8 (byte 0xe9 at offset {offset})")):
        read_voc2007(voc)

    nus = tmp_path / "nus"
    base = _write_nuswide(nus)
    image_list = base / "ImageList" / "TestImagelist.txt"
    offset = _not_utf8(image_list, image_list.read_text(), 3)
    with pytest.raises(ValueError, match=re.escape(f"{image_list}:3: not UTF-8 (byte 0xe9 at offset {offset})")):
        read_nuswide(nus)


def test_utf8_byte_order_mark_is_still_accepted(tmp_path: Path) -> None:
    _jpg(tmp_path / "a.jpg")
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfpath,labels\na.jpg,caf\xc3\xa9\n")
    ds = read_csv(csv_path)
    assert ds.classnames == ("café",) and ds.targets.tolist() == [[1]]
