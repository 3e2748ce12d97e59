"""The two modules an open-vocabulary export traces, and what decides whether a run can have them.

Only a run whose contexts are shared by all classes (generic contexts, or zero-shot CLIP's template) can
embed any class name. :class:`ClassEmbedder` maps prompt token ids to the two class-embedding matrices;
:class:`OpenImageScorer` is the run's scorer with those matrices fed in. Both feed traced tensors through the
model's own code paths, so each method's scoring is followed without a second implementation.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from taidpt.clip.text_encoder import eot_positions
from taidpt.clip.tokenizer import tokenize
from taidpt.networks.model import l2_normalize
from taidpt.networks.prompts import clean_classname


@contextlib.contextmanager
def _attributes(obj: Any, **values: Any) -> Iterator[None]:
    """Set attributes (buffers included) of ``obj`` for the duration of the block, then restore them."""
    saved = {name: getattr(obj, name) for name in values}
    try:
        for name, value in values.items():
            setattr(obj, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(obj, name, value)


def open_vocabulary_refusal(method: Any, cfg: Any, model: Any) -> str | None:
    """Why this run cannot embed new class names (one line), or None when it can.

    Class-specific contexts (CSC) exist only for the trained classes; the method registry says which
    runs have generic ones. Generic contexts need the class name at the end of the prompt (where the
    shared SOS + context prefix is followed by the name), which is TaI-DPT's default.
    """
    if not method.generic_contexts(cfg):
        return (f"--open-vocabulary: this {method.name} run learned class-specific contexts (CSC), which cannot "
                f"embed a new class name; only runs with generic contexts (CSC False) or zero-shot CLIP can")
    learner = getattr(model, "prompt_learner", None)
    if learner is not None and not learner.shares_prefix:
        return (f"--open-vocabulary: class token position {learner.class_token_position!r} is not supported; "
                f"runs with CLASS_TOKEN_POSITION 'end' can be exported with new class names")
    if learner is None and not hasattr(model, "template"):
        return f"--open-vocabulary: {method.name} models have neither learned generic contexts nor a prompt template"
    return None


def prompt_template(model: Any, decode: Any) -> str:
    """The text each class name is put into (``{}`` = the name, underscores as spaces).

    Zero-shot CLIP: its template. Learned contexts: the placeholder words the prompt learner
    tokenized before replacing them with the contexts (``"X X ... X {}."``, or ``CTX_INIT``'s words),
    recovered from its token ids with ``decode`` (token ids -> text).
    """
    learner = getattr(model, "prompt_learner", None)
    if learner is None:
        return str(model.template)
    prefix = decode([int(i) for i in learner.token_ids[0, 1:1 + learner.n_ctx]])
    return f"{prefix} {{}}."


def trained_prompt_ids(model: Any) -> torch.Tensor:
    """The prompt token ids ``[C, context]`` the model tokenized for its own class names in training."""
    learner = getattr(model, "prompt_learner", None)
    if learner is not None:
        return learner.token_ids.cpu()
    texts = [model.template.format(clean_classname(c)) for c in model.classnames]
    return tokenize(texts, model.text.context_length)


class ClassEmbedder(nn.Module):
    """Prompt token ids ``[C, L]`` int64 -> ``(text_global, text_local)`` ``[C, D]``, L2-normalised.

    Learned contexts: the ids' embeddings after the SOS + context positions become the prompt
    learner's suffix and their EOT the learner's EOT index, then the model's own
    ``class_embeddings`` runs (shared-prefix path, no trimming: both exact under causal attention).
    Zero-shot CLIP: the ids' EOT feature, used for both branches as its scorer does.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        learner = getattr(model, "prompt_learner", None)
        if learner is None:
            text = l2_normalize(model.text.encode_ids(token_ids, trim=False))
            return text, text
        suffix = model.text.embed(token_ids)[:, 1 + learner.n_ctx:]
        with _attributes(learner, token_suffix=suffix, eot=eot_positions(token_ids)), \
                _attributes(model, trim_tokens=False, shared_prefix=True):
            return model.class_embeddings()


class OpenImageScorer(nn.Module):
    """``(images, text_global, text_local)`` -> ``(scores, global_logits, local_logits)`` with the run's scorer.

    The scorer's image encoder is registered here under the same name (``encoder``) so that the
    traced nodes are named as in the fused export (``/encoder/...``), which the fp16 conversion
    relies on; the scorer itself is held outside the module tree and run with the given embeddings
    in place of its constant ones.
    """

    def __init__(self, scorer: nn.Module) -> None:
        super().__init__()
        self.encoder = scorer.encoder
        self._scorer = (scorer,)

    def forward(self, images: torch.Tensor, text_global: torch.Tensor,
                text_local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scorer = self._scorer[0]
        with _attributes(scorer, text_global=text_global, text_local=text_local):
            return scorer(images)


def embeddings_for(method: Any, cfg: Any, model: nn.Module, classnames: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch reference: the (global, local) embeddings the method's scorer holds for ``classnames``,
    from a model built for those names with this run's learned prompt state (the parity check's truth)."""
    with torch.no_grad():
        fresh = method.build_model(cfg, model.clip, classnames)
        learner = getattr(model, "prompt_learner", None)
        if learner is not None:
            fresh.prompt_learner.load_state_dict(learner.state_dict())
        scorer = method.scorer(fresh.float().eval())
    return scorer.text_global.float(), scorer.text_local.float()
