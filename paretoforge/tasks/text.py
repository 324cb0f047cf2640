"""Text sequence classification from a CSV / TSV / JSONL file of ``text`` and ``label``.

Texts are tokenized with the tokenizer saved in the model's checkpoint directory (offline, no
remote code), padded or truncated to one fixed length so that the exported ONNX model has a
fixed sequence axis. Labels are integers ``0..num_labels-1``, or strings mapped to integers in
sorted order.

Example:
    >>> from paretoforge.tasks import load_task
    >>> task = load_task("text-classification", path="reviews.csv", checkpoint="ckpt/")
    ... # doctest: +SKIP
    >>> task.input_names  # doctest: +SKIP
    ('input_ids', 'attention_mask')
"""

from __future__ import annotations

import csv
import hashlib
import json
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import SpecError
from paretoforge.tasks._base import (
    DEFAULT_TEST_FRACTION,
    TaskData,
    check_split_params,
    classification_accuracy,
    divide_heldout,
)
from paretoforge.tasks._contract import Task, register_task

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "TextClassificationTask",
    "SUFFIXES",
    "encode_labels",
    "load_text_classification_task",
    "load_tokenizer",
    "read_examples",
    "read_texts",
    "tokenize",
]

#: File suffixes :func:`read_examples` reads.
SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".jsonl")


def read_examples(
    path: str | os.PathLike[str], *, text_column: str = "text",
    label_column: str | None = "label",
) -> tuple[list[str], list[Any]]:
    """Texts and raw labels of a ``.csv``, ``.tsv`` (with a header row) or ``.jsonl`` file
    (``label_column=None``: texts only, the labels list is empty).

    Raises:
        SpecError: The file is missing or of another type, lacks a column, or has an empty or
            non-string text; the message names the file and the line.

    Example:
        >>> texts, labels = read_examples("data/train.jsonl")  # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise SpecError(
            f"Text data file {str(path)!r} has suffix {path.suffix!r}; supported: "
            f"{', '.join(SUFFIXES)}. Convert it or rename it."
        )
    if not path.is_file():
        raise SpecError(f"Text data file {str(path)!r} does not exist; check the path.")
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            if path.suffix.lower() == ".jsonl":
                for line_no, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as exc:
                        msg = f"{str(path)!r} line {line_no}: not JSON ({exc})."
                        raise SpecError(msg) from None
                    if not isinstance(obj, dict):
                        raise SpecError(
                            f"{str(path)!r} line {line_no}: expected a JSON object with "
                            f"{text_column!r} and {label_column!r}, got {type(obj).__name__}."
                        )
                    rows.append((line_no, obj))
            else:
                delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
                reader = csv.DictReader(f, delimiter=delimiter)
                header = reader.fieldnames or []
                missing = [c for c in (text_column, label_column) if c and c not in header]
                if missing:
                    raise SpecError(
                        f"{str(path)!r} has no column(s) {missing}; its header is {header}. "
                        "Rename the columns or set text_column / label_column."
                    )
                for row in reader:
                    rows.append((reader.line_num, row))
    except UnicodeDecodeError as exc:
        raise SpecError(f"{str(path)!r} is not UTF-8 text: {exc}.") from None
    if not rows:
        raise SpecError(f"Text data file {str(path)!r} has no examples.")
    texts, labels = [], []
    for line_no, row in rows:
        missing = [c for c in (text_column, label_column) if c and c not in row]
        if missing:
            raise SpecError(
                f"{str(path)!r} line {line_no}: no field(s) {missing} (has {sorted(row)}). "
                "Rename the fields or set text_column / label_column."
            )
        text = row[text_column]
        if not isinstance(text, str) or not text.strip():
            raise SpecError(
                f"{str(path)!r} line {line_no}: {text_column!r} must be non-empty text."
            )
        texts.append(text)
        if label_column is None:
            continue
        label = row[label_column]
        if label is None or (isinstance(label, str) and not label.strip()):
            raise SpecError(f"{str(path)!r} line {line_no}: {label_column!r} is empty.")
        labels.append(label.strip() if isinstance(label, str) else label)
    return texts, labels


def read_texts(path: str | os.PathLike[str], *, text_column: str = "text") -> list[str]:
    """Distinct texts of a ``.txt`` file (one per non-empty line) or of the ``text_column`` of a
    ``.csv`` / ``.tsv`` / ``.jsonl`` file, in file order.

    Raises:
        SpecError: The file is missing, of another type, not UTF-8, lacks the column, or holds
            no text; the message names the file (and the line).
    """
    path = Path(path)
    if path.suffix.lower() not in (".txt", *SUFFIXES):
        raise SpecError(
            f"Text file {str(path)!r} has suffix {path.suffix!r}; supported: .txt (one text per "
            f"line), {', '.join(SUFFIXES)} (a {text_column!r} column)."
        )
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise SpecError(f"Text file {str(path)!r} does not exist; check the path.")
        try:
            texts = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as exc:
            raise SpecError(f"{str(path)!r} is not UTF-8 text: {exc}.") from None
    else:
        texts, _ = read_examples(path, text_column=text_column, label_column=None)
        texts = [t.strip() for t in texts]
    texts = list(dict.fromkeys(t for t in texts if t))
    if not texts:
        raise SpecError(f"Text file {str(path)!r} holds no text.")
    return texts


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def encode_labels(
    labels: list[Any], *, num_labels: int | None, source: str
) -> tuple[list[int], list[str]]:
    """Map raw labels to ``0..num_labels-1``; return the ids and the class names.

    Integer labels (or integer strings, as in CSV) are kept and must lie in
    ``0..num_labels-1`` (``num_labels`` defaults to the largest label + 1). Other labels are
    strings, numbered in sorted order (``num_labels``, if given, must equal their count).

    Raises:
        SpecError: A label is out of range, labels mix integers and names, or ``num_labels``
            disagrees with the names; the message names ``source``.
    """
    ints = [_as_int(v) for v in labels]
    if all(i is not None for i in ints):
        top = max(ints) if num_labels is None else num_labels - 1  # type: ignore[type-var]
        for k, i in enumerate(ints):
            if not 0 <= i <= top:  # type: ignore[operator]
                raise SpecError(
                    f"{source}: label {labels[k]!r} (example {k}) is out of range 0..{top}; "
                    "labels must be 0..num_labels-1."
                )
        n = top + 1  # type: ignore[operator]
        return [int(i) for i in ints], [str(c) for c in range(n)]  # type: ignore[arg-type]
    if any(i is not None for i in ints) or not all(isinstance(v, str) for v in labels):
        raise SpecError(
            f"{source}: labels mix integers and names (e.g. {labels[:3]!r}); use one kind."
        )
    names = sorted(set(labels))
    if num_labels is not None and num_labels != len(names):
        raise SpecError(
            f"{source}: num_labels={num_labels} but the labels have {len(names)} names "
            f"{names[:10]}; fix num_labels or the data."
        )
    index = {name: i for i, name in enumerate(names)}
    return [index[v] for v in labels], names


def load_tokenizer(checkpoint: str | os.PathLike[str]) -> Any:
    """The tokenizer saved in a checkpoint directory (offline; no remote code).

    A tokenizer without a padding token (GPT-2) pads with its end-of-sequence token.

    Raises:
        SpecError: The directory has no tokenizer files.
    """
    from transformers import AutoTokenizer

    directory = Path(checkpoint)
    if not directory.is_dir():
        raise SpecError(f"Checkpoint directory {str(directory)!r} does not exist.")
    try:
        tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # transformers raises OSError / ValueError / KeyError
        raise SpecError(
            f"Cannot load a tokenizer from {str(directory)!r} ({type(exc).__name__}: {exc}); "
            "save one there with tokenizer.save_pretrained()."
        ) from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """``input_ids`` and ``attention_mask``, int64 ``(N, max_length)``, right-padded."""
    import numpy as np

    enc = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
    )
    return {
        "input_ids": np.ascontiguousarray(enc["input_ids"], dtype=np.int64),
        "attention_mask": np.ascontiguousarray(enc["attention_mask"], dtype=np.int64),
    }


def _check_params(heldout_fraction: float, seed: int, max_length: int,
                  test_fraction: float) -> None:
    check_split_params("text-classification", heldout_fraction, seed, test_fraction)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise SpecError(
            f"text-classification: max_length must be an integer >= 2, got {max_length!r}."
        )


def load_text_classification_task(
    path: str,
    checkpoint: str,
    heldout_path: str | None = None,
    heldout_fraction: float = 0.2,
    seed: int = 0,
    max_length: int = 128,
    num_labels: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> TaskData:
    """Load a text classification task, tokenized with the checkpoint's tokenizer.

    Args:
        path: Training examples (``.csv``, ``.tsv`` or ``.jsonl`` with ``text`` and ``label``).
        checkpoint: Model checkpoint directory holding the tokenizer files.
        heldout_path: Held-out examples in a file of their own; if absent, a stratified
            ``heldout_fraction`` of ``path`` is held out (seeded by ``seed``).
        heldout_fraction: Fraction of ``path`` held out when there is no ``heldout_path``.
        seed: Seed of the split.
        max_length: Tokens per example after padding / truncation.
        num_labels: Number of classes; default: inferred from the labels.
        text_column: Name of the text column / field.
        label_column: Name of the label column / field.
        test_fraction: Fraction of the held-out examples (from ``heldout_path`` or the
            ``heldout_fraction``) that become the test split, stratified; the rest are
            validation.

    Returns:
        The task: ``x_*`` are ``{"input_ids", "attention_mask"}`` int64 ``(N, max_length)``.

    Raises:
        SpecError: A file, column or tokenizer is missing, a label is out of range, or a
            parameter is invalid; the message names the file.
    """
    import numpy as np

    _check_params(heldout_fraction, seed, max_length, test_fraction)
    texts, raw = read_examples(path, text_column=text_column, label_column=label_column)
    split: dict[str, Any] = {"seed": int(seed), "max_length": int(max_length)}
    if heldout_path is not None:
        h_texts, h_raw = read_examples(
            heldout_path, text_column=text_column, label_column=label_column
        )
        ids, names = encode_labels(raw + h_raw, num_labels=num_labels, source=f"{path!r}+"
                                   f"{heldout_path!r}")  # fmt: skip
        y_all = np.asarray(ids, dtype=np.int64)
        train_idx = np.arange(len(texts))
        heldout_idx = np.arange(len(texts), len(texts) + len(h_texts))
        all_texts = texts + h_texts
        split.update(method="separate held-out file", heldout_path=str(heldout_path))
    else:
        from sklearn.model_selection import train_test_split

        ids, names = encode_labels(raw, num_labels=num_labels, source=repr(str(path)))
        y_all = np.asarray(ids, dtype=np.int64)
        counts = np.bincount(y_all, minlength=len(names))
        stratify = y_all if counts[counts > 0].min() >= 2 else None
        train_idx, heldout_idx = train_test_split(
            np.arange(len(texts)), test_size=float(heldout_fraction), random_state=int(seed),
            stratify=stratify,
        )  # fmt: skip
        train_idx, heldout_idx = np.sort(train_idx), np.sort(heldout_idx)
        all_texts = texts
        split.update(
            method="sklearn.model_selection.train_test_split"
            + ("(stratify=labels)" if stratify is not None else ""),
            heldout_fraction=float(heldout_fraction),
        )
    tokenizer = load_tokenizer(checkpoint)
    enc = tokenize(tokenizer, all_texts, max_length)
    sha = hashlib.sha256(np.asarray(heldout_idx, dtype="<i8").tobytes()).hexdigest()
    val_idx, test_idx, division = divide_heldout(heldout_idx, y_all[heldout_idx], test_fraction,
                                                 seed, task="text-classification")
    split.update(
        path=str(path), n_train=int(len(train_idx)), n_heldout=int(len(heldout_idx)),
        heldout_indices_sha256=sha, label_names=names, **division,
    )  # fmt: skip
    return TaskData(
        name="text-classification",
        x_train={k: v[train_idx] for k, v in enc.items()},
        y_train=y_all[train_idx],
        x_validation={k: v[val_idx] for k, v in enc.items()},
        y_validation=y_all[val_idx],
        x_test={k: v[test_idx] for k, v in enc.items()},
        y_test=y_all[test_idx],
        num_classes=len(names),
        input_name="input_ids",
        metric="accuracy",
        preprocessing=(
            f"{type(tokenizer).__name__} from {str(checkpoint)!r}, padding='max_length', "
            f"truncation, max_length={max_length}; inputs input_ids and attention_mask as "
            f"int64; labels {names[:20]} as 0..{len(names) - 1}"
        ),
        split=split,
    )


@register_task
class TextClassificationTask(Task):
    """Classify the user's texts with a fine-tuned (or freshly headed) encoder checkpoint."""

    name = "text-classification"
    metrics = {"accuracy": "maximize"}
    families = ("bert", "distilbert", "roberta")
    data = "a .csv, .tsv or .jsonl file with text and label columns"
    data_required = True

    def load(self, path: str, checkpoint: str, heldout_path: str | None = None,
             heldout_fraction: float = 0.2, seed: int = 0, max_length: int = 128,
             num_labels: int | None = None, text_column: str = "text",
             label_column: str = "label",
             test_fraction: float = DEFAULT_TEST_FRACTION) -> TaskData:
        return load_text_classification_task(
            path, checkpoint, heldout_path=heldout_path, heldout_fraction=heldout_fraction,
            seed=seed, max_length=max_length, num_labels=num_labels, text_column=text_column,
            label_column=label_column, test_fraction=test_fraction)

    def score(self, outputs: np.ndarray, data: TaskData, state: Any) -> float:
        return classification_accuracy(outputs, data.y_scored)
