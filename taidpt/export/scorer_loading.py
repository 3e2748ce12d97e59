"""Loading a trained run (or the zero-shot baseline) as a frozen, exportable scorer with its metadata.

:func:`load_scorer` rebuilds the model the way ``train.py --eval-only`` does (config, class names,
CLIP weights, learned prompts) and returns the fused :class:`taidpt.networks.model.ImageScorer`
in fp32 on CPU, plus the :class:`~taidpt.serve.metadata.ModelMetadata` that goes into the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from taidpt.serve.metadata import ModelMetadata


@dataclass
class LoadedScorer:
    """A frozen :class:`~taidpt.networks.model.ImageScorer` and the metadata that describes it."""

    scorer: Any  # taidpt.networks.model.ImageScorer (typed loosely so this module imports without torch)
    metadata: ModelMetadata
    notes: list[str] = field(default_factory=list)
    trained: Any = None  # the taidpt.engine.run.TrainedModel it came from (open-vocabulary export re-embeds names)
    cfg: Any = None  # the configuration it was built from


def load_scorer(
    model_dir: str | None = None,
    *,
    trainer: str = "",
    config_files: Sequence[str] = (),
    opts: Sequence[str] = (),
    load_epoch: int | None = None,
    image_size: int | None = None,
    classes: str | Sequence[str] = "",
) -> LoadedScorer:
    """Build the frozen scorer of a run (any trained method) or of an untrained method (the zero-shot
    baseline), on CPU in fp32, through :class:`taidpt.engine.run.Run`.

    The configuration is the run's ``config.yaml``, then ``config_files``, then ``opts`` (and
    ``trainer`` / ``image_size`` when given). The CLIP weights come from ``MODEL.BACKBONE.PRETRAINED``;
    random weights are rebuilt from the run's seed, as ``train.py --eval-only`` does.
    """
    from taidpt.captions.classes import load_class_list
    from taidpt.engine.config import assemble_config, get_cfg_default
    from taidpt.engine.run import Run, build_model, class_names_of

    run = Run(model_dir) if model_dir else None
    extra = [*opts, *(("TRAINER.NAME", trainer) if trainer else ()),
             *(("INPUT.SIZE", f"({int(image_size)}, {int(image_size)})") if image_size is not None else ())]
    cfg = (run.config(config_files, extra) if run is not None
           else assemble_config(get_cfg_default(), files=config_files, opts=extra))
    method = Run.method_of(cfg)
    names = (list(load_class_list(classes).names) if isinstance(classes, str) else list(classes)) if classes else None
    if run is not None:
        trained = run.load_model(cfg, load_epoch, classnames=names)
    elif method.trains():
        raise ValueError(f"exporting {method.name} needs --model-dir RUN (a train.py output directory with prompts)")
    else:
        trained = build_model(cfg, method, names or class_names_of(cfg), None, None)
    scorer = trained.scorer().float().eval()
    pre, prov = trained.preprocess, trained.provenance()
    pretrained = prov["pretrained"]
    meta = ModelMetadata(
        classnames=tuple(trained.classnames),
        image_size=pre.out_hw,
        mean=tuple(pre.mean),
        std=tuple(pre.std),
        interpolation=str(pre.interpolation),
        exif_transpose=bool(pre.exif_transpose),
        merge_rate=method.merge_rate(cfg),
        backbone=prov["backbone"],
        trainer=prov["trainer"],
        weights=prov["weights"],
        pretrained=os.path.basename(pretrained) if os.sep in pretrained else pretrained,
        taidpt_version=prov["taidpt_version"],
        precision="fp32",
        logit_scale=float(scorer.scale),
        spatial_scale=float(scorer.tau),
        use_pos_embed=bool(scorer.use_pos),
        threshold=float(cfg.TEST.THRESHOLD),
        checkpoint=f"{trained.checkpoint.name} (epoch {trained.epoch})" if trained.checkpoint is not None else "",
        dataset=prov["dataset"],
    )
    return LoadedScorer(scorer, meta, trained.notes, trained, cfg)
