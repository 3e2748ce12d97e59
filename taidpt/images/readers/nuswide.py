"""Reader of NUS-WIDE (81 concepts): image list, per-concept label files and the concept list.

numpy only (no torch), so the ONNX evaluation can use it too.
"""

from __future__ import annotations

import os
import re

import numpy as np

from taidpt.images.readers.common import ImageSet, finish_image_set, read_lines, require_dir, require_file

__all__ = ["read_nuswide"]


def read_nuswide(root: str | os.PathLike, split: str = "Test") -> ImageSet:
    """NUS-WIDE (81 concepts).

    Layout under ``root/NUSWIDE``: ``ImageList/<split>Imagelist.txt`` (Windows paths such as
    ``actor\\0001_2124494179.jpg``, mapped to ``Flickr/actor/0001_2124494179.jpg``),
    ``TrainTestLabels/Labels_<concept>_<split>.txt`` (one 0/1 per line, aligned with the image
    list) and ``Concepts81.txt`` (one concept per line, giving the class order).
    """
    root = os.fspath(root)
    hint = "Set the dataset root to the folder that contains NUSWIDE/ (ImageList, TrainTestLabels, Flickr, Concepts81.txt)."
    require_dir(root, "NUS-WIDE data root", hint)
    base = os.path.join(root, "NUSWIDE")
    require_dir(base, "NUS-WIDE folder", hint)
    concepts_file = os.path.join(base, "Concepts81.txt")
    require_file(concepts_file, "NUS-WIDE concept list", hint)
    list_file = os.path.join(base, "ImageList", f"{split}Imagelist.txt")
    require_file(list_file, f"NUS-WIDE image list '{split}'", hint)

    concepts: list[str] = []
    for lineno, line in read_lines(concepts_file):
        if len(line.split()) != 1:
            raise ValueError(f"{concepts_file}:{lineno}: expected one concept name per line, got {line!r}")
        if line in concepts:
            raise ValueError(f"{concepts_file}:{lineno}: duplicate concept {line!r}")
        concepts.append(line)
    if not concepts:
        raise ValueError(f"{concepts_file}: no concept listed")

    flickr = os.path.join(base, "Flickr")
    paths = []
    for _, line in read_lines(list_file):
        parts = [p for p in re.split(r"[\\/]+", line) if p]
        paths.append(os.path.join(flickr, *parts))

    targets = np.zeros((len(paths), len(concepts)), dtype=np.int8)
    for c, concept in enumerate(concepts):
        label_file = os.path.join(base, "TrainTestLabels", f"Labels_{concept}_{split}.txt")
        require_file(label_file, f"NUS-WIDE label file for concept '{concept}'", hint)
        lines = read_lines(label_file)
        if len(lines) != len(paths):
            raise ValueError(
                f"{label_file}: has {len(lines)} labels but {list_file} lists {len(paths)} images; "
                "expected one 0/1 label per image"
            )
        for i, (lineno, line) in enumerate(lines):
            if line not in ("0", "1"):
                raise ValueError(f"{label_file}:{lineno}: expected 0 or 1, got {line!r}")
            targets[i, c] = 1 if line == "1" else 0
    return finish_image_set(f"nuswide_{split}", paths, targets, concepts)
