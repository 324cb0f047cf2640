"""Batches of real task samples in the shape a hardware profile serves.

Images keep the task's shape. Token sequences (integer inputs of rank 2: ``input_ids``,
``attention_mask``, ``token_type_ids``) take the profile's sequence shape:

* ``sequence_lengths: fixed`` with ``sequence_length: L`` -- every sample becomes exactly ``L``
  tokens: its own real tokens, cut at ``L`` or repeated until ``L``. Latency depends on the
  shapes, not on the token values, so repeating real tokens measures what ``L`` real tokens
  cost without inventing a padding convention.
* ``sequence_lengths: task`` -- each batch is cut to the longest real sample in it (what a
  server padding each batch dynamically runs), capped at ``sequence_length`` when set, so the
  lengths measured follow the task's own distribution. Shorter samples in a batch keep the
  task's own padding.

A sample's real length is its ``attention_mask`` sum when the inputs have one, else the full
width.

A decoder's per-token latency has its own feeds (:func:`make_decode_feeds`): one real token
per sequence after a past of ``past`` cached tokens, i.e. ``input_ids`` ``(batch, 1)``,
``attention_mask`` ``(batch, past + 1)`` and ``position_ids`` ``(batch, 1)``. Their widths
differ by design, which :func:`make_feeds` refuses for every other input; the past tensors
themselves are shaped by each graph's own cache layout when it runs them
(:func:`~paretoforge.kernels.decoder_export.complete_feeds`).

Example:
    >>> import numpy as np
    >>> from paretoforge.hw_profiles import HardwareProfile
    >>> ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0]])
    >>> mask = (ids > 0).astype(np.int64)
    >>> p = HardwareProfile(name="t", device="cpu", sequence_length=6)
    >>> feeds, info = make_feeds({"input_ids": ids, "attention_mask": mask}, p)
    >>> feeds[0]["input_ids"].tolist(), feeds[1]["input_ids"].tolist()
    ([[5, 6, 7, 5, 6, 7]], [[8, 9, 8, 9, 8, 9]])
    >>> q = HardwareProfile(name="q", device="cpu", sequence_lengths="task")
    >>> [f["input_ids"].shape[1] for f in make_feeds({"input_ids": ids,
    ...                                              "attention_mask": mask}, q)[0]]
    [3, 2]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import MeasurementError

if TYPE_CHECKING:
    import numpy as np

    from paretoforge.hw_profiles import HardwareProfile

__all__ = ["MAX_FEEDS", "make_decode_feeds", "make_feeds", "sequence_inputs", "task_lengths"]

MAX_FEEDS = 64  # distinct batches cycled through; bounds memory for large tasks


def sequence_inputs(inputs: dict[str, np.ndarray]) -> list[str]:
    """Names of the token-sequence inputs: integer arrays of rank 2, ``(samples, tokens)``."""
    return sorted(
        name for name, a in inputs.items() if a.ndim == 2 and a.dtype.kind in "iub"
    )


def task_lengths(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Real length of every sample: ``attention_mask`` sums, else the full sequence width.

    Raises:
        MeasurementError: the inputs hold no token sequences.
    """
    import numpy as np

    seq = sequence_inputs(inputs)
    if not seq:
        raise MeasurementError(
            f"No token-sequence inputs among {sorted(inputs)}; sequence lengths need an "
            f"integer input of shape (samples, tokens)"
        )
    n = min(len(inputs[s]) for s in seq)
    if "attention_mask" in seq:
        lengths = np.asarray(inputs["attention_mask"][:n]).astype(bool).sum(axis=1)
    else:
        lengths = np.full(n, inputs[seq[0]].shape[1])
    return np.maximum(lengths, 1).astype(np.int64)


def _check(inputs: dict[str, np.ndarray]) -> int:
    if not inputs:
        raise MeasurementError("No inputs given; pass real task samples by input name")
    n = min(len(a) for a in inputs.values())
    if n < 1:
        empty = next(name for name, a in inputs.items() if len(a) == 0)
        raise MeasurementError(f"Input {empty!r} holds no samples; pass real task samples")
    seq = sequence_inputs(inputs)
    widths = {inputs[s].shape[1] for s in seq}
    if len(widths) > 1:
        raise MeasurementError(
            f"Token inputs {seq} have different widths {sorted(widths)}; pass them padded to "
            f"one width"
        )
    return n


def make_feeds(
    inputs: dict[str, np.ndarray],
    profile: HardwareProfile,
    *,
    seed: int = 0,
    max_feeds: int = MAX_FEEDS,
) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Cut ``inputs`` into batches of ``profile.batch_size`` in the profile's sequence shape.

    Args:
        inputs: Input name -> real task samples, samples on axis 0.
        profile: Gives ``batch_size``, ``sequence_length`` and ``sequence_lengths``.
        seed: Order of the samples in ``task`` mode (batches are drawn at random, so their
            lengths sample the task's distribution); ``fixed`` mode takes them in order.
        max_feeds: At most this many distinct batches.

    Returns:
        ``(feeds, info)``: the batches (contiguous arrays), and what was done for the
        measurement's environment: ``{"sequence_inputs", "sequence_lengths", "lengths"}``
        with the length statistics of the batches when there are token inputs.

    Raises:
        MeasurementError: no samples, or token inputs of different widths.
    """
    import numpy as np

    n = _check(inputs)
    bs = profile.batch_size
    n_feeds = max(1, min(max_feeds, math.ceil(n / bs)))
    seq = sequence_inputs(inputs)
    mode = profile.sequence_lengths
    info: dict[str, Any] = {"sequence_inputs": seq}
    if mode == "task" and seq:
        order = np.random.default_rng(seed).permutation(n)
    else:
        order = np.arange(n)
    lengths = task_lengths(inputs) if seq else None
    used: list[int] = []
    feeds = []
    for k in range(n_feeds):
        # Wrap around when there are fewer samples than a batch: still real samples, never zeros.
        idx = order[np.arange(k * bs, (k + 1) * bs) % n]
        feed = {name: np.asarray(a)[idx] for name, a in inputs.items()}
        if seq and lengths is not None:
            if mode == "task":
                width = int(lengths[idx].max())
                if profile.sequence_length is not None:
                    width = min(width, profile.sequence_length)
                for name in seq:
                    feed[name] = feed[name][:, :width]
                used.append(width)
            elif profile.sequence_length is not None:
                width = profile.sequence_length
                for name in seq:
                    # np.resize repeats a row's real tokens until the row is `width` long.
                    rows = [np.resize(r[: int(ln)], width) for r, ln in
                            zip(feed[name], lengths[idx], strict=True)]
                    feed[name] = np.stack(rows).astype(feed[name].dtype, copy=False)
                used.append(width)
            else:
                used.append(int(feed[seq[0]].shape[1]))
        feeds.append({name: np.ascontiguousarray(a) for name, a in feed.items()})
    if seq:
        fixed_by_task = mode == "fixed" and profile.sequence_length is None
        info["sequence_lengths"] = "task-padded-width" if fixed_by_task else mode
        arr = np.asarray(used, dtype=np.float64)
        info["lengths"] = {
            "min": int(arr.min()),
            "p50": float(np.median(arr)),
            "mean": float(arr.mean()),
            "max": int(arr.max()),
            "batches": len(used),
        }
    return feeds, info


def make_decode_feeds(
    inputs: dict[str, np.ndarray],
    profile: HardwareProfile,
    *,
    past: int,
    max_feeds: int = MAX_FEEDS,
) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Batches of one decode step each: ``profile.batch_size`` sequences, one new token each,
    after ``past`` cached tokens.

    The new tokens are real: sample ``k``'s token at position ``past`` of its block (wrapped
    around a shorter block), samples taken in order as :func:`make_feeds` does in ``fixed``
    mode. The profile's sequence settings do not apply: the context is ``past``.

    Args:
        inputs: The task's token samples; ``input_ids`` ``(samples, tokens)`` is read.
        profile: Gives ``batch_size``.
        past: Cached tokens before the step (at least 1).
        max_feeds: At most this many distinct batches.

    Returns:
        ``(feeds, info)``: the batches (``input_ids``, ``attention_mask``, ``position_ids``)
        and ``{"mode": "decode", "past", "new_tokens", "sequence_inputs"}``.

    Raises:
        MeasurementError: no ``input_ids`` samples, or ``past`` < 1.

    Example:
        >>> import numpy as np
        >>> from paretoforge.hw_profiles import HardwareProfile
        >>> p = HardwareProfile(name="t", device="cpu")
        >>> feeds, info = make_decode_feeds({"input_ids": np.arange(12).reshape(3, 4)}, p,
        ...                                 past=5)
        >>> feeds[0]["input_ids"].tolist(), feeds[0]["attention_mask"].shape, info["past"]
        ([[1]], (1, 6), 5)
        >>> feeds[0]["position_ids"].tolist(), len(feeds)
        ([[5]], 3)
    """
    import numpy as np

    ids = inputs.get("input_ids")
    if ids is None or np.asarray(ids).ndim != 2 or len(ids) < 1:
        raise MeasurementError(
            f"A decode measurement needs token samples as input_ids (samples, tokens); got "
            f"{sorted(inputs)}")
    if isinstance(past, bool) or int(past) < 1:
        raise MeasurementError(f"A decode step needs a past of at least 1 token, got {past!r}")
    ids = np.asarray(ids)
    n, width = ids.shape
    bs = profile.batch_size
    feeds = []
    for k in range(max(1, min(max_feeds, math.ceil(n / bs)))):
        idx = np.arange(k * bs, (k + 1) * bs) % n
        feeds.append({
            "input_ids": np.ascontiguousarray(ids[idx, past % width][:, None]).astype(np.int64),
            "attention_mask": np.ones((bs, past + 1), dtype=np.int64),
            "position_ids": np.full((bs, 1), past, dtype=np.int64),
        })
    info = {"mode": "decode", "past": int(past), "new_tokens": 1,
            "sequence_inputs": ["attention_mask", "input_ids", "position_ids"]}
    return feeds, info
