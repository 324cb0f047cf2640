"""A tiny word-level BERT tokenizer saved as a checkpoint directory (offline, no download)."""

from __future__ import annotations

import pytest

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "the a good bad movie film was is great terrible not very plot acting fun boring".split()
)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    import transformers

    directory = tmp_path_factory.mktemp("tok")
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(
        directory
    )
    return directory
