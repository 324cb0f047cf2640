"""The built-in decoder: a small Llama (GQA, SwiGLU, RMSNorm, rotary) trained on bundled text.

The recipe is data (a frozen dataclass). :func:`tiny_llama_checkpoint` trains it once --
a byte-level BPE tokenizer on the training documents, then the model on their packed blocks
-- and caches the result as an ordinary Hugging Face checkpoint directory (``config.json``,
``model.safetensors``, tokenizer files) under a content key of the recipe, so that the
``causal-lm`` task tokenizes with its tokenizer and ``AutoModelForCausalLM`` loads it.

It trains on the *training* documents of the causal-lm task's default split
(``pydoc_data.topics``, ``heldout_fraction`` 0.1, ``seed`` 0): a search with that split never
scores it on text it was trained on. Another split seed or fraction would hold out documents
it has seen; the recipe's ``split_seed`` / ``heldout_fraction`` must then follow the spec's.

Example:
    >>> path = tiny_llama_checkpoint(TinyLlamaRecipe(), "cache/")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from paretoforge._io import atomic_write_json
from paretoforge.models._train import batch_order, warmup_cosine

__all__ = ["DEFAULT_TINY_LLAMA", "TinyLlamaRecipe", "tiny_llama_checkpoint", "train_tiny_llama"]


@dataclass(frozen=True)
class TinyLlamaRecipe:
    """Architecture, tokenizer and training of the built-in decoder.

    Attributes:
        vocab_size: Tokens of the byte-level BPE tokenizer.
        hidden_size: Width of the residual stream.
        num_layers: Decoder layers.
        num_heads: Query heads per layer.
        num_kv_heads: Key/value heads (groups) per layer; divides ``num_heads``.
        intermediate_size: SwiGLU width.
        block_size: Tokens per training block (and ``max_position_embeddings`` / 2).
        steps: Optimizer steps.
        batch_size: Blocks per step.
        lr: Peak AdamW learning rate (warm-up, then cosine decay).
        heldout_fraction: Fraction of documents held out (never trained on).
        split_seed: Seed of the document split.
        seed: Seed of the weights and the data order.
    """

    vocab_size: int = 1024
    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 192
    block_size: int = 64
    steps: int = 400
    batch_size: int = 16
    lr: float = 3e-3
    heldout_fraction: float = 0.1
    split_seed: int = 0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)

    @property
    def key(self) -> str:
        """Content key: sha256 of the canonical recipe JSON, 16 hex digits."""
        blob = json.dumps({"recipe": "tiny-llama", **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


DEFAULT_TINY_LLAMA = TinyLlamaRecipe()


def _documents(recipe: TinyLlamaRecipe) -> list[str]:
    from paretoforge.tasks.causal_lm import pydoc_documents, split_documents

    docs = pydoc_documents()
    train, _ = split_documents(len(docs), recipe.heldout_fraction, recipe.split_seed)
    return [docs[i] for i in train]


def train_tiny_llama(recipe: TinyLlamaRecipe) -> tuple[Any, Any, dict[str, Any]]:
    """Train the tokenizer and the model of ``recipe`` on the training documents.

    Returns:
        ``(model, tokenizer, info)``: the model in eval mode, and ``info`` with the final
        training loss, the token count and the seconds taken.
    """
    import transformers

    from paretoforge.models.tokenizer import train_bpe_tokenizer
    from paretoforge.tasks.causal_lm import pack_blocks

    t0 = time.perf_counter()
    docs = _documents(recipe)
    tok = train_bpe_tokenizer(docs, vocab_size=recipe.vocab_size)
    ids = tok(docs, add_special_tokens=False)["input_ids"]
    blocks = torch.from_numpy(pack_blocks(ids, recipe.block_size, tok.eos_token_id))
    config = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=recipe.hidden_size,
        num_hidden_layers=recipe.num_layers, num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads,
        head_dim=recipe.hidden_size // recipe.num_heads,
        intermediate_size=recipe.intermediate_size,
        max_position_embeddings=2 * recipe.block_size, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False, attn_implementation="eager")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = transformers.LlamaForCausalLM(config)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": rest, "weight_decay": 0.0}], lr=recipe.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, recipe.steps, recipe.steps // 20))
    gen = torch.Generator().manual_seed(recipe.seed)
    model.train()
    step, loss = 0, torch.tensor(float("nan"))
    while step < recipe.steps:
        for idx in batch_order(len(blocks), recipe.batch_size, gen):
            xb = blocks[idx]  # (B, T)
            loss = model(input_ids=xb, labels=xb, use_cache=False).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step >= recipe.steps:
                break
    info = {"train_loss": float(loss.detach()), "train_blocks": len(blocks),
            "train_documents": len(docs), "train_seconds": round(time.perf_counter() - t0, 1),
            "torch_threads": torch.get_num_threads()}
    return model.eval(), tok, info


def tiny_llama_checkpoint(recipe: TinyLlamaRecipe, cache_dir: str | os.PathLike[str]) -> Path:
    """The checkpoint directory of ``recipe``: trained once, then found in
    ``cache_dir/<recipe.key>/`` (written to a temporary directory and renamed into place,
    so a crash never leaves half an entry)."""
    final = Path(cache_dir) / recipe.key
    if (final / "info.json").is_file():
        return final
    model, tok, info = train_tiny_llama(recipe)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{recipe.key}.", suffix=".tmp"))
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        atomic_write_json(tmp / "info.json", {"key": recipe.key, "recipe": recipe.to_dict(),
                                              **info})
        tmp.chmod(0o755)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: its entry is the same
            if not (final / "info.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
