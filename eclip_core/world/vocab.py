"""A word-level tokenizer for the shapes world, shaped like open_clip's tokenizers.

Ids: ``pad = 0``, then ``<unk>``, ``<sot>``, the words, and ``<eot>`` last.
open_clip's text tower (``pool_type='argmax'``) pools the features at
``text.argmax(dim=-1)``; giving the end-of-text token the highest id makes that
position the end of the caption, exactly as with CLIP's BPE tokenizer.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable, Sequence

import torch

from .shapes import COLOURS, SHAPES

PAD, UNK, SOT, EOT = "<pad>", "<unk>", "<sot>", "<eot>"
FILLER_WORDS: tuple[str, ...] = ("a", "an", "and", "the", "of", "photo", "image")
DEFAULT_CONTEXT_LENGTH = 16

_NON_WORD = re.compile(r"[^a-z0-9\s]+")


#: The words the tokenizer knows; any other word is read as ``<unk>``.
WORDS: tuple[str, ...] = FILLER_WORDS + COLOURS + SHAPES


def build_vocab() -> tuple[str, ...]:
    """All tokens in id order: pad, unk, sot, words, eot (highest id)."""
    return (PAD, UNK, SOT) + WORDS + (EOT,)


class ShapesTokenizer:
    """Turns captions into fixed-length id tensors: ``<sot> words... <eot> 0 0 ...``."""

    def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH):
        if context_length < 2:
            raise ValueError("context_length must leave room for <sot> and <eot>")
        self.context_length = context_length
        self.vocab: tuple[str, ...] = build_vocab()
        self.token_to_id = {token: index for index, token in enumerate(self.vocab)}
        self.pad_token_id = self.token_to_id[PAD]
        self.unk_token_id = self.token_to_id[UNK]
        self.sot_token_id = self.token_to_id[SOT]
        self.eot_token_id = self.token_to_id[EOT]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @staticmethod
    def words(text: str) -> list[str]:
        """Lower-cased words with punctuation removed."""
        return _NON_WORD.sub(" ", text.lower()).split()

    def split_known(self, text: str) -> tuple[list[str], list[str]]:
        """(known words, unknown pieces) of a text: the words in the vocabulary, and the
        pieces the tokenizer cannot represent -- words read as ``<unk>`` and symbols such
        as emoji, which are dropped -- as written (punctuation, always dropped, is neither)."""
        known: list[str] = []
        unknown: list[str] = []
        for chunk in text.split():
            words = self.words(chunk)
            known += [w for w in words if w in self.token_to_id]
            if any(w not in self.token_to_id for w in words) or (
                    not words and any(not unicodedata.category(c).startswith("P") for c in chunk)):
                unknown.append(chunk.strip(string.punctuation) or chunk)
        return known, unknown

    def encode(self, text: str) -> list[int]:
        """Ids for one text, truncated so that ``<eot>`` always stays last."""
        ids = [self.token_to_id.get(word, self.unk_token_id) for word in self.words(text)]
        ids = ids[: self.context_length - 2]
        return [self.sot_token_id, *ids, self.eot_token_id]

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        if context_length is not None and context_length != self.context_length:
            return ShapesTokenizer(context_length)(texts)
        result = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            result[row, : len(ids)] = torch.tensor(ids)
        return result

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """The words of one id row, without special tokens (stops at ``<eot>``)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        words = []
        for index in ids:
            if index == self.eot_token_id:
                break
            if index in (self.pad_token_id, self.sot_token_id):
                continue
            words.append(self.vocab[index] if 0 <= index < len(self.vocab) else UNK)
        return " ".join(words)
