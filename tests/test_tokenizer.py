"""The serving-side CLIP tokenizer (taidpt/serve/tokenizer.py) gives open_clip's token ids, without torch.

The strings are generated here from a seeded recipe (no data file): class names, accents in
composed and decomposed form, CJK, Thai, Arabic, emoji sequences, punctuation, digits of several
scripts, HTML entities, mojibake, control characters, odd whitespace, the special tokens, and
texts far longer than the context.
"""

from __future__ import annotations

import gzip
import random
import subprocess
import sys
import unicodedata

import numpy as np
import open_clip
import pytest
from open_clip.tokenizer import SimpleTokenizer, default_bpe

from taidpt.serve.tokenizer import ClipTokenizer, TokenizerError, byte_symbols

NAMES = ["motor bike", "hair drier", "potted_plant", "teddy bear", "traffic light", "dining table", "tv monitor",
         "wine glass", "fire hydrant", "hot dog", "cell phone", "baseball glove", "person", "sheep", "zebra",
         "semicircle", "five pointed star", "hollow square"]
WORDS = ["a", "photo", "of", "the", "dog", "cat", "running", "on", "beach", "with", "two", "people", "X", "it's",
         "they're", "we've", "I'm", "you'll", "he'd", "don't", "O'Neil", "rock'n'roll", "e-mail", "U.S.A.", "co-op"]
ACCENTED = ["café", "naïve", "Zürich", "São Paulo", "crème brûlée", "Ångström", "façade", "jalapeño", "Øresund",
            "Łódź", "straße", "STRASSE", "İstanbul", "ǅemal", "Ωmega", "über", "résumé", "piñata", "Dvořák"]
SCRIPTS = ["東京", "北京烤鸭", "日本語のテキスト", "한국어 문장", "中文，标点。", "Москва", "Ελληνικά", "עברית",
           "العربية", "हिन्दी", "ภาษาไทย", "ქართული", "Հայերեն", "ᚠᚢᚦ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ｶﾀｶﾅ", "ＦＵＬＬ ｗｉｄｔｈ"]
EMOJI = ["🐶", "🐱", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "❤", "🏳️‍🌈", "🙂🙃", "✨", "☃", "🚲🏍️", "🧑🏿‍🚀"]
PUNCT = ["...", "!?", "—", "–", "«»", "¿", "¡", "'s", "’s", "“quoted”", "‘single’", "(", ")", "[x]", "{y}", "#tag",
         "@user", "$9.99", "100%", "a/b", "c\\d", "~", "^_^", ":-)", "<3", "&", "*", "|", "§", "©", "®", "™", "°"]
DIGITS = ["2023", "3.14", "1,000,000", "٠١٢٣", "१२३", "½", "²", "Ⅻ", "①", "0x1F", "7th", "42nd", "10km"]
ODD = ["&amp;", "&lt;b&gt;", "&#39;", "&amp;amp;", "&nbsp;", "&quot;hi&quot;", "cafÃ©", "â€™", "Ã¼ber", "ﬁsh",
       "\x00", "\x07", "\x1b[31mred\x1b[0m", "\u200b", "\ufeff", "\u00ad", "<start_of_text>", "<end_of_text>",
       "<START_OF_TEXT>", "</w>", "<w>", "e\u0301", "n\u0303", "A\u030a"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\u2028", " \t ", "\u202f", ""]


def generated_texts(n: int = 2400, seed: int = 1234) -> list[str]:
    """``n`` varied strings from a fixed recipe (plus a few hand-picked edge cases)."""
    rng = random.Random(seed)
    pools = [NAMES, WORDS, ACCENTED, SCRIPTS, EMOJI, PUNCT, DIGITS, ODD]
    fixed = ["", " ", "\t\n", "motor bike", "hair drier", "X X X X X X X X X X X X X X X X hair drier.",
             "a photo of a motor bike.", " ".join(["zebra"] * 120), "🐶" * 90, "東京" * 60, "a" * 500]
    out = list(fixed)
    while len(out) < n:
        parts = []
        for _ in range(rng.randint(1, 9)):
            piece = rng.choice(rng.choice(pools))
            mode = rng.random()
            if mode < 0.15:
                piece = unicodedata.normalize("NFD", piece)
            elif mode < 0.25:
                piece = piece.upper()
            elif mode < 0.3:
                piece = piece * rng.randint(2, 30)  # long runs, beyond the context at times
            parts.append(piece)
            parts.append(rng.choice(SPACES) if rng.random() < 0.8 else "")
        text = "".join(parts)
        if rng.random() < 0.1:
            text = " ".join([text] * rng.randint(5, 20))
        out.append(text)
    return out[:n]


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer(default_bpe())


def test_ids_equal_open_clip_on_generated_strings(tokenizer):
    texts = generated_texts()
    assert len(texts) >= 2000 and len(set(texts)) > 1900
    ours = tokenizer(texts)
    theirs = open_clip.tokenize(texts).numpy()
    assert ours.dtype == np.int64 and ours.shape == theirs.shape == (len(texts), 77)
    bad = [texts[i] for i in np.flatnonzero((ours != theirs).any(axis=1))]
    assert not bad, f"{len(bad)} strings differ, first: {bad[:3]!r}"
    # The set really exercises truncation, multi-byte symbols and the special tokens.
    lengths = (theirs != 0).sum(axis=1)
    assert (lengths == 77).sum() > 50 and (lengths < 10).sum() > 50
    assert (theirs[:, 1:] == tokenizer.sot_id).any() and (theirs > 256 * 2 + 40000).any()


def test_encode_and_short_contexts_match_open_clip(tokenizer):
    reference = SimpleTokenizer()
    texts = generated_texts(400, seed=7)
    for text in texts:
        assert tokenizer.encode(text) == reference.encode(text), repr(text)
    for length in (5, 16, 40):
        np.testing.assert_array_equal(tokenizer(texts, length), reference(texts, context_length=length).numpy())


def test_decode_round_trips_words(tokenizer):
    ids = tokenizer(["X X X hair drier."])[0]
    assert tokenizer.decode(ids) == "x x x hair drier ."
    assert tokenizer.decode(tokenizer(["café 東京"])[0]) == "café 東京"


def test_byte_symbols_are_a_printable_bijection():
    pairs = byte_symbols()
    assert sorted(b for b, _ in pairs) == list(range(256))
    symbols = [s for _, s in pairs]
    assert len(set(symbols)) == 256 and not any(s.isspace() for s in symbols)


def test_unreadable_vocabulary_is_one_line(tmp_path):
    bad = tmp_path / "vocab.txt.gz"
    bad.write_text("not gzip")
    with pytest.raises(TokenizerError, match=r"vocab\.txt\.gz: not a readable BPE vocabulary"):
        ClipTokenizer(bad)
    short = tmp_path / "short.txt.gz"
    with gzip.open(short, "wt", encoding="utf-8") as fh:
        fh.write("#version\na b\n")
    with pytest.raises(TokenizerError, match="merge lines"):
        ClipTokenizer(short)


def test_imports_without_torch_or_open_clip():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['open_clip'] = None; "
            "import taidpt.serve.tokenizer as t; "
            f"tok = t.ClipTokenizer({default_bpe()!r}); print(tok(['a hair drier'])[0][:5].tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(open_clip.tokenize(["a hair drier"])[0][:5].tolist())
