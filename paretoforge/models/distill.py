"""Knowledge-distillation recovery of a pruned student from its unpruned teacher.

The teacher's outputs are computed once per call (its weights never change), so each step costs
one student forward and backward only: the search runs many of these, one core each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from paretoforge._system import yield_point
from paretoforge.exceptions import BuildError
from paretoforge.models._train import (
    Inputs,
    as_input,
    batch_order,
    call,
    num_examples,
    take,
    warmup_cosine,
)
from paretoforge.models.adapters import SOURCE_LAYERS_ATTR, adapter_for

__all__ = [
    "TeacherCache",
    "default_layer_map",
    "distill",
    "distill_loss",
    "length_grouped_batches",
    "trim_padding",
]

# Teacher hidden states are computed once and kept when they fit in this many bytes; beyond
# it (long texts, big models) the teacher runs again on each batch instead.
_HIDDEN_CACHE_BYTES = 256 * 1024**2


def trim_padding(x: Inputs) -> tuple[Inputs, int | None]:
    """``x`` without the trailing positions that are padding in every example of the batch.

    Text batches padded to a fixed length (128 tokens for sentences of ~25) spend most of
    their compute on padding. With right padding (``attention_mask`` 0 after each example's
    last token) those positions are masked out of attention, of pooling and of the hidden-state
    loss, so dropping the columns no example uses changes no output at a kept position; it
    only saves work. Returns ``(x, kept_length)``; ``x`` unchanged and ``None`` when there is
    nothing to trim (no mask, or no column padding everywhere).

    Example:
        >>> x = {"input_ids": torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]]),
        ...      "attention_mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])}
        >>> trim_padding(x)[0]["input_ids"].tolist(), trim_padding(x)[1]
        ([[5, 6], [7, 0]], 2)
    """
    mask = x.get("attention_mask") if isinstance(x, dict) else None
    if mask is None or mask.dim() != 2:
        return x, None
    t = mask.shape[1]
    used = torch.nonzero(mask.any(0)).flatten()
    keep = int(used.max()) + 1 if len(used) else 1
    if keep >= t:
        return x, None
    return {k: v[:, :keep] if v.dim() >= 2 and v.shape[1] == t else v
            for k, v in x.items()}, keep  # fmt: skip


def _lengths(x: Inputs) -> torch.Tensor | None:
    """Tokens per example (the ``attention_mask`` sum), or None without a 2-D mask."""
    mask = x.get("attention_mask") if isinstance(x, dict) else None
    return mask.sum(1) if mask is not None and mask.dim() == 2 else None


def _by_length(x: Inputs) -> torch.Tensor | None:
    """Example indices, shortest first (stable), or None when ``x`` has no lengths."""
    lengths = _lengths(x)
    return None if lengths is None else torch.argsort(lengths, stable=True)


def length_grouped_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator, pool_batches: int = 16
) -> list[torch.Tensor]:
    """One shuffled epoch of index batches whose examples have similar lengths.

    The examples are shuffled, cut into pools of ``pool_batches`` batches, each pool sorted by
    length and cut into batches, and the batches shuffled: every example once per epoch, in a
    random batch of neighbours in length. With :func:`trim_padding` a batch then costs about its
    own length instead of the longest of a random batch (sentences of ~26 tokens in batches of
    32: ~28 instead of ~65 positions). The order depends only on ``generator``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> batches = length_grouped_batches(torch.tensor([5, 1, 4, 2, 3, 6]), 2, g)
        >>> sorted(torch.cat(batches).tolist())
        [0, 1, 2, 3, 4, 5]
    """
    n = len(lengths)
    perm = torch.randperm(n, generator=generator)
    pool = batch_size * pool_batches
    batches: list[torch.Tensor] = []
    for start in range(0, n, pool):
        chunk = perm[start : start + pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    order = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in order]


def _pad_to(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """``t`` zero-padded along ``dim`` to ``length`` positions."""
    if t.shape[dim] == length:
        return t
    shape = list(t.shape)
    shape[dim] = length - t.shape[dim]
    return torch.cat([t, t.new_zeros(shape)], dim)


def default_layer_map(student: nn.Module, teacher_layers: int) -> list[int]:
    """Teacher layer whose output each student layer learns to reproduce.

    The student's last layer maps to the teacher's last, so the final representation is the
    teacher's. Other layers map to the teacher layer they were cut from (the config's
    ``paretoforge_source_layers``, written by :func:`~paretoforge.models.surgery.prune`);
    without that record they are spread uniformly, student layer ``i`` of ``n`` to teacher
    layer ``ceil((i + 1) * teacher_layers / n) - 1``.

    Example:
        >>> default_layer_map(student, 6)  # student pruned to layers (0, 2, 3)  # doctest: +SKIP
        [0, 2, 5]
    """
    n = len(adapter_for(student).layers(student))
    source = getattr(student.config, SOURCE_LAYERS_ATTR, None)
    if source is not None and len(source) == n and max(source) < teacher_layers:
        mapping = [int(j) for j in source]
    else:
        mapping = [-(-(i + 1) * teacher_layers // n) - 1 for i in range(n)]
    mapping[-1] = teacher_layers - 1
    return mapping


def _logits_or_none(out: Any) -> torch.Tensor | None:
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, torch.Tensor):
        logits = out
    return logits


def _masked_mse(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over features and the non-padding positions of ``mask``."""
    if mask is None:
        return nn.functional.mse_loss(s, t)
    m = mask[..., None].to(s.dtype)  # (B, T, 1)
    return ((s - t) ** 2 * m).sum() / (m.sum() * s.shape[-1]).clamp(min=1.0)


#: ``pooling(last_hidden_state (B, T, H), attention_mask (B, T)) -> (B, H)`` sentence vectors.
Pooling = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def _last_hidden(out: Any) -> torch.Tensor:
    hidden = getattr(out, "last_hidden_state", None)
    return hidden if hidden is not None else out.hidden_states[-1]


@torch.no_grad()
def _teacher_outputs(
    teacher: nn.Module,
    x: Inputs,
    layers: list[int] | None,
    pooling: Pooling | None = None,
    batch: int = 256,
    trim: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Teacher logits ``(N, ...)`` (None if it has none); if ``layers`` is given, its hidden
    states after those layers, stacked ``(N, len(layers), T, H)``; if ``pooling`` is given,
    its pooled sentence vectors ``(N, H)``. ``trim``: run each batch without its common
    padding (:func:`trim_padding`); hidden states come back zero-padded to ``T``."""
    was_training = teacher.training
    teacher.eval()
    logits, hidden, pooled = [], [], []
    # Trimmed, the teacher runs over the examples shortest first, so that each batch is cut to
    # lengths close to its own; the outputs are put back in the order of ``x`` at the end.
    order = _by_length(x) if trim else None
    try:
        for start in range(0, num_examples(x), batch):
            rows = slice(start, start + batch) if order is None else order[start : start + batch]
            full = take(x, rows)
            xb, kept = trim_padding(full) if trim else (full, None)
            t = full["attention_mask"].shape[1] if kept is not None else 0
            out = call(teacher, xb, output_hidden_states=layers is not None)
            lg = _logits_or_none(out)
            if lg is not None:
                logits.append(lg.float())
            if layers is not None:
                hs = out.hidden_states  # embeddings, then one per layer
                h = torch.stack([hs[j + 1].float() for j in layers], 1)  # (B, L_s, T', H)
                hidden.append(h if kept is None else _pad_to(h, t, 2))
            if pooling is not None:
                mask = xb.get("attention_mask") if isinstance(xb, dict) else None
                pooled.append(pooling(_last_hidden(out).float(), mask))
    finally:
        teacher.train(was_training)
    def cat(parts: list[torch.Tensor]) -> torch.Tensor | None:
        if not parts:
            return None
        out = torch.cat(parts)
        if order is not None:  # back to the order of x
            out = out[torch.argsort(order)]
        return out

    return cat(logits), cat(hidden), cat(pooled)


def distill_loss(
    out: Any,
    *,
    temperature: float,
    alpha: float,
    t_logprob: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    t_hidden: torch.Tensor | None = None,
    student_layers: Sequence[int] | None = None,
    hidden_weight: float = 0.0,
    mask: torch.Tensor | None = None,
    t_pooled: torch.Tensor | None = None,
    pooling: Pooling | None = None,
    pooled_weight: float = 0.0,
) -> torch.Tensor:
    """The distillation loss of one batch of student outputs (the loss :func:`distill` uses).

    Each term is on when its target is given: ``t_logprob`` (teacher log-softmax at
    ``temperature``, ``(B, C)``) adds ``alpha * T^2 * KL``; ``labels`` adds the cross-entropy,
    weighted ``1 - alpha`` when the KD term is on, else 1; ``t_hidden`` (``(B, L_s, T, H)``,
    teacher states for the student layers ``student_layers``, default ``0..L_s-1``) adds
    ``hidden_weight`` times the mean masked MSE against ``out.hidden_states[i + 1]``;
    ``t_pooled`` with ``pooling`` adds ``pooled_weight * (1 - cos)``. ``mask`` is the batch's
    ``attention_mask`` (padding skipped), or None.

    Example:
        >>> out = torch.tensor([[2.0, 0.0]])
        >>> float(distill_loss(out, temperature=1.0, alpha=1.0,
        ...                    t_logprob=torch.log_softmax(out, -1)))
        0.0
    """
    loss = torch.zeros(())
    s_logits = _logits_or_none(out)
    if t_logprob is not None:
        kd = nn.functional.kl_div(
            torch.log_softmax(s_logits / temperature, dim=-1),
            t_logprob,
            log_target=True,
            reduction="batchmean",
        ) * (temperature**2)
        loss = loss + alpha * kd
    if labels is not None:
        ce = nn.functional.cross_entropy(s_logits, labels)
        loss = loss + ((1.0 - alpha) if t_logprob is not None else 1.0) * ce
    if t_hidden is not None:
        hs = out.hidden_states
        layers = range(t_hidden.shape[1]) if student_layers is None else student_layers
        mse = torch.stack(
            [_masked_mse(hs[s + 1], t_hidden[:, i], mask) for i, s in enumerate(layers)]
        ).mean()
        loss = loss + hidden_weight * mse
    if pooling is not None and t_pooled is not None:
        cos = nn.functional.cosine_similarity(
            pooling(_last_hidden(out), mask), t_pooled, dim=-1
        )  # (B,)
        loss = loss + pooled_weight * (1.0 - cos).mean()
    return loss


def _check(name: str, value: float, ok: bool, rule: str) -> None:
    if isinstance(value, bool) or not ok:
        raise BuildError(f"distill: {name}={value!r} is invalid; it must be {rule}.")


class TeacherCache:
    """The teacher's outputs on training data, kept for the next :func:`distill` call.

    One cache belongs to one teacher (the caller's promise: a finishing worker's unpruned
    base, which never changes); its entries are keyed by a fingerprint of the data, the teacher
    layers whose states are kept, the pooling and the padding trim, so a call with other data
    or other losses computes (and keeps) its own. At most ``max_entries`` are kept, the oldest
    dropped first: hidden states can take up to 256 MB an entry.

    Example:
        >>> cache = TeacherCache()
        >>> x = torch.zeros(2, 3)
        >>> calls = []
        >>> _ = cache.get((x, None, None, False), lambda: calls.append(1) or (x, None, None))
        >>> _ = cache.get((x, None, None, False), lambda: calls.append(1) or (x, None, None))
        >>> len(calls), len(cache)
        (1, 1)
    """

    def __init__(self, max_entries: int = 2) -> None:
        self.max_entries = int(max_entries)
        self._entries: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, what: tuple[Any, list[int] | None, Any, bool],
            compute: Callable[[], tuple[Any, Any, Any]]) -> tuple[Any, Any, Any]:
        """The outputs for ``what`` = (inputs, kept layers, pooling, trim), from the cache or
        from ``compute()`` (then kept)."""
        from paretoforge.models.supernet import data_fingerprint

        x, layers, pooling, trim = what
        key = (data_fingerprint(x), None if layers is None else tuple(layers), repr(pooling),
               bool(trim))  # fmt: skip
        if key not in self._entries:
            while self._entries and len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = compute()
        return self._entries[key]


def distill(
    student: nn.Module,
    teacher: nn.Module,
    x: Any,
    y: np.ndarray | torch.Tensor | None = None,
    *,
    epochs: int,
    lr: float,
    temperature: float = 2.0,
    alpha: float = 0.5,
    batch_size: int = 64,
    seed: int = 0,
    hidden_weight: float = 0.0,
    layer_map: Sequence[int] | None = None,
    pooled_weight: float = 0.0,
    pooling: Pooling | None = None,
    weight_decay: float = 0.01,
    teacher_cache: TeacherCache | None = None,
) -> nn.Module:
    """Train ``student`` (in place) to match ``teacher`` on ``x``; return it in eval mode.

    The loss per batch is
    ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)
    + hidden_weight * mean_i MSE(h_s[i], h_t[layer_map[i]])
    + pooled_weight * (1 - cos(pooling(h_s), pooling(h_t)))``, where ``s, t`` are student and
    teacher logits, ``h_s[i]`` the output of student layer ``i`` (same width as the
    teacher's: pruning keeps the hidden size) and ``pooling(h)`` the sentence vector of the last
    hidden state; the MSE and the pooling skip padding positions when ``x`` has an
    ``attention_mask``. The ``T^2`` factor keeps the soft-target gradients on the scale of the
    hard-label ones. Without labels (``y=None``) the label term is dropped; a model without
    logits (e.g. a bare encoder for embeddings) learns from the hidden and pooled terms alone.
    AdamW with a short linear warmup then cosine decay; data order and dropout follow ``seed``.
    Text inputs with an ``attention_mask`` (right padding) are batched with neighbours in length
    (:func:`length_grouped_batches`) and each batch runs without the padding all its examples
    share (:func:`trim_padding`): same losses per batch, a fraction of the compute (unless the
    teacher's logits are per token, as a causal LM's, whose loss counts every position).

    Args:
        student: Model to train, e.g. the output of :func:`paretoforge.models.surgery.prune`.
        teacher: Model to imitate; not modified.
        x: Training inputs (never the held-out split): one array or a mapping of input name to
            array (e.g. ``input_ids`` and ``attention_mask``).
        y: Integer labels of ``x``, or ``None``.
        epochs: Passes over ``x``; 0 returns the student untouched (in eval mode).
        lr: Peak learning rate.
        temperature: Softmax temperature ``T`` of the distillation term, > 0.
        alpha: Weight of the distillation term, in [0, 1]; ``1 - alpha`` weights the labels.
        batch_size: Examples per step.
        seed: Seed of the data order and of dropout.
        hidden_weight: Weight of the hidden-state MSE term (0 = off).
        layer_map: Teacher layer index for each student layer (see
            :func:`default_layer_map`, the default); only used when ``hidden_weight > 0``.
        pooled_weight: Weight of the sentence-vector cosine term (0 = off); for encoders
            scored by embedding fidelity.
        pooling: Maps ``(last_hidden_state, attention_mask)`` to sentence vectors, e.g.
            :class:`paretoforge.tasks.embedding.Pooling`; required when ``pooled_weight > 0``.
        weight_decay: AdamW weight decay of matrices (not of biases and norms).
        teacher_cache: Keeps the teacher's outputs on ``x`` for the next call with the same
            teacher (:class:`TeacherCache`): a worker that recovers several students of one
            base runs the teacher over the training split once, not once per student.

    Raises:
        BuildError: A hyper-parameter is out of range, ``x`` and ``y`` disagree in length, or
            there is nothing to learn from (no logits and no hidden or pooled term).

    Example:
        >>> student = prune(teacher, plan)  # doctest: +SKIP
        >>> student = distill(student, teacher, task.x_train, task.y_train, epochs=10, lr=1e-3)
        ... # doctest: +SKIP
    """
    _check("epochs", epochs, isinstance(epochs, int) and epochs >= 0, "an integer >= 0")
    _check("lr", lr, isinstance(lr, (int, float)) and lr > 0, "> 0")
    _check("temperature", temperature, math.isfinite(temperature) and temperature > 0, "> 0")
    _check("alpha", alpha, 0.0 <= alpha <= 1.0, "in [0, 1]")
    _check("batch_size", batch_size, isinstance(batch_size, int) and batch_size >= 1, ">= 1")
    _check("hidden_weight", hidden_weight, hidden_weight >= 0, ">= 0")
    _check("pooled_weight", pooled_weight, pooled_weight >= 0, ">= 0")
    if pooled_weight > 0 and pooling is None:
        raise BuildError("distill: pooled_weight > 0 needs pooling=(hidden, mask) -> vectors.")
    _check("weight_decay", weight_decay, weight_decay >= 0, ">= 0")
    xt = as_input(x)
    n = num_examples(xt)
    yt = None if y is None else torch.as_tensor(y, dtype=torch.long)
    if n == 0 or (yt is not None and len(yt) != n):
        raise BuildError(
            f"distill needs as many labels as inputs and at least one example, got {n} "
            f"inputs and {'no' if yt is None else len(yt)} labels."
        )
    if epochs == 0:
        return student.eval()

    mapping: list[int] | None = None
    if hidden_weight > 0:
        n_student = len(adapter_for(student).layers(student))
        n_teacher = len(adapter_for(teacher).layers(teacher))
        mapping = list(layer_map) if layer_map is not None else default_layer_map(
            student, n_teacher
        )
        if len(mapping) != n_student or not all(0 <= j < n_teacher for j in mapping):
            raise BuildError(
                f"distill: layer_map={mapping} must give one teacher layer in 0..{n_teacher - 1} "
                f"for each of the student's {n_student} layers."
            )
    mask = xt.get("attention_mask") if isinstance(xt, dict) else None

    pool = pooling if pooled_weight > 0 else None
    # Teacher logits always fit; its hidden states are kept only when they are small enough.
    probe = _teacher_outputs(teacher, take(xt, slice(0, 1)), mapping)
    per_example = probe[1][0].numel() * 4 if probe[1] is not None else 0
    cache_hidden = per_example * n <= _HIDDEN_CACHE_BYTES
    # Padding is trimmed unless the logits are per token (a causal LM), whose loss counts
    # every position.
    trim = probe[0] is None or probe[0].dim() < 3
    kept_layers = mapping if cache_hidden else None
    if teacher_cache is None:
        t_logits, t_hidden, t_pooled = _teacher_outputs(teacher, xt, kept_layers, pool, trim=trim)
    else:
        t_logits, t_hidden, t_pooled = teacher_cache.get(
            (xt, kept_layers, pool, trim),
            lambda: _teacher_outputs(teacher, xt, kept_layers, pool, trim=trim))
    if t_logits is None and mapping is None and pool is None:
        raise BuildError(
            f"distill: {type(teacher).__name__} has no logits to distil; set hidden_weight > 0 "
            "or pooled_weight > 0 to distil its hidden states."
        )
    use_kd = t_logits is not None and alpha > 0
    use_ce = t_logits is not None and yt is not None and alpha < 1.0
    t_logprob = torch.log_softmax(t_logits / temperature, dim=-1) if use_kd else None

    params = [p for p in student.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr)
    steps_per_epoch = -(-n // batch_size)
    total = epochs * steps_per_epoch
    warmup = min(total // 10, steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup))
    gen = torch.Generator().manual_seed(seed)

    student.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout, if the student has any
        lengths = _lengths(xt) if trim else None
        for _ in range(epochs):
            batches = (batch_order(n, batch_size, gen) if lengths is None
                       else length_grouped_batches(lengths, batch_size, gen))  # fmt: skip
            for idx in batches:
                # Same outputs at every real position, less compute.
                xb, kept = trim_padding(take(xt, idx)) if trim else (take(xt, idx), None)
                out = call(student, xb, output_hidden_states=mapping is not None)
                th = None
                if mapping is not None:
                    if t_hidden is not None:
                        th = t_hidden[idx]  # (B, L_s, T, H)
                        th = th if kept is None else th[:, :, :kept]  # (B, L_s, T', H)
                    else:
                        th = _teacher_outputs(teacher, xb, mapping)[1]  # (B, L_s, T', H)
                loss = distill_loss(
                    out,
                    temperature=temperature,
                    alpha=alpha,
                    t_logprob=t_logprob[idx] if use_kd else None,
                    labels=yt[idx] if use_ce else None,
                    t_hidden=th,
                    hidden_weight=hidden_weight,
                    mask=None if mask is None else xb["attention_mask"],
                    t_pooled=t_pooled[idx] if pool is not None else None,
                    pooling=pool,
                    pooled_weight=pooled_weight,
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                yield_point()  # a waiting all-core measurement takes the cores here
    return student.eval()
