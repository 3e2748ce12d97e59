"""The metadata of an export, in five groups: what the graph computes, how images are prepared, where
the model comes from, its open-vocabulary parts and its decision rule. The file stores one flat
``taidpt.<field>`` key per field (unchanged); :class:`~taidpt.serve.metadata.ModelMetadata` gives each
group as one of these read-only objects. See docs/deployment.md, "Metadata keys".
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Interface:
    """What the graph computes: its classes, the merge of its two scores, the baked-in scales."""

    classnames: tuple[str, ...]
    merge_rate: float
    logit_scale: float
    spatial_scale: float
    use_pos_embed: bool
    precision: str
    opset: int


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes the graph's input (Dassl's test transform)."""

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    exif_transpose: bool


@dataclass(frozen=True)
class Provenance:
    """Where the model comes from: method, backbone and weights, run, dataset, version, export."""

    trainer: str
    backbone: str
    weights: str
    pretrained: str
    checkpoint: str
    dataset: str
    taidpt_version: str
    export_id: str
    exported: str


@dataclass(frozen=True)
class OpenVocabulary:
    """The parts that score any class list (empty for an export without ``--open-vocabulary``)."""

    text_model: str
    open_model: str
    bpe_vocab: str
    bpe_sha256: str
    prompt_template: str
    context_length: int


@dataclass(frozen=True)
class DecisionFacts:
    """The decision rule's inputs: the metric threshold, calibrated thresholds and what they rest on."""

    threshold: float
    thresholds: tuple[tuple[str, float], ...]
    calibration: str
    calibration_images: int
    calibration_support: tuple[tuple[str, int], ...]


GROUPS: dict[str, type] = {"interface": Interface, "preprocessing": Preprocessing, "provenance": Provenance,
                           "open_vocabulary": OpenVocabulary, "decision": DecisionFacts}


def group_of(group: type, source: object) -> object:
    """An instance of ``group`` with its fields read from ``source`` (a ModelMetadata)."""
    return group(**{f.name: getattr(source, f.name) for f in fields(group)})
