"""Double-grained prompt learner: a global and a local set of learnable context vectors.

Prompt for class ``c`` (class-token position "end"): ``[SOS] ctx_1..ctx_N <name tokens> . [EOS]``.
Parameter names follow the reference implementation so its checkpoints load: ``ctx`` is the
*global* (coarse) context, ``ctx_double`` the *local* (fine) one. The fixed SOS/name/EOS token
embeddings are non-persistent buffers: they are rebuilt from the current class names, never
saved, exactly as CoOp ignores ``token_prefix``/``token_suffix`` on load.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from taidpt.clip.text_encoder import TextTower, eot_positions
from taidpt.clip.tokenizer import encode_words

log = logging.getLogger(__name__)

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


def clean_classname(name: str) -> str:
    """Class names enter prompts with underscores as spaces (``potted_plant`` -> ``potted plant``)."""
    return name.replace("_", " ")


class DoublePromptLearner(nn.Module):
    """Learnable global (``ctx``) and local (``ctx_double``) contexts and the prompts built from them."""

    def __init__(
        self,
        classnames: Sequence[str],
        text: TextTower,
        *,
        n_ctx: int = 16,
        csc: bool = False,
        ctx_init: str = "",
        class_token_position: str = "end",
    ) -> None:
        super().__init__()
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(f"CLASS_TOKEN_POSITION must be one of {CLASS_TOKEN_POSITIONS}, got {class_token_position!r}")
        if not classnames:
            raise ValueError("the class list is empty")
        names = [clean_classname(c) for c in classnames]
        n_cls, width = len(names), text.width
        dtype = text.dtype

        ctx_init = ctx_init.replace("_", " ").strip()
        if ctx_init:
            init_ids = text.tokenize([ctx_init])
            n_ctx = len(encode_words(ctx_init))
            with torch.no_grad():
                init = text.embed(init_ids)[0, 1 : 1 + n_ctx].clone()
            ctx = init.expand(n_cls, -1, -1).clone() if csc else init
            ctx_double = ctx.clone()
            prefix_words = ctx_init
        else:
            if n_ctx < 1:
                raise ValueError(f"N_CTX must be >= 1, got {n_ctx}")
            shape = (n_cls, n_ctx, width) if csc else (n_ctx, width)
            ctx = torch.empty(shape, dtype=dtype)
            nn.init.normal_(ctx, std=0.02)
            ctx_double = torch.empty(shape, dtype=dtype)
            nn.init.normal_(ctx_double, std=0.02)
            prefix_words = " ".join(["X"] * n_ctx)
        log.info("prompt contexts: %d tokens, %s, init %r, class token %s",
                 n_ctx, "class-specific" if csc else "generic", ctx_init or "N(0, 0.02)", class_token_position)

        self.ctx = nn.Parameter(ctx)
        self.ctx_double = nn.Parameter(ctx_double)
        self.n_cls, self.n_ctx, self.csc = n_cls, n_ctx, csc
        self.class_token_position = class_token_position
        self.classnames = tuple(classnames)
        self.name_lens = [len(encode_words(n)) for n in names]

        token_ids = text.tokenize([f"{prefix_words} {n}." for n in names])
        with torch.no_grad():
            embedding = text.embed(token_ids)
        self.register_buffer("token_prefix", embedding[:, :1].clone(), persistent=False)
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :].clone(), persistent=False)
        self.register_buffer("token_ids", token_ids, persistent=False)
        self.register_buffer("eot", eot_positions(token_ids), persistent=False)

    @property
    def length(self) -> int:
        """Longest real prompt length (SOS .. EOT), the exact causal cut for every class prompt."""
        return int(self.eot.max().item()) + 1

    def _expand(self, ctx: torch.Tensor) -> torch.Tensor:
        return ctx if ctx.dim() == 3 else ctx.unsqueeze(0).expand(self.n_cls, -1, -1)

    def build(self, ctx: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Prompt embeddings [C, length, width] for one context set (full context length if None)."""
        ctx = self._expand(ctx)
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.class_token_position == "end":
            prompts = torch.cat([prefix, ctx, suffix], dim=1)
        else:
            rows = []
            half = self.n_ctx // 2
            for i, name_len in enumerate(self.name_lens):
                name, rest = suffix[i : i + 1, :name_len], suffix[i : i + 1, name_len:]
                c = ctx[i : i + 1]
                if self.class_token_position == "middle":
                    parts = [prefix[i : i + 1], c[:, :half], name, c[:, half:], rest]
                else:  # front
                    parts = [prefix[i : i + 1], name, c, rest]
                rows.append(torch.cat(parts, dim=1))
            prompts = torch.cat(rows, dim=0)
        return prompts if length is None else prompts[:, :length]

    @property
    def shares_prefix(self) -> bool:
        """Generic contexts with the class name at the end: every prompt starts with the same
        SOS + N_CTX embeddings, which :meth:`TextTower.forward_shared_prefix` computes once."""
        return not self.csc and self.class_token_position == "end"

    def prefix_and_tails(self, ctx: torch.Tensor, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(prefix [1 + N_CTX, width], tails [C, T, width], eot index in tail [C])`` of one context
        set, for prompts cut to ``length`` tokens (full context if None)."""
        if not self.shares_prefix:
            raise ValueError("a shared prefix needs generic contexts and CLASS_TOKEN_POSITION 'end'")
        p_len = 1 + self.n_ctx
        prefix = torch.cat([self.token_prefix[0], ctx], dim=0)
        end = None if length is None else length - p_len
        return prefix, self.token_suffix[:, :end], self.eot - p_len

    def forward(self, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(global prompts, local prompts), each [C, length, width]."""
        return self.build(self.ctx, length), self.build(self.ctx_double, length)

    def load_reference_state(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a prompt-learner state dict, ours or the reference's (extra keys such as
        ``token_prefix``, ``temperature``, ``spatial_T`` and ``ranking_scale`` are ignored)."""
        missing = [k for k in ("ctx", "ctx_double") if k not in state_dict]
        if missing:
            raise KeyError(f"prompt-learner state is missing {missing}; found keys {sorted(state_dict)[:8]}")
        for key in ("ctx", "ctx_double"):
            value = state_dict[key]
            target = getattr(self, key)
            if value.shape != target.shape:
                raise ValueError(
                    f"checkpoint {key} has shape {tuple(value.shape)} but this model expects {tuple(target.shape)} "
                    f"({self.n_cls} classes, N_CTX={self.n_ctx}, CSC={self.csc})")
            with torch.no_grad():
                target.copy_(value.to(target.dtype))
