"""CLIP's text tower over token ids or token embeddings, with per-position outputs.

TaI-DPT needs what the stock ``encode_text`` does not give: prompts entering as *embeddings* (learned
contexts spliced between token embeddings), and the projected feature of *every* caption position (the
dense text features that stand in for image locations). The transformer is causal, so
:meth:`TextTower.forward` accepts sequences cut to the batch's longest real one: the features are those
of a run at 77 tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taidpt.clip.tokenizer import tokenize


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

    def forward_shared_prefix(self, prefix: torch.Tensor, tails: torch.Tensor, eot_in_tail: torch.Tensor) -> torch.Tensor:
        """Projected EOT features [N, D] of N sequences that share their first P embeddings.

        ``prefix`` [P, width] is common to every sequence (SOS + generic contexts), ``tails``
        [N, T, width] holds what follows it, ``eot_in_tail`` [N] the EOT index inside the tail.
        Under causal attention the prefix's activations do not depend on the tails, so each layer
        runs the prefix once and lets every tail attend to the shared prefix keys/values: exactly
        the computation of :meth:`forward` on ``cat(prefix, tail)`` with ~N times less prefix work.
        """
        p_len, (n, t_len, _) = prefix.shape[0], tails.shape
        if p_len + t_len > self.context_length:
            raise ValueError(f"prefix {p_len} + tail {t_len} tokens exceed the context length {self.context_length}")
        pos = self.positional_embedding.to(prefix.dtype)
        xp = (prefix + pos[:p_len]).unsqueeze(0)  # [1, P, W]
        xt = tails + pos[p_len : p_len + t_len]  # [N, T, W]
        prefix_mask = self._mask(p_len, prefix.device)
        # tails see the whole prefix and themselves causally
        tail_mask = torch.cat([torch.zeros(t_len, p_len, device=prefix.device, dtype=xt.dtype),
                               self._mask(t_len, prefix.device)], dim=1)
        for block in self.transformer.resblocks:
            xp, xt = _block_with_shared_prefix(block, xp, xt, prefix_mask, tail_mask)
        h = self.ln_final(xt[torch.arange(n, device=xt.device), eot_in_tail])
        return self.project(h)

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


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    b, length, width = x.shape
    return x.reshape(b, length, n_heads, width // n_heads).transpose(1, 2)


def _block_with_shared_prefix(
    block: nn.Module, xp: torch.Tensor, xt: torch.Tensor, prefix_mask: torch.Tensor, tail_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pre-LN residual attention block (open_clip's ResidualAttentionBlock) on a shared prefix
    ``xp`` [1, P, W] and tails ``xt`` [N, T, W] that attend to it."""
    attn: nn.MultiheadAttention = block.attn
    heads, width = attn.num_heads, xp.shape[-1]
    n = xt.shape[0]
    qp, kp, vp = F.linear(block.ln_1(xp), attn.in_proj_weight, attn.in_proj_bias).split(width, dim=-1)
    qt, kt, vt = F.linear(block.ln_1(xt), attn.in_proj_weight, attn.in_proj_bias).split(width, dim=-1)
    qp, kp, vp, qt, kt, vt = (_heads(z, heads) for z in (qp, kp, vp, qt, kt, vt))
    out_p = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=prefix_mask)
    keys = torch.cat([kp.expand(n, -1, -1, -1), kt], dim=2)
    values = torch.cat([vp.expand(n, -1, -1, -1), vt], dim=2)
    out_t = F.scaled_dot_product_attention(qt, keys, values, attn_mask=tail_mask)

    def finish(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], width)
        x = x + block.ls_1(attn.out_proj(out))
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    return finish(xp, out_p), finish(xt, out_t)
