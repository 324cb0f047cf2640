"""Knowledge-distillation recovery of a pruned student from its unpruned teacher.

The teacher's outputs are computed once per call (its weights never change), so each step costs
one student forward and backward only: the search runs many of these, one core each.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from paretoforge.exceptions import BuildError
from paretoforge.models._train import as_input, batch_order, logits_of, warmup_cosine

__all__ = ["distill"]


@torch.no_grad()
def _teacher_outputs(
    teacher: nn.Module, x: torch.Tensor, want_hidden: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    was_training = teacher.training
    teacher.eval()
    logits, hidden = [], []
    try:
        for start in range(0, len(x), 256):
            xb = x[start : start + 256]
            out = teacher(xb, output_hidden_states=True) if want_hidden else teacher(xb)
            logits.append(logits_of(out).float())
            if want_hidden:
                hidden.append(out.hidden_states[-1].float())
    finally:
        teacher.train(was_training)
    return torch.cat(logits), (torch.cat(hidden) if want_hidden else None)


def _check(name: str, value: float, ok: bool, rule: str) -> None:
    if isinstance(value, bool) or not ok:
        raise BuildError(f"distill: {name}={value!r} is invalid; it must be {rule}.")


def distill(
    student: nn.Module,
    teacher: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    epochs: int,
    lr: float,
    temperature: float = 2.0,
    alpha: float = 0.5,
    batch_size: int = 64,
    seed: int = 0,
    hidden_weight: float = 0.0,
    weight_decay: float = 0.01,
) -> nn.Module:
    """Train ``student`` (in place) to match ``teacher`` on ``(x, y)``; return it in eval mode.

    The loss per batch is
    ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)
    + hidden_weight * MSE(h_s, h_t)``, where ``s, t`` are student and teacher logits and
    ``h_s, h_t`` their last layer's hidden states (same width: pruning keeps the hidden size).
    The ``T^2`` factor keeps the soft-target gradients on the scale of the hard-label ones.
    AdamW with a short linear warmup then cosine decay; data order and dropout follow ``seed``.

    Args:
        student: Model to train, e.g. the output of :func:`paretoforge.models.surgery.prune`.
        teacher: Model to imitate; not modified.
        x: Training inputs (never the held-out split).
        y: Integer labels of ``x``.
        epochs: Passes over ``x``; 0 returns the student untouched (in eval mode).
        lr: Peak learning rate.
        temperature: Softmax temperature ``T`` of the distillation term, > 0.
        alpha: Weight of the distillation term, in [0, 1]; ``1 - alpha`` weights the labels.
        batch_size: Examples per step.
        seed: Seed of the data order and of dropout.
        hidden_weight: Weight of the last-hidden-state MSE term (0 = off).
        weight_decay: AdamW weight decay of matrices (not of biases and norms).

    Raises:
        BuildError: A hyper-parameter is out of range, or ``x`` and ``y`` disagree in length.

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
    _check("weight_decay", weight_decay, weight_decay >= 0, ">= 0")
    xt = as_input(x)
    yt = torch.as_tensor(y, dtype=torch.long)
    if len(xt) != len(yt) or len(xt) == 0:
        raise BuildError(
            f"distill needs as many labels as inputs and at least one example, got {len(xt)} "
            f"inputs and {len(yt)} labels."
        )
    if epochs == 0:
        return student.eval()

    want_hidden = hidden_weight > 0
    t_logits, t_hidden = _teacher_outputs(teacher, xt, want_hidden)
    t_logprob = torch.log_softmax(t_logits / temperature, dim=-1)  # (N, C)

    params = [p for p in student.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr)
    steps_per_epoch = -(-len(xt) // batch_size)
    total = epochs * steps_per_epoch
    warmup = min(total // 10, steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup))
    gen = torch.Generator().manual_seed(seed)

    student.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout, if the student has any
        for _ in range(epochs):
            for idx in batch_order(len(xt), batch_size, gen):
                xb = xt[idx]
                out = student(xb, output_hidden_states=True) if want_hidden else student(xb)
                s_logits = logits_of(out)
                kd = nn.functional.kl_div(
                    torch.log_softmax(s_logits / temperature, dim=-1),
                    t_logprob[idx],
                    log_target=True,
                    reduction="batchmean",
                ) * (temperature**2)
                loss = alpha * kd
                if alpha < 1.0:
                    loss = loss + (1.0 - alpha) * nn.functional.cross_entropy(s_logits, yt[idx])
                if want_hidden:
                    mse = nn.functional.mse_loss(out.hidden_states[-1], t_hidden[idx])
                    loss = loss + hidden_weight * mse
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return student.eval()
