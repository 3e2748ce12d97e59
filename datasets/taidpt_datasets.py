"""Dassl dataset classes for TaI-DPT's test sets: one per dataset spec of ``taidpt.images.registry``.

Every :class:`~taidpt.images.registry.DatasetSpec` (``VOC2007``, ``COCO2014``, ``NUSWIDE``,
``COCOFormat``, ``CSV``, and any spec registered later) becomes a :class:`MultiLabelTestSet`
subclass named after it (its ``DATASET.NAME``, the value ``configs/datasets/*.yaml`` set), with the
spec's ``doc`` as its docstring, registered in Dassl's ``DATASET_REGISTRY``; no dataset is named
here. Each class reads its images with the core reader (``taidpt.images.registry.load_test_set``),
so the Dassl path and the core path see the same images, labels and class list. Import this module
(CoOp style: ``import datasets.taidpt_datasets`` in ``train.py``) to register the classes; it
must be imported under one module path only, since Dassl's registry refuses a second
registration of a name. A spec registered after the import is added by :func:`register_datasets`.

Multi-label data in Dassl: a :class:`~dassl.data.datasets.Datum` holds a single ``label``, and
Dassl's own code reads it in only a few places (``DatasetBase.get_num_classes`` /
``get_lab2cname``, the class-aware sampler, the few-shot helpers, the ``Classification``
evaluator). Here ``Datum.label`` is a float tensor ``[C]`` of targets (1 positive, 0 negative, -1
ignored), and the dataset overrides ``get_num_classes`` and ``get_lab2cname`` to answer from the
class list instead of from the labels. Dassl's ``DatasetWrapper`` and PyTorch's default collate
then give ``batch["label"]`` as ``[B, C]`` with no change to Dassl. The alternatives were worse:
an int label indexing a side table of targets needs the evaluator to know which split it is
scoring, and a custom dataset wrapper must be passed to every loader. Those few Dassl parts that
read labels as ints (``RandomClassSampler``, ``generate_fewshot_dataset``,
``split_dataset_by_label``, the ``Classification`` evaluator) do not apply to tensors, hence the
``MultiLabelEvaluator`` set in our yaml files.

``train_x`` is empty and ``val`` is None; the images are the ``test`` split. Dassl's ``DataManager``
asserts a non-empty training loader, so it cannot be built on these classes: every trainer of
``trainers/taidpt.py`` (one per registered method) gets its loaders from the core runner (captions
for caption-trained methods, the dataset's training split for image-trained ones).
Images the annotation lists but that are not on disk are dropped (and counted) by the core reader
before any ``Datum`` is made, as ``Datum`` asserts that its file exists.
"""

from __future__ import annotations

from typing import Any

import torch
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum

from taidpt.captions.classes import ClassList
from taidpt.images.registry import DATASETS, load_test_set
from taidpt.images.readers.common import ImageSet


class MultiLabelTestSet(DatasetBase):
    """A TaI-DPT test set as a Dassl dataset; ``image_set`` and ``class_list`` keep the core's view."""

    def __init__(self, cfg: Any) -> None:
        self.image_set, self.class_list = self.read(cfg)
        labels = torch.from_numpy(self.image_set.targets.astype("float32"))
        test = [Datum(impath=path, label=labels[i].clone()) for i, path in enumerate(self.image_set.paths)]
        super().__init__(train_x=[], val=None, test=test)

    @staticmethod
    def read(cfg: Any) -> tuple[ImageSet, ClassList]:
        """The core's test set and class list for ``cfg.DATASET``."""
        return load_test_set(cfg)

    def get_num_classes(self, data_source: list[Datum]) -> int:
        """Number of classes from the class list (Dassl's version takes max(label) + 1)."""
        return len(self.class_list)

    def get_lab2cname(self, data_source: list[Datum]) -> tuple[dict[int, str], list[str]]:
        """``({index: class name}, class names)`` from the class list, in label-column order."""
        names = list(self.class_list.names)
        return dict(enumerate(names)), names


def _ours(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, MultiLabelTestSet)


def register_datasets() -> list[str]:
    """Register a Dassl dataset class for every dataset spec not registered yet; returns their names.

    Each class is also an attribute of this module, so ``datasets.taidpt_datasets.VOC2007`` works.
    """
    added = []
    for name, spec in DATASETS.items():
        if name in DATASET_REGISTRY.registered_names():
            if not _ours(DATASET_REGISTRY.get(name)):
                raise KeyError(f"Dassl already has a dataset named {name!r}: give the taidpt dataset spec another name")
            continue
        dataset = type(name, (MultiLabelTestSet,), {"__doc__": spec.doc, "__module__": __name__})
        DATASET_REGISTRY.register(dataset)
        globals()[name] = dataset
        added.append(name)
    return added


register_datasets()
