"""Sandwich-rule training of a supernet with in-place distillation from the base."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from paretoforge._io import atomic_write_bytes, atomic_write_json
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
from paretoforge.models.adapters import adapter_for
from paretoforge.models.distill import (
    _HIDDEN_CACHE_BYTES,
    Pooling,
    _lengths,
    _teacher_outputs,
    distill_loss,
    length_grouped_batches,
    trim_padding,
)
from paretoforge.models.importance import Importance
from paretoforge.models.supernet._rewire import masked
from paretoforge.models.supernet._space import SubnetSpace
from paretoforge.models.surgery import PrunePlan

__all__ = ["TRAINER_STATE_NAME", "AllReduceMean", "SupernetOptions", "SupernetTrainer"]

#: The optimizer and LR-schedule state of a :class:`SupernetTrainer` (safetensors + JSON).
TRAINER_STATE_NAME = "trainer_state"


# -- training -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SupernetOptions:
    """How a supernet is trained, and the sub-network choices it is trained for.

    Attributes:
        epochs: Passes over the training split.
        lr: Peak AdamW learning rate (linear warmup, then cosine decay).
        batch_size: Examples per step, over all workers together.
        n_random: Random sub-networks per step, besides the largest and the smallest.
        temperature: Softmax temperature of the logits KD term.
        alpha: Weight of the KD term; ``1 - alpha`` goes to the labels (when the task has
            them).
        hidden_weight: Weight of the hidden-state MSE of each kept layer against the teacher's
            same layer (the last kept layer against the teacher's last); 0 = off.
        pooled_weight: Weight of the pooled-embedding cosine term, for tasks that have one
            (read by the task's ``distill_options``; None: the task's default).
        weight_decay: AdamW weight decay of matrices.
        seed: Seed of the data order, the sub-networks drawn and dropout.
        layers_kept: :class:`SubnetSpace` depth choices (None: its default).
        heads: :class:`SubnetSpace` heads-per-layer choices (None: its default).
        ffn: :class:`SubnetSpace` FFN-fraction choices (None: its default).

    Example:
        >>> SupernetOptions(epochs=2, heads=(2, 4)).to_dict()["heads"]
        [2, 4]
    """

    epochs: int = 4
    lr: float = 1e-3
    batch_size: int = 64
    n_random: int = 2
    temperature: float = 2.0
    alpha: float = 0.5
    hidden_weight: float = 0.0
    pooled_weight: float | None = None
    weight_decay: float = 0.01
    seed: int = 0
    layers_kept: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    ffn: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> BuildError:
            return BuildError(f"SupernetOptions.{name}={getattr(self, name)!r} is invalid; "
                              f"it must be {rule}.")  # fmt: skip

        for name, low in (("epochs", 0), ("batch_size", 1), ("n_random", 0), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise bad(name, f"an integer >= {low}")
        for name in ("lr", "temperature", "alpha", "hidden_weight", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(name, "a finite number")
            object.__setattr__(self, name, float(v))
        if not self.lr > 0:
            raise bad("lr", "> 0")
        if not self.temperature > 0:
            raise bad("temperature", "> 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise bad("alpha", "in [0, 1]")
        if self.pooled_weight is not None:
            if isinstance(self.pooled_weight, bool) or not self.pooled_weight >= 0:
                raise bad("pooled_weight", "None or >= 0")
            object.__setattr__(self, "pooled_weight", float(self.pooled_weight))
        if self.hidden_weight < 0 or self.weight_decay < 0:
            raise bad("hidden_weight" if self.hidden_weight < 0 else "weight_decay", ">= 0")
        for name in ("layers_kept", "heads", "ffn"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(v))

    def space(self, importance: Importance) -> SubnetSpace:
        """The :class:`SubnetSpace` of these choices over ``importance``."""
        return SubnetSpace(importance, layers_kept=self.layers_kept, heads=self.heads,
                           ffn=self.ffn)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupernetOptions:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`BuildError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BuildError(f"Unknown SupernetOptions field(s) {unknown}. Valid fields: "
                             f"{', '.join(sorted(known))}.")  # fmt: skip
        return cls(**data)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


#: ``all_reduce_mean(tensors)``: replace each tensor by its mean over the workers, in place
#: (e.g. ``torch.distributed.all_reduce`` then a division). None: one process.
AllReduceMean = Callable[[list[torch.Tensor]], None]


class SupernetTrainer:
    """Sandwich-rule training of a supernet with in-place distillation, one epoch per call.

    Each step draws the largest, the smallest and ``options.n_random`` random sub-networks of
    ``space``, runs each through the supernet (:func:`masked`), and backpropagates its
    distillation loss against the frozen ``teacher`` (:func:`~paretoforge.models.distill.
    distill_loss`: logits KD at ``temperature`` plus labels, the pooled-embedding cosine when
    ``pooled_weight > 0``, the hidden-state MSE when ``hidden_weight > 0``); gradients of the
    sub-networks add up before one AdamW step. The teacher's outputs on this worker's examples
    are computed once.

    Data-parallel: worker ``rank`` of ``world_size`` trains on examples ``rank::world_size``
    (all shards cut to the same length, so every worker takes the same number of steps) with
    ``ceil(batch_size / world_size)`` examples per step, draws the same sub-networks as every
    other worker, and averages gradients through ``all_reduce_mean`` before each step.
    Everything random derives from ``(options.seed, epoch, rank)``, so epoch ``e`` after a
    resume (:meth:`load_state`) is the epoch an uninterrupted run would have trained.

    Args:
        supernet: The model to train, in place (the output of :func:`rewire`).
        teacher: The unpruned base; never modified.
        space: The sub-networks to train (over the supernet's importance).
        x: Training inputs (the training split only): one array or a mapping of named arrays.
        y: Integer labels of ``x``, or None (pure distillation).
        options: The recipe; ``options.epochs`` sets the LR schedule's length.
        pooling: Sentence-vector pooling for the pooled term (see :func:`~paretoforge.models.
            distill.distill`); required when ``pooled_weight > 0``.
        pooled_weight: Weight of the pooled-embedding cosine term.
        rank: This worker's rank.
        world_size: Number of workers.
        all_reduce_mean: See :data:`AllReduceMean`; required when ``world_size > 1``.
        device: Where to train (default: the supernet's device); the supernet and the
            teacher are moved there.

    Raises:
        BuildError: Bad options, ``x`` and ``y`` disagree, a shard would be empty, or there is
            nothing to distil.

    Example:
        >>> trainer = SupernetTrainer(sn, base, space, x, y, options=SupernetOptions())
        ... # doctest: +SKIP
        >>> trainer.train_epoch(0)["loss_smallest"]  # doctest: +SKIP
        0.41
    """

    def __init__(
        self,
        supernet: nn.Module,
        teacher: nn.Module,
        space: SubnetSpace,
        x: Any,
        y: np.ndarray | torch.Tensor | None = None,
        *,
        options: SupernetOptions,
        pooling: Pooling | None = None,
        pooled_weight: float = 0.0,
        rank: int = 0,
        world_size: int = 1,
        all_reduce_mean: AllReduceMean | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise BuildError(f"SupernetTrainer: rank={rank} must be in 0..{world_size - 1}.")
        if world_size > 1 and all_reduce_mean is None:
            raise BuildError("SupernetTrainer: world_size > 1 needs all_reduce_mean.")
        if pooled_weight > 0 and pooling is None:
            raise BuildError("SupernetTrainer: pooled_weight > 0 needs pooling.")
        self.model, self.teacher, self.space, self.options = supernet, teacher, space, options
        self.rank, self.world_size, self.all_reduce_mean = rank, world_size, all_reduce_mean
        self.device = torch.device(device) if device is not None else next(
            supernet.parameters()).device
        self.num_layers = len(adapter_for(teacher).layers(teacher))
        if len(adapter_for(supernet).layers(supernet)) != self.num_layers:
            raise BuildError("SupernetTrainer: the supernet and the teacher differ in depth.")
        xt = as_input(x)
        n = num_examples(xt)
        yt = None if y is None else torch.as_tensor(y, dtype=torch.long)
        if yt is not None and len(yt) != n:
            raise BuildError(f"SupernetTrainer: {n} inputs but {len(yt)} labels.")
        per_shard = n // world_size
        if per_shard == 0:
            raise BuildError(
                f"SupernetTrainer: {n} training examples cannot be split over {world_size} "
                "workers; use fewer workers."
            )
        shard = torch.arange(n)[rank::world_size][:per_shard]
        # The shard, the teacher's targets and the model live on the training device.
        self.x = self._to(take(xt, shard))
        self.y = None if yt is None else yt[shard].to(self.device)
        teacher.to(self.device)
        self.model.to(self.device)
        self.n = per_shard
        self.batch_size = -(-options.batch_size // world_size)
        self.steps_per_epoch = -(-self.n // self.batch_size)
        self.epochs_done = 0
        self.step = 0

        # The teacher's targets on this shard, once (as distill does).
        o = options
        self.hidden = o.hidden_weight > 0
        all_layers = list(range(self.num_layers)) if self.hidden else None
        self.pooling = pooling if pooled_weight > 0 else None
        self.pooled_weight = float(pooled_weight)
        probe = _teacher_outputs(teacher, take(self.x, slice(0, 1)), all_layers)
        per_example = probe[1][0].numel() * 4 if probe[1] is not None else 0
        cache_hidden = per_example * self.n <= _HIDDEN_CACHE_BYTES
        self.trim = probe[0] is None or probe[0].dim() < 3
        t_logits, self.t_hidden, self.t_pooled = _teacher_outputs(
            teacher, self.x, all_layers if cache_hidden else None, self.pooling, trim=self.trim
        )
        if t_logits is None and not self.hidden and self.pooling is None:
            raise BuildError(
                f"SupernetTrainer: {type(teacher).__name__} has no logits to distil; set "
                "hidden_weight > 0 or pooled_weight > 0."
            )
        self.use_kd = t_logits is not None and o.alpha > 0
        self.use_ce = t_logits is not None and self.y is not None and o.alpha < 1.0
        self.t_logprob = (torch.log_softmax(t_logits / o.temperature, dim=-1)
                          if self.use_kd else None)  # fmt: skip
        self.mask = self.x.get("attention_mask") if isinstance(self.x, dict) else None
        lengths = _lengths(self.x) if self.trim else None
        self.lengths = None if lengths is None else lengths.cpu()  # batches index on the CPU

        params = [p for p in self.model.parameters() if p.requires_grad]
        self.params = params
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": o.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=o.lr)
        total = max(1, o.epochs * self.steps_per_epoch)
        warmup = min(total // 10, self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, total, warmup)
        )

    def _to(self, x: Inputs) -> Inputs:
        if isinstance(x, dict):
            return {k: v.to(self.device) for k, v in x.items()}
        return x.to(self.device)

    def _teacher_hidden(self, idx: torch.Tensor, xb: Inputs, kept: int | None,
                        layers: list[int]) -> torch.Tensor:
        if self.t_hidden is not None:
            th = self.t_hidden[idx][:, layers]  # (B, L_s, T, H)
            return th if kept is None else th[:, :, :kept]  # (B, L_s, T', H)
        return _teacher_outputs(self.teacher, xb, layers)[1]  # (B, L_s, T', H)

    def subnet_loss(self, plan: PrunePlan, idx: torch.Tensor, xb: Inputs,
                    kept: int | None) -> torch.Tensor:
        """The distillation loss of sub-network ``plan`` on batch ``xb`` (rows ``idx`` of
        this worker's shard, trimmed to ``kept`` positions), with its graph for backward."""
        o = self.options
        with masked(self.model, plan, skip_dropped=True):
            out = call(self.model, self._to(xb), output_hidden_states=self.hidden)
        th = None
        if self.hidden:  # each kept layer against the same teacher layer, the last vs the last
            layers = [*plan.layers[:-1], self.num_layers - 1]
            th = self._teacher_hidden(idx, xb, kept, layers).to(self.device)
        mb = None if self.mask is None else self._to(xb)["attention_mask"]
        dev = self.device
        return distill_loss(
            out,
            temperature=o.temperature,
            alpha=o.alpha,
            t_logprob=self.t_logprob[idx].to(dev) if self.use_kd else None,
            labels=self.y[idx].to(dev) if self.use_ce else None,
            t_hidden=th,
            hidden_weight=o.hidden_weight,
            mask=mb,
            t_pooled=self.t_pooled[idx].to(dev) if self.pooling is not None else None,
            pooling=self.pooling,
            pooled_weight=self.pooled_weight,
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train epoch ``epoch`` (0-based) of the sandwich rule; return its mean losses.

        Returns:
            ``{"epoch", "steps", "seconds", "loss_largest", "loss_smallest", "loss_random"}``,
            losses averaged over the steps (and over the workers, with ``all_reduce_mean``).
        """
        o = self.options
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(_seed(o.seed, epoch, self.rank))
        rng = np.random.default_rng(_seed(o.seed, epoch, 1_000_003))  # same on every rank
        largest, smallest = self.space.largest(), self.space.smallest()
        sums = torch.zeros(3, dtype=torch.float64)  # largest, smallest, random
        steps = 0
        self.model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed(o.seed, epoch, self.rank, 7))  # dropout, if any
            if self.lengths is None:
                batches = list(batch_order(self.n, self.batch_size, gen))
            else:
                batches = length_grouped_batches(self.lengths, self.batch_size, gen)
            for idx in batches:
                xb, kept = trim_padding(take(self.x, idx)) if self.trim else (
                    take(self.x, idx), None)
                plans = [(0, largest), (1, smallest)]
                plans += [(2, self.space.sample(rng)) for _ in range(o.n_random)]
                self.optimizer.zero_grad(set_to_none=True)
                for slot, plan in plans:
                    loss = self.subnet_loss(plan, idx, xb, kept)
                    loss.backward()
                    sums[slot] += float(loss.detach())
                if self.all_reduce_mean is not None:
                    # The same sub-networks on every rank: the same parameters have gradients.
                    self.all_reduce_mean([p.grad for p in self.params if p.grad is not None])
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                steps += 1
        sums /= torch.tensor([1.0, 1.0, max(1, o.n_random)], dtype=torch.float64) * max(1, steps)
        if self.all_reduce_mean is not None:
            self.all_reduce_mean([sums])
        self.epochs_done = epoch + 1
        self.model.eval()
        return {"epoch": int(epoch), "steps": steps,
                "seconds": round(time.perf_counter() - start, 3),
                "loss_largest": float(sums[0]), "loss_smallest": float(sums[1]),
                "loss_random": float(sums[2]) if o.n_random else float("nan")}  # fmt: skip

    # -- resumable state ------------------------------------------------------------------

    def save_state(self, directory: str | os.PathLike[str]) -> None:
        """Write the optimizer and schedule state into ``directory`` (``trainer_state.*``)."""
        from safetensors.torch import save

        sd = self.optimizer.state_dict()
        tensors, scalars = {}, {}
        for i, st in sd["state"].items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"{i}.{k}"] = v.detach().to("cpu").contiguous()
                else:
                    scalars[f"{i}.{k}"] = v
        sched = {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
        meta = {"param_groups": sd["param_groups"], "scalars": scalars, "scheduler": sched,
                "step": self.step, "epochs_done": self.epochs_done}  # fmt: skip
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / f"{TRAINER_STATE_NAME}.safetensors", save(tensors))
        atomic_write_json(directory / f"{TRAINER_STATE_NAME}.json", meta)

    def load_state(self, directory: str | os.PathLike[str]) -> None:
        """Inverse of :meth:`save_state`: continue after the epochs it had done.

        Raises:
            BuildError: The files are missing or unreadable.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            meta = json.loads((directory / f"{TRAINER_STATE_NAME}.json").read_text())
            tensors = load_file(str(directory / f"{TRAINER_STATE_NAME}.safetensors"))
        except (OSError, ValueError) as exc:
            raise BuildError(
                f"Cannot read the trainer state in {str(directory)!r}: {exc}"
            ) from exc
        state: dict[int, dict[str, Any]] = {}
        for name, v in [*tensors.items(), *meta["scalars"].items()]:
            i, k = name.split(".", 1)
            state.setdefault(int(i), {})[k] = v.to(self.device) if isinstance(
                v, torch.Tensor) and k != "step" else v
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        sched = dict(meta["scheduler"])
        sched["lr_lambdas"] = [None] * len(self.optimizer.param_groups)
        self.scheduler.load_state_dict(sched)
        self.step = int(meta["step"])
        self.epochs_done = int(meta["epochs_done"])
