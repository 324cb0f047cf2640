"""Embedding fidelity: how close a compressed encoder's sentence embeddings stay to the original's.

For an encoder without a task head (e.g. all-MiniLM-L6-v2), quality is the mean cosine
similarity between the compressed model's sentence embeddings and the unpruned model's, on
held-out English sentences. Sentences come from Python's own documentation
(``pydoc_data.topics``, shipped with CPython), so the task needs no download; the sentences
used for distillation and those used for evaluation are disjoint. Token states are pooled as
the checkpoint's sentence-transformers configuration says (``modules.json`` and
``1_Pooling/config.json``): for all-MiniLM-L6-v2, mean pooling then L2 normalisation.

Example:
    >>> from paretoforge.tasks import load_task
    >>> task = load_task("embedding-fidelity", checkpoint="minilm/")  # doctest: +SKIP
    >>> pooling = Pooling.from_checkpoint("minilm/")  # doctest: +SKIP
    >>> embedding_fidelity(student, teacher, task.x_heldout, pooling)  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

import functools
import hashlib
import json
import numbers
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import SpecError
from paretoforge.tasks._base import TaskData, check_split_params, divide_heldout
from paretoforge.tasks._contract import ExportHead, Task, register_task

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

__all__ = [
    "EXTRA_TEXTS",
    "EmbeddingFidelityTask",
    "PooledEncoder",
    "POOLING_MODES",
    "Pooling",
    "contrastive_loss",
    "embedding_fidelity",
    "load_embedding_task",
    "mean_cosine",
    "onnx_sentence_embeddings",
    "pydoc_sentences",
    "sentence_embeddings",
    "stdlib_docstring_sentences",
]

#: Pooling modes of sentence-transformers that :class:`Pooling` implements.
POOLING_MODES: tuple[str, ...] = ("mean", "cls", "max", "mean_sqrt_len")

_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
# Sentence-transformers' pooling flags -> our mode names.
_ST_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence embedding.

    Attributes:
        mode: One of :data:`POOLING_MODES`; padding positions (mask 0) never count.
        normalize: L2-normalise the pooled vector (sentence-transformers' ``Normalize``).

    Example:
        >>> import torch
        >>> pool = Pooling(mode="mean", normalize=False)
        >>> h = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]]])  # (B=1, T=3, H=2)
        >>> pool(h, torch.tensor([[1, 1, 0]])).tolist()
        [[2.0, 1.0]]
    """

    mode: str = "mean"
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise SpecError(
                f"Unknown pooling mode {self.mode!r}. Available: {', '.join(POOLING_MODES)}."
            )

    @classmethod
    def from_checkpoint(cls, directory: str | os.PathLike[str]) -> Pooling:
        """The pooling a sentence-transformers checkpoint directory declares.

        Reads ``modules.json``: the ``Pooling`` module's ``config.json`` gives the mode, a
        ``Normalize`` module turns on normalisation. A directory without ``modules.json`` is a
        plain encoder: mean pooling, no normalisation.

        Raises:
            SpecError: The files are unreadable, or declare no or several pooling modes.
        """
        directory = Path(directory)
        modules_path = directory / "modules.json"
        if not modules_path.is_file():
            return cls(mode="mean", normalize=False)
        try:
            modules = json.loads(modules_path.read_text(encoding="utf-8"))
            types = {m["type"]: m.get("path", "") for m in modules}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SpecError(f"Cannot read {str(modules_path)!r}: {exc}.") from None
        normalize = _ST_NORMALIZE in types
        if _ST_POOLING not in types:
            raise SpecError(
                f"{str(modules_path)!r} has no {_ST_POOLING} module; only checkpoints that pool "
                "token states are supported."
            )
        pool_path = directory / types[_ST_POOLING] / "config.json"
        try:
            cfg = json.loads(pool_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SpecError(f"Cannot read pooling config {str(pool_path)!r}: {exc}.") from None
        modes = [mode for flag, mode in _ST_FLAGS.items() if cfg.get(flag)]
        unsupported = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode") and v
                             and k not in _ST_FLAGS)  # fmt: skip
        if len(modes) != 1 or unsupported:
            raise SpecError(
                f"{str(pool_path)!r} enables pooling {modes + unsupported}; exactly one of "
                f"{', '.join(_ST_FLAGS)} is supported."
            )
        return cls(mode=modes[0], normalize=normalize)

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool ``hidden`` ``(B, T, H)`` over the positions where ``mask`` ``(B, T)`` is 1."""
        import torch

        m = mask[..., None].to(hidden.dtype)  # (B, T, 1)
        if self.mode == "cls":
            out = hidden[:, 0]
        elif self.mode == "max":
            out = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(1)
        else:
            total = (hidden * m).sum(1)  # (B, H)
            count = m.sum(1).clamp(min=1e-9)  # (B, 1)
            out = total / (count if self.mode == "mean" else count.sqrt())
        if self.normalize:
            out = torch.nn.functional.normalize(out, p=2, dim=-1)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"mode": self.mode, "normalize": self.normalize}


# -- sentences ------------------------------------------------------------------------------

_UNDERLINE = re.compile(r"[*=\-~^]+")
# A sentence ends at . ! ? or : (or one of them before a closing parenthesis) followed by a
# capital, a quote, an emphasis star or an opening parenthesis; never after "e.g." / "i.e.".
_SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?:(?<=[.!?:])|(?<=[.!?]\)))\s+(?=[A-Z\"*(])")
# Code outside the documentation's "quoted" inline literals: grammar rules, brackets, operators.
_CODE = re.compile(r"::=|[{}\[\]|<>\\$]|==|\+=|\);")
_QUOTED = re.compile(r'"[^"]*"')
_FOOTNOTE = re.compile(r"\s*\[\d+\]")  # footnote references such as "[4]"
_BULLET = re.compile(r"^(?:[-*] |\d+\. )")
_LONG_SENTENCE = 20  # words; longer sentences are split into their ';'-separated clauses


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _table_cells(lines: list[str]) -> list[str]:
    """The text of each cell of a reStructuredText grid table (``lines[0]`` is its top border);
    a cell's wrapped lines are joined."""
    cuts = [i for i, c in enumerate(lines[0]) if c == "+"]
    cells: list[str] = []
    row: list[list[str]] = [[] for _ in cuts[1:]]
    for line in lines[1:]:
        if line.startswith(("+", "|=")):  # a row border: the row's cells are complete
            cells += [" ".join(c) for c in row]
            row = [[] for _ in cuts[1:]]
        elif line.startswith("|"):
            for j, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
                if line[a + 1 : b].strip():
                    row[j].append(line[a + 1 : b].strip())
    return [c for c in cells + [" ".join(c) for c in row] if c]


def _texts(doc: str) -> Iterator[tuple[str, bool]]:
    """``(text, is_fragment)`` runs of ``doc``: paragraphs, a definition's term and body apart
    (a line followed by a more indented one is a term), and grid-table cells (fragments)."""
    for para in re.split(r"\n\s*\n", doc):
        raw = [ln for ln in para.split("\n") if ln.strip()]
        if not raw:
            continue
        indent = min(_indent(ln) for ln in raw)
        raw = [ln[indent:].rstrip() for ln in raw]
        if raw[0].startswith("+-"):
            yield from ((cell, True) for cell in _table_cells(raw))
            continue
        block: list[str] = []
        for i, ln in enumerate(raw):
            if not _UNDERLINE.fullmatch(ln.strip()):
                block.append(ln.strip())
            nxt = raw[i + 1] if i + 1 < len(raw) else None
            term = nxt is not None and _indent(nxt) > _indent(ln) and not _BULLET.match(ln.strip())
            if (nxt is None or term) and block:
                yield _BULLET.sub("", " ".join(block)), False
                block = []


def _candidates(text: str, fragment: bool) -> Iterator[tuple[str, bool]]:
    """Sentences of ``text`` (long ones as their ';' clauses), each with whether it is a
    fragment (a clause or a table cell) that may start in lower case and end without a stop."""
    for s in _SENTENCE_END.split(_FOOTNOTE.sub("", text)):
        s = s.strip()
        if s.startswith("(") and s.count("(") > s.count(")"):  # "(A. B.)": unbalanced halves
            s = s[1:]
        if s.endswith(")") and s.count(")") > s.count("("):
            s = s[:-1]
        if len(s.split()) > _LONG_SENTENCE and ";" in s:
            yield from ((clause.strip(), True) for clause in s.split(";"))
        else:
            yield s, fragment


def _is_prose(s: str, fragment: bool) -> bool:
    words = s.split()
    if not 4 <= len(words) <= 60:
        return False
    alpha = sum(w.strip("\",.;:*()").isalpha() for w in words) / len(words)
    starts = fragment or s[0].isupper() or s[0] in "\"*"
    ends = s[-1] in ".!?:" or (fragment and (s[-1].isalnum() or s[-1] in "\"*)"))
    return (alpha >= 0.5 and starts and ends and ">>>" not in s
            and not _CODE.search(_QUOTED.sub('""', s)))  # fmt: skip


def pydoc_sentences() -> list[str]:
    """English sentences from CPython's bundled documentation topics, in a fixed order.

    Each topic of ``pydoc_data.topics.topics`` (sorted by name) is cut into paragraphs, a
    definition's term apart from its body, and grid-table cells; these are split at sentence
    ends (``.``, ``!``, ``?``, ``:``), sentences of more than 20 words into their ``;``
    clauses, footnote marks dropped. A piece is kept when it reads as prose: 4..60 words, at
    least half of them alphabetic, no code outside the documentation's ``"quoted"`` inline
    literals (no ``>>>`` at all; no grammar rule ``::=``, brackets, ``==`` or ``|``), starting
    with a capital (or a quote) and ending in ``.``, ``!``, ``?`` or ``:`` -- except clauses and
    table cells, which may start in lower case and end without a stop. Duplicates are dropped.
    About 2,700 sentences on CPython 3.11.

    Example:
        >>> s = pydoc_sentences()
        >>> len(s) > 2500 and len(set(s)) == len(s)
        True
        >>> all(4 <= len(x.split()) <= 60 and ">>>" not in x for x in s)
        True
    """
    from pydoc_data.topics import topics

    return _prose_sentences(topics[key] for key in sorted(topics))


def _prose_sentences(docs: Iterable[str]) -> list[str]:
    """The prose sentences of ``docs`` in order, each once: paragraphs, terms and table cells
    (:func:`_texts`), cut at sentence ends (:func:`_candidates`), kept by :func:`_is_prose`."""
    out: list[str] = []
    seen: set[str] = set()
    for doc in docs:
        for text, fragment in _texts(doc):
            for s, frag in _candidates(text, fragment):
                if s not in seen and _is_prose(s, frag):
                    seen.add(s)
                    out.append(s)
    return out


#: Directories of the standard library that hold tests or vendored packages, not its prose.
_STDLIB_SKIP = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                          "__pycache__"})


def stdlib_docstring_sentences() -> list[str]:
    """English sentences from the docstrings of CPython's standard library, in a fixed order.

    Every ``.py`` file of the standard library (``sysconfig``'s ``stdlib`` path, sorted; test
    packages and site-packages left out) is parsed with :mod:`ast`, never imported, and the
    docstrings of its module, classes and functions are cut and filtered as
    :func:`pydoc_sentences` does. The prose is about what the library does -- mail, HTTP,
    archives, dates, threads, numbers, text -- so it widens what a distilled encoder sees
    beyond the language reference of ``pydoc_data.topics``; duplicates are dropped. 15,387
    sentences on CPython 3.11.

    Example:
        >>> s = stdlib_docstring_sentences()
        >>> len(s) > 10_000 and len(set(s)) == len(s)
        True
    """
    return list(_stdlib_docstring_sentences())


@functools.cache
def _stdlib_docstring_sentences() -> tuple[str, ...]:
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])

    def docstrings() -> Iterator[str]:
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).parts
            if any(p in _STDLIB_SKIP or p.startswith("test_") for p in parts):
                continue
            try:
                tree = ast.parse(path.read_bytes(), filename=str(path))
            except (SyntaxError, ValueError, OSError):  # a file of another Python's grammar
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):
                    yield ast.get_docstring(node) or ""

    return tuple(_prose_sentences(docstrings()))


#: ``task.params.extra_texts``: more texts for training only (importance, distillation,
#: calibration), never held out, by name.
EXTRA_TEXTS: dict[str, Callable[[], list[str]]] = {
    "stdlib-docstrings": stdlib_docstring_sentences,
}


# -- embeddings and fidelity -----------------------------------------------------------------


def _hidden(out: Any) -> torch.Tensor:
    hidden = getattr(out, "last_hidden_state", None)
    return hidden if hidden is not None else out[0]


def sentence_embeddings(
    model: nn.Module, inputs: dict[str, Any], pooling: Pooling, batch_size: int = 64
) -> torch.Tensor:
    """Pooled sentence embeddings ``(N, H)`` of a PyTorch encoder (put in eval mode)."""
    import torch

    model.eval()
    x = {k: torch.as_tensor(v) for k, v in inputs.items()}
    n = len(x["input_ids"])
    outs = []
    with torch.no_grad():
        for i in range(0, n, batch_size):
            xb = {k: v[i : i + batch_size] for k, v in x.items()}
            outs.append(pooling(_hidden(model(**xb)).float(), xb["attention_mask"]))
    return torch.cat(outs)


def onnx_sentence_embeddings(
    session: Any, inputs: dict[str, np.ndarray], pooling: Pooling, batch_size: int = 64
) -> np.ndarray:
    """Pooled embeddings ``(N, H)`` from an ONNX Runtime session whose first output is the
    last hidden state ``(B, T, H)`` (an encoder exported without a head)."""
    import numpy as np
    import torch

    names = [i.name for i in session.get_inputs()]
    n = len(inputs["input_ids"])
    outs = []
    for i in range(0, n, batch_size):
        feed = {k: np.ascontiguousarray(inputs[k][i : i + batch_size]) for k in names}
        hidden = torch.from_numpy(session.run(None, feed)[0])
        outs.append(pooling(hidden.float(), torch.from_numpy(feed["attention_mask"])).numpy())
    return np.concatenate(outs)


def mean_cosine(a: Any, b: Any) -> float:
    """Mean over rows of the cosine similarity of ``a[i]`` and ``b[i]`` (arrays ``(N, H)``)."""
    import torch

    ta, tb = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if ta.shape != tb.shape:
        raise ValueError(f"Embeddings differ in shape: {tuple(ta.shape)} vs {tuple(tb.shape)}")
    return float(torch.nn.functional.cosine_similarity(ta, tb, dim=-1).mean())


def embedding_fidelity(
    student: nn.Module, teacher: nn.Module | Any, inputs: dict[str, Any], pooling: Pooling
) -> float:
    """Mean cosine similarity of ``student``'s sentence embeddings to ``teacher``'s.

    ``teacher`` is a model, or its embeddings of ``inputs`` computed once beforehand.
    """
    ref = teacher
    if hasattr(teacher, "forward"):
        ref = sentence_embeddings(teacher, inputs, pooling)
    return mean_cosine(sentence_embeddings(student, inputs, pooling), ref)


def contrastive_loss(pooling: Pooling, temperature: float = 0.05) -> Callable[..., Any]:
    """A label-free loss for :func:`paretoforge.models.importance.compute_importance`.

    In-batch contrastive: each sentence's embedding should be most similar to itself among
    the batch (cross-entropy over the cosine-similarity matrix / ``temperature``, summed over
    examples). Unlike a distance to the unpruned model's own embeddings, whose gradient
    vanishes at the unpruned model, it scores which units keep sentences apart.
    """
    import torch

    def loss(output: Any, inputs: Any, labels: Any) -> torch.Tensor:
        emb = torch.nn.functional.normalize(pooling(_hidden(output), inputs["attention_mask"]),
                                            dim=-1)  # fmt: skip
        sim = emb @ emb.T / temperature  # (B, B)
        target = torch.arange(len(emb))
        return torch.nn.functional.cross_entropy(sim.float(), target, reduction="sum")

    return loss


# -- the task ------------------------------------------------------------------------------


def load_embedding_task(
    checkpoint: str,
    n_heldout: int = 500,
    n_train: int | None = None,
    max_length: int = 64,
    seed: int = 0,
    path: str | os.PathLike[str] | None = None,
    text_column: str = "text",
    test_fraction: float = 0.5,
    extra_texts: str | None = None,
    n_extra: int | None = None,
) -> TaskData:
    """Sentences for distilling (train) and scoring (validation, test) an encoder's embeddings.

    The texts are the user's (``path``: a ``.txt`` file with one text per line, or the
    ``text_column`` of a ``.csv`` / ``.tsv`` / ``.jsonl`` file; duplicates dropped) or, without
    ``path``, the :func:`pydoc_sentences`. They are shuffled by ``seed``; the first
    ``n_heldout`` are held out, the rest (or the first ``n_train`` of the rest) are for
    importance and distillation, so the two sets never share a text. The held-out texts are
    divided by a seeded shuffle into validation (the search's) and test (``test_fraction`` of
    them, scored once per front member after the search). Texts are tokenized with the
    checkpoint's tokenizer to ``max_length`` tokens.

    ``extra_texts`` names more texts for the training split only (:data:`EXTRA_TEXTS`, e.g.
    ``stdlib-docstrings``): distilling on text broader than the held-out kind keeps more
    quality on text unlike either. Those equal to a held-out or a training text are dropped,
    the rest shuffled by ``seed`` and the first ``n_extra`` (default: all) added to the
    training split, whose order is then shuffled once more so that a batch mixes both.

    Labels do not exist: ``y_*`` are ``-1`` and ``num_classes`` is 0; quality is
    :func:`embedding_fidelity` against the unpruned model, pooled as
    ``split["pooling"]`` says (:meth:`Pooling.from_checkpoint`).

    Raises:
        SpecError: A count is out of range, or the checkpoint has no tokenizer.
    """
    import numpy as np

    from paretoforge.tasks.text import load_tokenizer, tokenize

    if path is not None:
        from paretoforge.tasks.text import read_texts

        sentences = read_texts(path, text_column=text_column)
        source = f"texts of {str(path)!r}"
    else:
        sentences = pydoc_sentences()
        source = "pydoc_data.topics sentences"
    for name, value, low in (("n_heldout", n_heldout, 2), ("max_length", max_length, 2),
                             ("seed", seed, 0)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise SpecError(
                f"embedding-fidelity: {name} must be an integer >= {low}, got {value!r}."
            )
    check_split_params("embedding-fidelity", 0.5, seed, test_fraction)
    if n_heldout >= len(sentences):
        raise SpecError(
            f"embedding-fidelity: n_heldout={n_heldout} leaves no training texts; there are "
            f"{len(sentences)} distinct ones ({source}). Use fewer, or more texts."
        )
    order = list(range(len(sentences)))
    random.Random(int(seed)).shuffle(order)
    heldout_idx = sorted(order[:n_heldout])
    train_idx = sorted(order[n_heldout:])
    if n_train is not None:
        if isinstance(n_train, bool) or not isinstance(n_train, numbers.Integral) or n_train < 1:
            raise SpecError(
                f"embedding-fidelity: n_train must be an integer >= 1, got {n_train!r}."
            )
        train_idx = sorted(order[n_heldout : n_heldout + int(n_train)])
    train_texts = [sentences[i] for i in train_idx]
    n_extra_used = 0
    if extra_texts is not None:
        if extra_texts not in EXTRA_TEXTS:
            raise SpecError(
                f"embedding-fidelity: extra_texts={extra_texts!r} is not a known text source; "
                f"choose one of {sorted(EXTRA_TEXTS)}, or leave it out."
            )
        if n_extra is not None and (isinstance(n_extra, bool)
                                    or not isinstance(n_extra, numbers.Integral) or n_extra < 1):
            raise SpecError(
                f"embedding-fidelity: n_extra must be an integer >= 1, got {n_extra!r}."
            )
        held = {sentences[i] for i in heldout_idx}
        have = set(train_texts)
        extra = [t for t in EXTRA_TEXTS[extra_texts]() if t not in held and t not in have]
        random.Random(int(seed) + 1).shuffle(extra)
        extra = extra[: int(n_extra)] if n_extra is not None else extra
        n_extra_used = len(extra)
        train_texts += extra
        random.Random(int(seed) + 2).shuffle(train_texts)
    elif n_extra is not None:
        raise SpecError("embedding-fidelity: n_extra is set but extra_texts is not; name the "
                        f"texts (one of {sorted(EXTRA_TEXTS)}) or leave n_extra out.")
    pooling = Pooling.from_checkpoint(checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    enc_train = tokenize(tokenizer, train_texts, max_length)
    val_idx, test_idx, division = divide_heldout(heldout_idx, None, test_fraction, seed,
                                                 task="embedding-fidelity")
    enc_val = tokenize(tokenizer, [sentences[i] for i in val_idx], max_length)
    enc_test = tokenize(tokenizer, [sentences[i] for i in test_idx], max_length)
    sha = hashlib.sha256(np.asarray(heldout_idx, dtype="<i8").tobytes()).hexdigest()
    return TaskData(
        name="embedding-fidelity",
        x_train=enc_train,
        y_train=np.full(len(train_texts), -1, dtype=np.int64),
        x_validation=enc_val,
        y_validation=np.full(len(val_idx), -1, dtype=np.int64),
        x_test=enc_test,
        y_test=np.full(len(test_idx), -1, dtype=np.int64),
        num_classes=0,
        input_name="input_ids",
        metric="embedding_cosine",
        preprocessing=(
            f"{source}, {type(tokenizer).__name__} from {str(checkpoint)!r}, "
            f"padding='max_length', truncation, max_length={max_length}; pooling "
            f"{pooling.mode}{' + L2 normalize' if pooling.normalize else ''}"
        ),
        split={
            "method": f"random.Random(seed).shuffle of the {source} (distinct, in file "
                      "order); first n_heldout held out",
            "texts": str(path) if path is not None else "pydoc_data.topics",
            "seed": int(seed),
            "n_train": len(train_idx),
            **({"extra_texts": extra_texts, "n_extra": n_extra_used} if extra_texts else {}),
            "n_heldout": len(heldout_idx),
            "n_sentences": len(sentences),
            "heldout_indices_sha256": sha,
            **division,
            "pooling": pooling.to_dict(),
        },
    )


def PooledEncoder(model: nn.Module, pooling: Pooling) -> nn.Module:  # noqa: N802 (a class)
    """``model`` (an encoder) whose output is the pooled sentence embedding, for ONNX export:
    ``forward(input_ids, attention_mask, ...) -> pooling(last_hidden_state, attention_mask)``
    (L2-normalised when the checkpoint's pooling says so)."""
    import torch

    class _Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model
            self.pooling = pooling

        def forward(self, **inputs: Any) -> Any:
            return self.pooling(_hidden(self.encoder(**inputs)), inputs["attention_mask"])

    return _Pooled()


@register_task
class EmbeddingFidelityTask(Task):
    """Keep an encoder's sentence embeddings: quality is the mean cosine of a candidate's
    pooled embeddings to the unpruned model's on held-out texts (no labels)."""

    name = "embedding-fidelity"
    metrics = {"embedding_cosine": "maximize"}
    families = ("bert", "distilbert", "roberta")
    data = "your texts: a .txt file with one text per line, or a .csv/.tsv/.jsonl text column"
    split_params = ("test_fraction",)  # n_heldout / n_train in task.params
    distill_losses = ("logits", "pooled")

    def load(self, checkpoint: str, n_heldout: int = 500, n_train: int | None = None,
             max_length: int = 64, seed: int = 0, path: str | os.PathLike[str] | None = None,
             text_column: str = "text", test_fraction: float = 0.5,
             extra_texts: str | None = None, n_extra: int | None = None) -> TaskData:
        return load_embedding_task(checkpoint, n_heldout=n_heldout, n_train=n_train,
                                   max_length=max_length, seed=seed, path=path,
                                   text_column=text_column, test_fraction=test_fraction,
                                   extra_texts=extra_texts, n_extra=n_extra)

    @staticmethod
    def pooling(data: TaskData) -> Pooling:
        return Pooling(**data.split["pooling"])

    def prepare_state(self, base: nn.Module, data: TaskData) -> dict[str, Any]:
        """The pooling and the unpruned model's embeddings of the scored split (the
        reference): called for validation (the search's state) and for test."""
        pool = self.pooling(data)
        return {"pooling": pool.to_dict(),
                "reference": sentence_embeddings(base, data.feeds(data.scored), pool).numpy()}

    def importance_loss(self, state: Any) -> Callable[..., Any]:
        return contrastive_loss(Pooling(**state["pooling"]))

    def describe_base(self, base: nn.Module, data: TaskData) -> str:
        return "unpruned embeddings are the reference (cosine 1.0)"

    def export_head(self, model: nn.Module, state: Any, data: TaskData) -> ExportHead:
        return ExportHead(module=PooledEncoder(model, Pooling(**state["pooling"])),
                          output_name="sentence_embedding",
                          output_shape=[int(model.config.hidden_size)],
                          extra={"pooling": dict(state["pooling"])})

    def score(self, outputs: np.ndarray, data: TaskData, state: Any) -> float:
        return mean_cosine(outputs, state["reference"])

    def distill_options(self, data: TaskData, state: Any, recovery: Any) -> dict[str, Any]:
        weight = getattr(recovery, "pooled_weight", None)
        return {"labels": None, "pooling": Pooling(**state["pooling"]),
                "pooled_weight": 1.0 if weight is None else weight}
