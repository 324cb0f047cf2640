"""A small byte-level BPE tokenizer trained from bundled text: no download, deterministic.

The built-in decoder recipe and the tests need a tokenizer that a checkpoint directory can
carry. :func:`train_bpe_tokenizer` trains one with Hugging Face ``tokenizers`` (byte-level, so
every string encodes and decodes back exactly) and wraps it as a
``PreTrainedTokenizerFast`` that ``AutoTokenizer.from_pretrained`` loads from the directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["SPECIAL_TOKENS", "train_bpe_tokenizer"]

#: Special tokens, with ids 0, 1, 2: padding / unknown, beginning and end of sequence.
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>")


def train_bpe_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer of ``vocab_size`` tokens trained on ``texts``.

    Training sees the texts in the order given and single-threaded merges are deterministic,
    so the same texts give the same vocabulary. Ids 0..2 are :data:`SPECIAL_TOKENS`
    (``pad``/``unk`` = ``<pad>``, ``bos`` = ``<s>``, ``eos`` = ``</s>``), then the 256 bytes.

    Example:
        >>> tok = train_bpe_tokenizer(["the cat sat on the mat"] * 20, vocab_size=300)
        >>> tok.decode(tok("the mat")["input_ids"]), tok.eos_token_id
        ('the mat', 2)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size={vocab_size} leaves no room for the 256 bytes and "
                         f"{len(SPECIAL_TOKENS)} special tokens; use at least 259.")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    core.train_from_iterator(list(texts), trainer=trainer)
    pad, bos, eos = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=pad, unk_token=pad,
                                   bos_token=bos, eos_token=eos)
