"""Causal language modelling: perplexity of a decoder on held-out text, in packed blocks.

Texts are documents: the paragraphs of a ``.txt`` file (split at blank lines), the ``text``
field of each line of a ``.jsonl`` file, or, by default, the topics of CPython's bundled
documentation (``pydoc_data.topics``, so the task needs no download). Documents are split into
training and held-out ones first (seeded), then each side is tokenized with the checkpoint's
own tokenizer, the documents joined by its end-of-sequence token and cut into blocks of
``block_size`` tokens, so that no held-out token is ever trained on and every block is full
(no padding). Quality is the perplexity of the next token on the held-out blocks (lower is
better); ``next_token_accuracy`` is the fraction of positions whose arg-max is the next token.

A candidate is exported for generation: one KV-cache graph serving prefill and decode
(:mod:`paretoforge.kernels.decoder_export`), scored as a prefill of each held-out block, and
timed both ways: ``latency_p50_ms@PROFILE`` is a prefill of one block, and
``decode_ms_per_token@PROFILE`` one decode step after a past of ``block_size`` tokens.

Example:
    >>> from paretoforge.tasks import load_task
    >>> task = load_task("causal-lm", checkpoint="tiny-llama/")  # doctest: +SKIP
    >>> task.x_train["input_ids"].shape  # doctest: +SKIP
    (512, 64)
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import random
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import SpecError
from paretoforge.tasks._base import TaskData, check_split_params
from paretoforge.tasks._contract import ExportHead, Task, register_task

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

__all__ = [
    "CausalLMTask",
    "causal_lm_loss",
    "load_causal_lm_task",
    "next_token_accuracy",
    "next_token_nll",
    "pack_blocks",
    "perplexity",
    "pydoc_documents",
    "read_documents",
    "split_documents",
]

#: The metrics of the task, the quality metric first.
METRICS: dict[str, str] = {"perplexity": "minimize", "next_token_accuracy": "maximize"}

_PARAGRAPH = re.compile(r"\n\s*\n")


# -- documents ------------------------------------------------------------------------------


def pydoc_documents() -> list[str]:
    """The topics of CPython's bundled documentation (``pydoc_data.topics``), sorted by name,
    each one document (stripped; empty ones dropped). About 460,000 characters.

    Example:
        >>> docs = pydoc_documents()
        >>> len(docs) > 50 and all(d == d.strip() and d for d in docs)
        True
    """
    from pydoc_data.topics import topics

    return [t.strip() for _, t in sorted(topics.items()) if t.strip()]


def read_documents(path: str | os.PathLike[str], *, text_column: str = "text") -> list[str]:
    """Documents of a ``.txt`` file (its paragraphs: blocks between blank lines) or of a
    ``.jsonl`` file (``text_column`` of each line), in file order, empty ones dropped.

    Raises:
        SpecError: The file is missing, of another type, not UTF-8, a line is not a JSON object
            with the text field, or there is no text; the message names the file and line.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise SpecError(
            f"causal-lm: text file {str(path)!r} has suffix {path.suffix!r}; supported: .txt "
            f"(paragraphs separated by blank lines) or .jsonl (a {text_column!r} field)."
        )
    if not path.is_file():
        raise SpecError(f"causal-lm: text file {str(path)!r} does not exist; check task.data.")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"causal-lm: {str(path)!r} is not UTF-8 text: {exc}.") from None
    docs: list[str] = []
    if suffix == ".txt":
        docs = [p.strip() for p in _PARAGRAPH.split(raw)]
    else:
        for line_no, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise SpecError(f"causal-lm: {str(path)!r} line {line_no}: not JSON "
                                f"({exc}).") from None
            text = obj.get(text_column) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise SpecError(
                    f"causal-lm: {str(path)!r} line {line_no}: expected a JSON object with a "
                    f"string {text_column!r} field; set task.params.text_column to its name."
                )
            docs.append(text.strip())
    docs = [d for d in docs if d]
    if not docs:
        raise SpecError(f"causal-lm: text file {str(path)!r} holds no text.")
    return docs


# -- the split and the blocks ---------------------------------------------------------------


def split_documents(n_docs: int, heldout_fraction: float, seed: int) -> tuple[list[int],
                                                                               list[int]]:
    """Training and held-out document indices (each ascending): a ``random.Random(seed)``
    shuffle, the first ``max(1, round(heldout_fraction * n_docs))`` held out.

    The one place the task splits; blocks are cut after it, so that the two sides share no
    document.

    Raises:
        SpecError: fewer than 2 documents.

    Example:
        >>> train, held = split_documents(10, 0.2, seed=0)
        >>> len(held), sorted(train + held) == list(range(10))
        (2, True)
    """
    if n_docs < 2:
        raise SpecError(f"causal-lm: {n_docs} document(s) cannot be split into training and "
                        "held-out text; give at least 2 (paragraphs of a .txt, lines of a "
                        ".jsonl).")
    order = list(range(n_docs))
    random.Random(int(seed)).shuffle(order)
    n_held = min(n_docs - 1, max(1, round(float(heldout_fraction) * n_docs)))
    return sorted(order[n_held:]), sorted(order[:n_held])


def pack_blocks(token_lists: list[list[int]], block_size: int, eos_id: int | None,
                max_blocks: int | None = None) -> np.ndarray:
    """Join token lists (each followed by ``eos_id`` when there is one) and cut the stream
    into full blocks of ``block_size``; the remainder is dropped. int64 ``(N, block_size)``.

    Example:
        >>> pack_blocks([[1, 2, 3], [4, 5]], 3, eos_id=0).tolist()
        [[1, 2, 3], [0, 4, 5]]
    """
    import numpy as np

    stream: list[int] = []
    for ids in token_lists:
        stream.extend(ids)
        if eos_id is not None:
            stream.append(int(eos_id))
    n = len(stream) // block_size
    if max_blocks is not None:
        n = min(n, int(max_blocks))
    return np.asarray(stream[: n * block_size], dtype=np.int64).reshape(n, block_size)


def _check_int(name: str, value: Any, low: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise SpecError(f"causal-lm: {name} must be an integer >= {low}, got {value!r}.")


def load_causal_lm_task(
    checkpoint: str,
    path: str | os.PathLike[str] | None = None,
    heldout_fraction: float = 0.1,
    seed: int = 0,
    block_size: int = 64,
    max_train_blocks: int | None = 512,
    max_heldout_blocks: int | None = 64,
    text_column: str = "text",
    metric: str = "perplexity",
) -> TaskData:
    """Packed blocks of training and held-out text, tokenized with the checkpoint's tokenizer.

    Args:
        checkpoint: Checkpoint directory holding the tokenizer files.
        path: A ``.txt`` or ``.jsonl`` file (:func:`read_documents`); default the
            :func:`pydoc_documents`.
        heldout_fraction: Fraction of the documents held out (:func:`split_documents`).
        seed: Seed of the split.
        block_size: Tokens per block (the model's sequence length).
        max_train_blocks: At most this many training blocks (the first ones); None: all.
        max_heldout_blocks: At most this many held-out blocks; None: all.
        text_column: The text field of a ``.jsonl`` file.
        metric: Which of the task's metrics :meth:`CausalLMTask.score` returns
            (``perplexity`` or ``next_token_accuracy``).

    Returns:
        ``x_*`` are ``{"input_ids", "attention_mask"}`` int64 ``(N, block_size)`` (the mask all
        ones: blocks are full); ``y_*`` are ``-1`` (the targets are the inputs shifted).

    Raises:
        SpecError: A parameter is out of range, the text gives no full block on one side, or
            the checkpoint has no tokenizer.
    """
    import numpy as np

    from paretoforge.tasks.text import load_tokenizer

    check_split_params("causal-lm", heldout_fraction, seed)
    _check_int("block_size", block_size, 2)
    _check_int("max_train_blocks", max_train_blocks, 1, optional=True)
    _check_int("max_heldout_blocks", max_heldout_blocks, 1, optional=True)
    if metric not in METRICS:
        raise SpecError(f"causal-lm: metric must be one of {', '.join(METRICS)}, got "
                        f"{metric!r}.")
    docs = read_documents(path, text_column=text_column) if path is not None \
        else pydoc_documents()
    source = f"documents of {str(path)!r}" if path is not None else "pydoc_data.topics"
    train_idx, heldout_idx = split_documents(len(docs), heldout_fraction, seed)
    tokenizer = load_tokenizer(checkpoint)
    eos = tokenizer.eos_token_id

    def blocks(idx: list[int], cap: int | None, side: str) -> np.ndarray:
        ids = tokenizer([docs[i] for i in idx], add_special_tokens=False)["input_ids"]
        out = pack_blocks(ids, block_size, eos, cap)
        if len(out) == 0:
            raise SpecError(
                f"causal-lm: the {side} documents of {source} give no full block of "
                f"{block_size} tokens; use a smaller block_size or more text.")
        return out

    x_train = blocks(train_idx, max_train_blocks, "training")
    x_held = blocks(heldout_idx, max_heldout_blocks, "held-out")
    sha = hashlib.sha256(np.asarray(heldout_idx, dtype="<i8").tobytes()).hexdigest()
    return TaskData(
        name="causal-lm",
        x_train={"input_ids": x_train, "attention_mask": np.ones_like(x_train)},
        y_train=np.full(len(x_train), -1, dtype=np.int64),
        x_heldout={"input_ids": x_held, "attention_mask": np.ones_like(x_held)},
        y_heldout=np.full(len(x_held), -1, dtype=np.int64),
        num_classes=0,
        input_name="input_ids",
        metric=metric,
        preprocessing=(
            f"{source}, {type(tokenizer).__name__} from {str(checkpoint)!r} "
            f"(add_special_tokens=False), documents joined by eos_token_id={eos}, packed into "
            f"blocks of {block_size} tokens (remainder dropped); attention_mask all ones"
        ),
        split={
            "method": "random.Random(seed).shuffle of the documents; the first "
                      "round(heldout_fraction * n) held out; blocks packed per side",
            "texts": str(path) if path is not None else "pydoc_data.topics",
            "seed": int(seed),
            "heldout_fraction": float(heldout_fraction),
            "n_documents": len(docs),
            "n_train_documents": len(train_idx),
            "n_heldout_documents": len(heldout_idx),
            "n_train": int(len(x_train)),
            "n_heldout": int(len(x_held)),
            "block_size": int(block_size),
            "heldout_indices_sha256": sha,
            "eos_token_id": eos,
        },
    )


# -- scores ---------------------------------------------------------------------------------


def next_token_nll(logits: np.ndarray, input_ids: np.ndarray,
                   chunk: int = 8) -> tuple[float, float, int]:
    """Summed next-token negative log-likelihood, correct arg-max count and position count of
    ``logits`` ``(N, T, V)`` against ``input_ids`` ``(N, T)`` (position ``t`` predicts
    ``t + 1``), in float64, ``chunk`` blocks at a time.

    Example:
        >>> import numpy as np
        >>> nll, correct, n = next_token_nll(np.zeros((1, 3, 4)), np.array([[0, 1, 2]]))
        >>> round(nll / n, 6) == round(float(np.log(4)), 6), n
        (True, 2)
    """
    import numpy as np

    logits = np.asarray(logits)
    ids = np.asarray(input_ids)
    if logits.ndim != 3 or logits.shape[:2] != ids.shape:
        raise ValueError(f"logits {list(logits.shape)} do not fit input_ids "
                         f"{list(ids.shape)}: expected (N, T, V) for (N, T)")
    total, correct = 0.0, 0
    for i in range(0, len(ids), chunk):
        z = logits[i : i + chunk, :-1].astype(np.float64)  # (B, T-1, V)
        target = ids[i : i + chunk, 1:]  # (B, T-1)
        top = z.max(-1, keepdims=True)
        logz = np.log(np.exp(z - top).sum(-1)) + top[..., 0]  # (B, T-1)
        picked = np.take_along_axis(z, target[..., None], -1)[..., 0]
        total += float((logz - picked).sum())
        correct += int((z.argmax(-1) == target).sum())
    return total, correct, int(ids.shape[0] * (ids.shape[1] - 1))


def perplexity(logits: np.ndarray, input_ids: np.ndarray) -> float:
    """``exp`` of the mean next-token NLL (:func:`next_token_nll`)."""
    import math

    nll, _, n = next_token_nll(logits, input_ids)
    return float(math.exp(nll / n))


def next_token_accuracy(logits: np.ndarray, input_ids: np.ndarray) -> float:
    """Fraction of positions whose arg-max is the next token (:func:`next_token_nll`)."""
    _, correct, n = next_token_nll(logits, input_ids)
    return correct / n


def causal_lm_loss() -> Callable[..., Any]:
    """The label-free importance loss: summed over examples, each example's mean next-token
    cross-entropy of the model's per-token ``logits``."""
    import torch

    def loss(output: Any, inputs: Any, labels: Any) -> torch.Tensor:
        logits = output.logits if hasattr(output, "logits") else output[0]  # (B, T, V)
        ids = inputs["input_ids"]
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T-1)
        return ce.mean(1).sum()

    return loss


# -- the task -------------------------------------------------------------------------------


@register_task
class CausalLMTask(Task):
    """Next-token prediction by a decoder checkpoint: perplexity on held-out documents."""

    name = "causal-lm"
    metrics = METRICS  # type: ignore[assignment]
    families = ("gpt2", "llama", "mistral", "qwen2", "qwen3")
    data = "your text: a .txt file (paragraphs) or a .jsonl file with a text field"
    distill_losses = ("logits",)
    decoder = True

    def load(self, checkpoint: str, path: str | os.PathLike[str] | None = None,
             heldout_fraction: float = 0.1, seed: int = 0, block_size: int = 64,
             max_train_blocks: int | None = 512, max_heldout_blocks: int | None = 64,
             text_column: str = "text", metric: str = "perplexity") -> TaskData:
        return load_causal_lm_task(
            checkpoint, path=path, heldout_fraction=heldout_fraction, seed=seed,
            block_size=block_size, max_train_blocks=max_train_blocks,
            max_heldout_blocks=max_heldout_blocks, text_column=text_column, metric=metric)

    def importance_loss(self, state: Mapping[str, Any]) -> Callable[..., Any]:
        return causal_lm_loss()

    def describe_base(self, base: nn.Module, data: TaskData) -> str:
        import torch

        ids = torch.as_tensor(data.feeds("heldout")["input_ids"][:8])
        with torch.no_grad():
            logits = base.eval()(input_ids=ids, use_cache=False).logits.numpy()
        return f"held-out perplexity {perplexity(logits, ids.numpy()):.2f} (first 8 blocks)"

    def export_head(self, model: nn.Module, state: Mapping[str, Any],
                    data: TaskData) -> ExportHead:
        """The causal LM itself, exported as one KV-cache graph (prefill and decode); its
        decode step is timed after a past of one block (``block_size`` tokens)."""
        block = int(data.feeds("train")["input_ids"].shape[1])
        return ExportHead(module=model, output_name="logits",
                          output_shape=["sequence", int(model.config.vocab_size)],
                          extra={"per_token": True}, decode_past=block)

    def score(self, outputs: np.ndarray, data: TaskData, state: Mapping[str, Any]) -> float:
        ids = data.feeds("heldout")["input_ids"]  # (N, T); outputs (N, T, V)
        if data.metric == "next_token_accuracy":
            return float(next_token_accuracy(outputs, ids))
        return perplexity(outputs, ids)

    def distill_options(self, data: TaskData, state: Mapping[str, Any],
                        recovery: Any) -> dict[str, Any]:
        """Pure distillation on the per-token logits (temperature), plus the hidden states
        when ``recovery.hidden_weight`` > 0: the blocks have no labels."""
        return {"labels": None}
