"""CLIP's byte-level BPE tokenizer for serving: token ids equal to ``open_clip.tokenize``'s, without torch.

An open-vocabulary export embeds class names at serving time, so serving must tokenize exactly as training
did (:mod:`taidpt.clip.tokenizer`). This reimplements open_clip 3.x's default pipeline (``clean="lower"``
with ftfy and HTML unescaping, CLIP's pre-tokenizer through ``regex``, byte-level BPE, start/end tokens,
cut at the context length with the end token kept) over the merge list the export copies beside the model
(``taidpt.bpe_vocab``). ``tests/test_tokenizer.py`` compares it with open_clip.
"""

from __future__ import annotations

import gzip
import html
import os
from pathlib import Path
from typing import Sequence

import numpy as np

SOT_TOKEN, EOT_TOKEN = "<start_of_text>", "<end_of_text>"
END_OF_WORD = "</w>"
VOCAB_SIZE = 49408  # 256 bytes, 256 end-of-word bytes, the merges, the two special tokens
N_MERGES = VOCAB_SIZE - 2 * 256 - 2
_PIECES = (r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+")


class TokenizerError(ValueError):
    """The vocabulary file cannot be read; the message is one line naming it."""


def byte_symbols() -> list[tuple[int, str]]:
    """``(byte, symbol)`` for all 256 bytes in vocabulary order.

    The printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) come first and stand for
    themselves; the remaining bytes follow in increasing order as ``chr(256)``, ``chr(257)``, ...
    so that no symbol is whitespace or a control character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    seen = set(printable)
    rest = [b for b in range(256) if b not in seen]
    return [(b, chr(b)) for b in printable] + [(b, chr(256 + n)) for n, b in enumerate(rest)]


def clean_text(text: str) -> str:
    """open_clip's default text cleaning: ftfy, HTML unescaped twice, whitespace collapsed, lower case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class ClipTokenizer:
    """CLIP's tokenizer over the BPE merge list ``vocab_path`` (open_clip's ``bpe_simple_vocab_16e6.txt.gz``)."""

    def __init__(self, vocab_path: str | os.PathLike) -> None:
        import regex

        self.path = Path(vocab_path)
        try:
            with gzip.open(self.path, "rt", encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise TokenizerError(f"{self.path}: not a readable BPE vocabulary (gzip text expected: {exc})") from None
        merges = [tuple(line.split()) for line in lines[1:1 + N_MERGES]]
        if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
            raise TokenizerError(f"{self.path}: expected {N_MERGES} merge lines of two symbols after the header, "
                                 f"found {len(merges)}")
        symbols = byte_symbols()
        self._byte_symbol = {b: s for b, s in symbols}
        vocab = [s for _, s in symbols] + [s + END_OF_WORD for _, s in symbols] + [a + b for a, b in merges]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.tokens = vocab
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.sot_id, self.eot_id = self.ids[SOT_TOKEN], self.ids[EOT_TOKEN]
        self._pattern = regex.compile(_PIECES, regex.IGNORECASE)
        self._cache: dict[str, tuple[str, ...]] = {SOT_TOKEN: (SOT_TOKEN,), EOT_TOKEN: (EOT_TOKEN,)}

    def _merge(self, piece: str) -> tuple[str, ...]:
        """The BPE symbols of one pre-tokenized piece (already mapped to byte symbols)."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        symbols = [*piece[:-1], piece[-1] + END_OF_WORD]
        while len(symbols) > 1:
            best = min(zip(symbols, symbols[1:]), key=lambda pair: self.ranks.get(pair, N_MERGES))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        out = tuple(symbols)
        self._cache[piece] = out
        return out

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` after cleaning, without start/end tokens."""
        ids: list[int] = []
        for piece in self._pattern.findall(clean_text(text)):
            mapped = "".join(self._byte_symbol[b] for b in piece.encode("utf-8"))
            ids.extend(self.ids[s] for s in self._merge(mapped))
        return ids

    def __call__(self, texts: str | Sequence[str], context_length: int = 77) -> np.ndarray:
        """Token ids int64 ``[N, context_length]``: SOT, the text's ids, EOT, zeros; long texts are cut
        to ``context_length`` tokens with EOT as the last one (CLIP's ``truncate=True``)."""
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {context_length}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > context_length:
                ids = ids[:context_length - 1] + [self.eot_id]
            out[row, :len(ids)] = ids
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids up to EOT (SOT skipped; end-of-word marks become spaces)."""
        byte_of = {s: b for b, s in self._byte_symbol.items()}
        raw = bytearray()
        for i in (int(i) for i in ids):
            if i == self.eot_id:
                break
            if i != self.sot_id:
                token = self.tokens[i]
                word = token.removesuffix(END_OF_WORD)
                raw.extend(byte_of[ch] for ch in word)
                raw.extend(b" " if word != token else b"")
        return raw.decode("utf-8", errors="replace").strip()
