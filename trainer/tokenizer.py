"""The text tokenizer, shipped inside every model directory.

The tiny BERT's tokenizer is built from a word list: a WordPiece vocabulary with BERT's special
tokens where every word of the corpus is one token, so reports tokenise without downloads and
unknown words become ``[UNK]``. A model on a pretrained text encoder ships that encoder's own
tokenizer (:mod:`forgetmi_trainer.encoders`); :func:`load_tokenizer` reads either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of ``text``, as BERT's basic tokenizer splits them."""
    return _WORD.findall(text.lower())


def build_vocabulary(texts: Iterable[str]) -> list[str]:
    """Special tokens, then every distinct word of ``texts`` in sorted order."""
    seen = sorted({w for text in texts for w in words(text)} - set(SPECIAL_TOKENS))
    return [*SPECIAL_TOKENS, *seen]


def build_tokenizer(vocabulary: list[str], directory: Path, max_length: int = 32) -> PreTrainedTokenizerBase:
    """A tokenizer over ``vocabulary``, saved into ``directory`` (``tokenizer.json`` and friends)."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {word: i for i, word in enumerate(vocabulary)}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=max_length)
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved next to a model, whichever Hugging Face tokenizer it is (local files only)."""
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
