"""CLIP's BPE tokenizer (open_clip's copy of OpenAI's), shared by prompts and captions."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def tokenize(texts: str | list[str], context_length: int = 77) -> torch.Tensor:
    """Token ids [N, context_length] with SOT/EOT; texts longer than the context are truncated
    with EOT kept as the last token (CLIP's ``truncate=True`` behaviour)."""
    if isinstance(texts, str):
        texts = [texts]
    return _tokenizer()(list(texts), context_length=context_length)


def encode_words(text: str) -> list[int]:
    """BPE ids of ``text`` without SOT/EOT (used to count the tokens of a class name)."""
    return _tokenizer().encode(text)
