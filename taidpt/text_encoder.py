"""CLIP's text tower over token ids or token embeddings, with per-position outputs.

TaI-DPT needs two things the stock ``encode_text`` does not give: prompts enter as *embeddings*
(learned context vectors spliced between token embeddings), and captions must yield the projected
feature of *every* position (the "dense" text features that stand in for image locations).

The transformer is causal, so the features of positions ``0..k`` do not depend on anything after
``k``. :meth:`TextTower.forward` therefore accepts sequences shorter than the context length; cutting
a batch to its longest real sequence gives the same features as running at 77 tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from .tokenizer import tokenize


def causal_mask(length: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive causal mask of shape [length, length]: 0 on and below the diagonal, -inf above."""
    mask = torch.full((length, length), float("-inf"), device=device, dtype=dtype)
    return mask.triu_(1)


def eot_positions(token_ids: torch.Tensor) -> torch.Tensor:
    """Index of the end-of-text token in each row (CLIP's EOT has the largest id)."""
    return token_ids.argmax(dim=-1)


def real_length(token_ids: torch.Tensor) -> int:
    """Number of positions needed to cover every row's EOT token (the causal cut length)."""
    return int(eot_positions(token_ids).max().item()) + 1


class TextTower(nn.Module):
    """Frozen CLIP text transformer that works on embeddings and returns projected features.

    Holds references to the CLIP model's modules (no copies), so loading CLIP weights once serves
    both this tower and the image side.
    """

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.token_embedding = clip_model.token_embedding
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.context_length = int(clip_model.positional_embedding.shape[0])
        self.width = int(clip_model.ln_final.weight.shape[0])
        self._masks: dict[tuple[int, str], torch.Tensor] = {}

    @property
    def dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids [N, context_length] (long captions are truncated, EOT kept last)."""
        return tokenize(texts, self.context_length)

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings [N, L, width] of token ids [N, L]."""
        return self.token_embedding(token_ids).to(self.dtype)

    def _mask(self, length: int, device: torch.device) -> torch.Tensor:
        key = (length, str(device))
        if key not in self._masks:
            self._masks[key] = causal_mask(length, device=device, dtype=self.dtype)
        return self._masks[key]

    def hidden(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Run the causal transformer and ln_final over embeddings [N, L, width] (L <= context)."""
        length = embeddings.shape[1]
        if length > self.context_length:
            raise ValueError(f"sequence of {length} tokens exceeds the context length {self.context_length}")
        x = embeddings + self.positional_embedding[:length].to(embeddings.dtype)
        x = self.transformer(x, attn_mask=self._mask(length, x.device))
        return self.ln_final(x)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the text projection to hidden states [..., width] -> [..., embed_dim]."""
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(hidden)
        return hidden @ self.text_projection

    def forward(self, embeddings: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Projected EOT features [N, D] of prompt embeddings [N, L, width]; ``eot`` holds indices [N]."""
        h = self.hidden(embeddings)
        return self.project(h[torch.arange(h.shape[0], device=h.device), eot])

    def encode_sequence(self, token_ids: torch.Tensor, trim: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position projected features of token ids.

        Returns ``(features [N, L, D], token_ids [N, L])`` where ``L`` is the longest real length
        of the batch when ``trim`` is set (exact under causal attention), else the full length.
        """
        if trim:
            token_ids = token_ids[:, : real_length(token_ids)]
        return self.project(self.hidden(self.embed(token_ids))), token_ids

    def encode_ids(self, token_ids: torch.Tensor, trim: bool = True) -> torch.Tensor:
        """Projected EOT features [N, D] of token ids (CLIP's ``encode_text`` without normalisation)."""
        if trim:
            token_ids = token_ids[:, : real_length(token_ids)]
        return self.forward(self.embed(token_ids), eot_positions(token_ids))
