"""What an exported model carries besides its weights: classes, preprocessing and provenance.

The ONNX file stores it as ``taidpt.*`` ``metadata_props``; a TensorRT engine cannot, so its JSON sidecar
``<engine>.json`` holds the same pairs. Serving reads all preprocessing from here, never the training config,
and the build side takes the graph's interface names (:data:`INPUT_NAME`, :data:`OUTPUT_NAMES`) from here.
The keys: docs/deployment.md, "Metadata keys".
"""

from __future__ import annotations

import json
import math
import os
import string
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Mapping

from taidpt.serve.export_unit import engine_mismatch
from taidpt.utils.atomic import atomic_write_text
from taidpt.images.preprocess import PreprocessConfig
from taidpt.serve.metadata_groups import DecisionFacts, Interface, OpenVocabulary, Preprocessing, Provenance, group_of

PREFIX = "taidpt."
INPUT_NAME = "images"
OUTPUT_NAMES = ("scores", "global_logits", "local_logits")
# Open-vocabulary exports: the text model maps prompt token ids to the class embeddings that the open image
# graph takes as inputs beside the images (taidpt.export.open_vocab, taidpt.serve.open_vocab).
TOKEN_IDS_NAME = "token_ids"
EMBEDDING_NAMES = ("text_global", "text_local")
SIDECAR_SUFFIX = ".json"
# Precisions an export can have: fp32 (traced), fp16 (float16 encoder), int8 (static QDQ int8 encoder).
PRECISIONS = ("fp32", "fp16", "int8")
# Sides of the network input a model may declare, in pixels.
IMAGE_SIDE_RANGE = (16, 4096)


class MetadataError(ValueError):
    """A model's metadata is missing or malformed; the message names the file."""


# Field name -> kind. "str" values are stored as they are; the others as JSON.
_KINDS: dict[str, str] = {
    "classnames": "json_list",
    "image_size": "json_list",
    "mean": "json_list",
    "std": "json_list",
    "interpolation": "str",
    "exif_transpose": "json_bool",
    "merge_rate": "json_float",
    "backbone": "str",
    "trainer": "str",
    "weights": "str",
    "pretrained": "str",
    "taidpt_version": "str",
    "precision": "str",
    "logit_scale": "json_float",
    "spatial_scale": "json_float",
    "use_pos_embed": "json_bool",
    "threshold": "json_float",
    "checkpoint": "str",
    "dataset": "str",
    "opset": "json_int",
    "thresholds": "json_dict",
    "calibration": "str",
    "text_model": "str",
    "open_model": "str",
    "bpe_vocab": "str",
    "prompt_template": "str",
    "context_length": "json_int",
    "export_id": "str",
    "exported": "str",
    "bpe_sha256": "str",
    "calibration_images": "json_int",
    "calibration_support": "json_dict",
}

# Keys a model must carry; the rest have defaults so older or hand-made files still load.
_REQUIRED = ("classnames", "image_size", "mean", "std", "interpolation", "merge_rate")


@dataclass(frozen=True)
class ModelMetadata:
    """The deployment description of one exported model (see ``docs/deployment.md``).

    ``image_size`` is ``(height, width)`` of the network input; preprocessing resizes the shorter
    side to ``max(image_size)`` and centre-crops, exactly as evaluation does. ``threshold`` is the
    score threshold evaluation used for CP/CR/CF1 (``TEST.THRESHOLD``). ``thresholds`` are the per-class
    decision thresholds on the merged logit that ``python -m export.calibrate`` stores (``calibration``
    says how they were chosen); serving labels by them (:mod:`taidpt.serve.decision`). An open-vocabulary
    export (``--open-vocabulary``) names its text model, open image graph and BPE vocabulary files
    (``text_model``, ``open_model``, ``bpe_vocab``: file names beside the model), the prompt each class
    name is put into (``prompt_template``, ``{}`` for the name) and the text context length; empty
    and 0 otherwise.
    """

    classnames: tuple[str, ...]
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    merge_rate: float
    exif_transpose: bool = False
    backbone: str = ""
    trainer: str = ""
    weights: str = ""
    pretrained: str = ""
    taidpt_version: str = ""
    precision: str = "fp32"
    logit_scale: float = 0.0
    spatial_scale: float = 0.0
    use_pos_embed: bool = False
    threshold: float = 0.0
    checkpoint: str = ""
    dataset: str = ""
    opset: int = 0
    thresholds: tuple[tuple[str, float], ...] = ()
    calibration: str = ""
    text_model: str = ""
    open_model: str = ""
    bpe_vocab: str = ""
    prompt_template: str = ""
    context_length: int = 0
    export_id: str = ""
    exported: str = ""  # when the export ran, UTC, ISO 8601 to the second
    bpe_sha256: str = ""
    calibration_images: int = 0
    calibration_support: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "classnames", _class_names(self.classnames))
        object.__setattr__(self, "image_size", _image_size(self.image_size))
        object.__setattr__(self, "mean", _channel_triple(self.mean, "mean"))
        object.__setattr__(self, "std", _channel_triple(self.std, "std"))
        if min(self.std) <= 0:
            raise MetadataError(f"metadata {PREFIX}std must be three numbers > 0, got {list(self.std)}")
        _check_prompt(self.prompt_template, self.context_length)
        object.__setattr__(self, "thresholds", _threshold_pairs(self.thresholds, self.classnames))
        support = self.calibration_support
        support = support.items() if isinstance(support, Mapping) else support
        object.__setattr__(self, "calibration_support", tuple((str(c), int(n)) for c, n in support))
        if self.precision not in PRECISIONS:
            raise MetadataError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        self.preprocess_config()  # validates mean/std/interpolation

    # ------------------------------------------------------------------ the fields in groups
    @property
    def interface(self) -> Interface:
        return group_of(Interface, self)  # type: ignore[return-value]

    @property
    def preprocessing(self) -> Preprocessing:
        return group_of(Preprocessing, self)  # type: ignore[return-value]

    @property
    def provenance(self) -> Provenance:
        return group_of(Provenance, self)  # type: ignore[return-value]

    @property
    def open_vocabulary(self) -> OpenVocabulary:
        return group_of(OpenVocabulary, self)  # type: ignore[return-value]

    @property
    def decision(self) -> DecisionFacts:
        return group_of(DecisionFacts, self)  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def threshold_map(self) -> dict[str, float]:
        """The stored per-class decision thresholds on the merged logit (``taidpt.thresholds``; written by
        ``python -m export.calibrate``), ``{}`` when the model was never calibrated."""
        return dict(self.thresholds)

    def preprocess_config(self) -> PreprocessConfig:
        """The numpy + PIL preprocessing that matches this model (Dassl's test transform)."""
        h, w = self.image_size
        return PreprocessConfig(size=h if h == w else (h, w), mean=self.mean, std=self.std,
                                interpolation=self.interpolation, exif_transpose=self.exif_transpose)

    def replace(self, **changes: Any) -> "ModelMetadata":
        """A copy with some fields changed (e.g. ``precision="fp16"``)."""
        return ModelMetadata(**{**asdict(self), **changes})

    def to_props(self) -> dict[str, str]:
        """``{"taidpt.<field>": value}``, every value a string (ONNX ``metadata_props``)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _KINDS[f.name]
            if kind == "str":
                out[PREFIX + f.name] = str(value)
            elif kind == "json_list":
                out[PREFIX + f.name] = json.dumps(list(value))
            elif kind == "json_dict":
                out[PREFIX + f.name] = json.dumps(dict(value))
            else:
                out[PREFIX + f.name] = json.dumps(value)
        return out

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str | os.PathLike = "<model>") -> "ModelMetadata":
        """Parse ``metadata_props``; raises :class:`MetadataError` naming ``source``."""
        where = os.fspath(source)
        missing = [k for k in _REQUIRED if PREFIX + k not in props]
        if missing:
            raise MetadataError(f"{where}: not a taidpt export (metadata {', '.join(PREFIX + k for k in missing)} "
                                f"missing); export it with python -m export.onnx")
        values: dict[str, Any] = {}
        for name, kind in _KINDS.items():
            key = PREFIX + name
            if key not in props:
                continue
            raw = props[key]
            try:
                if kind == "str":
                    values[name] = raw
                else:
                    parsed = json.loads(raw)
                    if kind == "json_list" and not isinstance(parsed, list):
                        raise ValueError("expected a JSON list")
                    if kind == "json_dict" and not isinstance(parsed, dict):
                        raise ValueError("expected a JSON object")
                    if kind == "json_float":
                        parsed = float(parsed)
                    elif kind == "json_int":
                        parsed = int(parsed)
                    elif kind == "json_bool":
                        if not isinstance(parsed, bool):
                            raise ValueError("expected true or false")
                    values[name] = parsed
            except (ValueError, TypeError) as exc:
                raise MetadataError(f"{where}: metadata {key}={raw!r} is malformed ({exc})") from None
        try:
            return cls(**values)
        except MetadataError as exc:
            raise MetadataError(f"{where}: {exc}") from None
        except ValueError as exc:  # PreprocessConfig validation
            raise MetadataError(f"{where}: {exc}") from None


def _as_tuple(value: Any, key: str) -> tuple[Any, ...]:
    """A list-like metadata value as a tuple (:class:`MetadataError` for a string, number or other scalar)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise MetadataError(f"metadata {PREFIX}{key} must be a list, got {value!r}")
    return tuple(value)


def _class_names(value: Any) -> tuple[str, ...]:
    """Distinct, non-blank, one-line strings (``labels.txt`` and CSV headers hold one name each)."""
    names = _as_tuple(value, "classnames")
    if not names:
        raise MetadataError("classnames is empty")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise MetadataError(f"metadata {PREFIX}classnames: name {i + 1} is {name!r}, expected a non-blank string")
        if len(name.splitlines()) != 1:
            raise MetadataError(f"metadata {PREFIX}classnames: name {i + 1} {name!r} has a line break")
    if len(set(names)) != len(names):
        raise MetadataError("classnames has duplicates")
    return names


def _image_size(value: Any) -> tuple[int, int]:
    """``(height, width)``, integers within :data:`IMAGE_SIDE_RANGE` (a typo such as 100000 would make every
    image a multi-gigabyte array)."""
    size = _as_tuple(value, "image_size")
    lo, hi = IMAGE_SIDE_RANGE
    if len(size) != 2 or not all(isinstance(s, Integral) and not isinstance(s, bool) and lo <= s <= hi for s in size):
        raise MetadataError(f"image_size must be (height, width) > 0, each side an integer from {lo} to {hi}, "
                            f"got {list(size)}")
    return int(size[0]), int(size[1])


def _channel_triple(value: Any, name: str) -> tuple[float, float, float]:
    """Exactly three finite numbers (one per RGB channel)."""
    values = _as_tuple(value, name)
    if len(values) != 3 or not all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
                                   for v in values):
        raise MetadataError(f"metadata {PREFIX}{name} must be three finite numbers (one per RGB channel), "
                            f"got {list(values)}")
    return float(values[0]), float(values[1]), float(values[2])


def template_pieces(template: str) -> list[str]:
    """The literal text around the one ``{}`` of a prompt template (two pieces); :class:`MetadataError` unless the
    template has exactly one replacement field and it is a bare ``{}`` (no name, index, attribute, conversion or
    format spec): such templates are never passed to ``str.format``."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise MetadataError(f"metadata {PREFIX}prompt_template {template!r} is malformed ({exc})") from None
    fields = [(f, spec, conv) for _, f, spec, conv in parsed if f is not None]
    if len(fields) != 1 or fields[0] != ("", "", None):
        raise MetadataError(f"metadata {PREFIX}prompt_template {template!r} must hold exactly one {{}} for the class "
                            f"name and no other replacement field")
    cut = next(i for i, (_, f, _, _) in enumerate(parsed) if f is not None)
    return ["".join(p[0] for p in parsed[:cut + 1]), "".join(p[0] for p in parsed[cut + 1:])]


def fill_template(template: str, name: str) -> str:
    """``template`` with ``name`` in its ``{}`` (what ``template.format(name)`` gives for a valid template)."""
    before, after = template_pieces(template)
    return before + name + after


def _check_prompt(template: str, context_length: int) -> None:
    """An open-vocabulary export's prompt template and token count are usable (both unset otherwise)."""
    if isinstance(context_length, bool) or not isinstance(context_length, Integral) or context_length < 0:
        raise MetadataError(f"metadata {PREFIX}context_length must be an integer >= 0, got {context_length!r}")
    if template:
        template_pieces(template)
        if context_length <= 0:
            raise MetadataError(f"metadata {PREFIX}context_length must be > 0 with a prompt template, "
                                f"got {context_length}")


def _threshold_pairs(value: Any, classnames: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """``{class: threshold}`` or ``(class, threshold)`` pairs as pairs in class order; every class must be
    the model's and every threshold a finite number (a class may lack one: it is then decided by top-k)."""
    try:
        pairs = dict(value.items() if isinstance(value, Mapping) else value)
    except (TypeError, ValueError):
        raise MetadataError(f"thresholds must map class names to numbers, got {value!r}") from None
    unknown = [c for c in pairs if c not in classnames]
    if unknown:
        raise MetadataError(f"thresholds name classes the model lacks: {', '.join(map(str, unknown[:4]))}")
    out = []
    for c in classnames:
        if c in pairs:
            t = pairs[c]
            if isinstance(t, bool) or not isinstance(t, Real) or not math.isfinite(t):
                raise MetadataError(f"threshold of {c!r} must be a finite number, got {t!r}")
            out.append((c, float(t)))
    return tuple(out)


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``model.plan`` -> ``model.plan.json``: where an engine's metadata lives."""
    p = Path(engine_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def read_onnx_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Metadata of an ONNX file, read with onnx without loading external weight files."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf errors vary
        raise MetadataError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, path)


def write_sidecar(engine_path: str | os.PathLike, metadata: ModelMetadata, extra: Mapping[str, Any]) -> Path:
    """Write ``<engine>.json``: the ONNX metadata pairs plus build facts (``extra``)."""
    path = sidecar_path(engine_path)
    payload = {"metadata_props": metadata.to_props(), **dict(extra)}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path


def read_sidecar(engine_path: str | os.PathLike) -> tuple[ModelMetadata, dict[str, Any]]:
    """Metadata and build facts of a serialized engine from its ``<engine>.json`` sidecar, which must
    have been written for this engine file (its recorded size and sha256, :mod:`taidpt.serve.export_unit`)."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise MetadataError(
            f"{engine_path}: no metadata file {path.name} next to the engine. Engines built by "
            f"python -m export.tensorrt get one; for an engine built with trtexec run "
            f"python -m export.tensorrt --onnx MODEL.onnx --engine {Path(engine_path).name} --metadata-only")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        props = payload["metadata_props"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MetadataError(f"{path}: malformed engine metadata ({type(exc).__name__}: {exc})") from None
    facts = {k: v for k, v in payload.items() if k != "metadata_props"}
    if Path(engine_path).is_file():
        problem = engine_mismatch(Path(engine_path), path, facts)
        if problem:
            raise MetadataError(problem)
    return ModelMetadata.from_props(props, path), facts
