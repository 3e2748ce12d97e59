"""Loading a trained run (or the zero-shot baseline) as a frozen, exportable scorer with its metadata.

:func:`load_scorer` rebuilds the model the way ``train.py --eval-only`` does (config, class names,
CLIP weights, learned prompts) and returns the fused :class:`taidpt.networks.model.ImageScorer`
in fp32 on CPU, plus the :class:`~taidpt.serve.metadata.ModelMetadata` that goes into the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from taidpt.serve.metadata import ModelMetadata


@dataclass
class LoadedScorer:
    """A frozen :class:`~taidpt.networks.model.ImageScorer` and the metadata that describes it."""

    scorer: Any  # taidpt.networks.model.ImageScorer (typed loosely so this module imports without torch)
    metadata: ModelMetadata
    notes: list[str] = field(default_factory=list)


def load_config(model_dir: str | None, config_files: Sequence[str], opts: Sequence[str]) -> Any:
    """The run's ``config.yaml`` (a full yacs dump) if any, then extra yaml files, then KEY VALUE pairs."""
    from taidpt.engine.config import get_cfg_default, merge_files_and_opts

    cfg = get_cfg_default()
    if model_dir:
        path = Path(model_dir) / "config.yaml"
        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"--model-dir {model_dir}: no such directory")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; --model-dir must be a train.py output directory")
        # A Dassl-path dump holds keys the core defaults lack; they do not matter for export.
        cfg.set_new_allowed(True)
        try:
            cfg.merge_from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - yacs raises several types
            raise ValueError(f"{path}: cannot be read as a taidpt config ({type(exc).__name__}: {exc})") from None
        cfg.set_new_allowed(False)
    merge_files_and_opts(cfg, list(config_files), list(opts) or None)
    return cfg


def _class_names(cfg: Any, trainer: str, classes_arg: str, meta: dict | None, model_dir: str | None) -> list[str]:
    """Class names in label-column order, from the first source that has them (no dataset needed if possible)."""
    from taidpt.captions.classes import load_class_list
    from taidpt.images.registry import get_spec, load_test_set

    if classes_arg:
        return list(load_class_list(classes_arg).names)
    if meta and meta.get("classnames"):
        return list(meta["classnames"])
    if cfg.DATASET.CLASS_LIST:
        return list(load_class_list(os.path.expanduser(cfg.DATASET.CLASS_LIST)).names)
    if cfg.DATASET.NAME:
        spec = get_spec(cfg.DATASET.NAME)
        if spec.class_list:
            return list(load_class_list(spec.class_list).names)
    if model_dir and (Path(model_dir) / "results.json").is_file():
        res = json.loads((Path(model_dir) / "results.json").read_text(encoding="utf-8"))
        if res.get("classes"):
            return list(res["classes"])
    if cfg.DATASET.NAME:
        _, classes = load_test_set(cfg)
        return list(classes.names)
    raise ValueError(f"cannot tell the class names of this {trainer} model: pass --classes NAME|FILE or "
                     f"--dataset-config-file")


def load_scorer(
    model_dir: str | None = None,
    *,
    trainer: str = "",
    config_files: Sequence[str] = (),
    opts: Sequence[str] = (),
    load_epoch: int | None = None,
    image_size: int | None = None,
    classes: str = "",
) -> LoadedScorer:
    """Build the frozen scorer of a trained run (TaIDPT, DualCoOp, CoOpMultiLabel) or of the zero-shot baseline, on CPU in fp32.

    The CLIP weights come from the run's ``MODEL.BACKBONE.PRETRAINED``. A run trained on random
    weights (``""``) is rebuilt from its seed, as ``train.py --eval-only`` does; an unseeded one
    cannot be reproduced and is refused.
    """
    import torch

    from taidpt import __version__
    from taidpt.engine.checkpoint import check_meta, load_checkpoint, resolve_checkpoint
    from taidpt.captions.classes import ClassList
    from taidpt.clip.loader import RANDOM_WEIGHTS, load_clip
    from taidpt.networks.model import ZeroShotDenseModel
    from taidpt.engine.image_runner import build_image_model, is_image_trainer
    from taidpt.engine.runner import build_taidpt, canonical_trainer, check_image_size, merge_rate, set_random_seed

    cfg = load_config(model_dir, config_files, opts)
    if image_size is not None:
        cfg.INPUT.SIZE = (int(image_size), int(image_size))
    trainer = canonical_trainer(trainer or cfg.TRAINER.NAME or "TaIDPT")
    notes: list[str] = []

    ckpt, ckpt_path = None, None
    trained = trainer == "TaIDPT" or is_image_trainer(trainer)
    if trained:
        if not model_dir:
            raise ValueError(f"exporting {trainer} needs --model-dir RUN (a train.py output directory with prompts)")
        ckpt_path = resolve_checkpoint(model_dir, load_epoch)
        ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    names = _class_names(cfg, trainer, classes, ckpt.get("meta") if ckpt else None, model_dir)

    pretrained = str(cfg.MODEL.BACKBONE.PRETRAINED)
    if pretrained.strip().lower() in RANDOM_WEIGHTS:
        if int(cfg.SEED) < 0:
            raise ValueError("the run used random CLIP weights (MODEL.BACKBONE.PRETRAINED '') without a seed, so "
                             "they cannot be rebuilt: set MODEL.BACKBONE.PRETRAINED to a weights file")
        set_random_seed(int(cfg.SEED))
        notes.append(f"random CLIP weights rebuilt from SEED {int(cfg.SEED)}: scores are chance level")
    clip_model, info = load_clip(cfg.MODEL.BACKBONE.NAME, pretrained, device="cpu",
                                 allow_torchscript_code=cfg.MODEL.BACKBONE.ALLOW_TORCHSCRIPT_CODE)
    check_image_size(cfg, info)

    with torch.no_grad():
        classes_ = ClassList.from_names("export", names)
        if trained:
            model = (build_taidpt(cfg, clip_model, classes_) if trainer == "TaIDPT"
                     else build_image_model(cfg, trainer, clip_model, classes_))
            check_meta(ckpt.get("meta"), {"classnames": names}, ckpt_path)
            model.prompt_learner.load_reference_state(ckpt["state_dict"])
            model.eval()
        else:
            z = cfg.TRAINER.ZEROSHOT
            model = ZeroShotDenseModel(clip_model, names, template=z.TEMPLATE, merge_rate=float(z.MERGE_RATE),
                                       use_pos_embed=bool(z.USE_POS_EMBED)).eval()
        merge = merge_rate(cfg, trainer)
        threshold = float(cfg.TEST.THRESHOLD)
        scorer = model.image_scorer().float().eval()
    h, w = (int(s) for s in cfg.INPUT.SIZE)
    meta = ModelMetadata(
        classnames=tuple(names),
        image_size=(h, w),
        mean=tuple(cfg.INPUT.PIXEL_MEAN),
        std=tuple(cfg.INPUT.PIXEL_STD),
        interpolation=str(cfg.INPUT.INTERPOLATION),
        exif_transpose=bool(cfg.INPUT.EXIF_TRANSPOSE),
        merge_rate=merge,
        backbone=info.name,
        trainer=trainer,
        weights=info.source,
        pretrained=os.path.basename(pretrained) if os.sep in pretrained else pretrained,
        taidpt_version=__version__,
        precision="fp32",
        logit_scale=float(scorer.scale),
        spatial_scale=float(scorer.tau),
        use_pos_embed=bool(scorer.use_pos),
        threshold=threshold,
        checkpoint=f"{Path(ckpt_path).name} (epoch {int(ckpt.get('epoch', 0))})" if ckpt is not None else "",
        dataset=str(cfg.DATASET.NAME),
    )
    return LoadedScorer(scorer, meta, notes)
