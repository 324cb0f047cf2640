"""Gradient-based importance of attention heads, FFN neurons and whole layers.

Following Michel et al. (2019), "Are Sixteen Heads Really Better than One?": a gate of value 1
is put on every head, neuron and layer; the importance of a unit is the expected absolute
gradient of the loss with respect to its gate, E_x |dL(x)/d gate|, a first-order estimate of how
much the loss changes when the unit is removed.

The gates are attached with forward (pre-)hooks found through the family adapter and removed
afterwards, so any family with an adapter is supported and the model is left unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from paretoforge.exceptions import BuildError
from paretoforge.models._train import Inputs, as_input, call, logits_of, num_examples, take
from paretoforge.models.adapters import FamilyAdapter, adapter_for
from paretoforge.models.distill import _by_length, trim_padding

__all__ = ["Importance", "LossFn", "compute_importance", "default_loss"]

#: ``loss_fn(output, inputs, labels)`` -> scalar: the *sum* over the batch's examples of a
#: per-example loss (a sum, so that each example's gate gets that example's gradient).
LossFn = Callable[[Any, Inputs, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True, eq=False)
class Importance:
    """Importance scores of a model's heads, FFN neurons and layers (higher = keep).

    Attributes:
        heads: ``(L, H)`` head importance, each layer's row normalised to unit L2 norm. If
            layers have different head counts (a pruned model), shorter rows end in NaN.
        neurons: One array per layer, of length that layer's FFN width.
        layers: ``(L,)`` layer importance (gate on each layer's residual branch).

    Example:
        >>> imp = Importance(np.ones((2, 4)), [np.ones(8), np.ones(8)], np.ones(2))
        >>> Importance.from_dict(imp.to_dict()).heads.shape
        (2, 4)
    """

    heads: np.ndarray
    neurons: list[np.ndarray]
    layers: np.ndarray

    def head_scores(self, layer: int) -> np.ndarray:
        """Scores of the heads that ``layer`` really has (NaN padding dropped)."""
        row = np.asarray(self.heads[layer], dtype=np.float64)
        return row[~np.isnan(row)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (nested lists of floats; NaN padding becomes None)."""
        return {
            "heads": [
                [None if np.isnan(v) else float(v) for v in row]
                for row in np.asarray(self.heads, dtype=np.float64)
            ],
            "neurons": [np.asarray(n, dtype=np.float64).tolist() for n in self.neurons],
            "layers": np.asarray(self.layers, dtype=np.float64).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Importance:
        """Inverse of :meth:`to_dict`."""
        return cls(
            heads=np.array(
                [[np.nan if v is None else v for v in row] for row in data["heads"]],
                dtype=np.float64,
            ),
            neurons=[np.asarray(n, dtype=np.float64) for n in data["neurons"]],
            layers=np.asarray(data["layers"], dtype=np.float64),
        )


def _replace_first(output: Any, new: torch.Tensor) -> Any:
    """``output`` with its hidden states replaced; layers return a tensor or a tuple."""
    if isinstance(output, torch.Tensor):
        return new
    return (new, *output[1:])


def _causal_lm_loss(logits: torch.Tensor, inputs: Inputs) -> torch.Tensor:
    """Sum over examples of each example's mean next-token cross-entropy (padding ignored)."""
    ids = inputs["input_ids"] if isinstance(inputs, dict) else inputs
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    target = ids[:, 1:].clone()  # (B, T-1)
    if mask is not None:
        target[mask[:, 1:] == 0] = -100
    ce = nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), target, reduction="none", ignore_index=-100
    )  # (B, T-1)
    counts = (target != -100).sum(1).clamp(min=1)
    return (ce.sum(1) / counts).sum()


def default_loss(adapter: FamilyAdapter) -> LossFn:
    """The loss importance is scored with when none is given.

    With labels: cross-entropy of the logits. Without labels, for a causal LM (a family with
    ``adapter.causal`` whose output has per-token logits): the next-token loss. Otherwise there
    is nothing to score against and a :class:`BuildError` tells the caller to pass a loss.
    """

    def loss(output: Any, inputs: Inputs, labels: torch.Tensor | None) -> torch.Tensor:
        logits = logits_of(output)
        if labels is not None:
            return nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        if adapter.causal and getattr(output, "logits", None) is not None and logits.dim() == 3:
            return _causal_lm_loss(logits, inputs)
        raise BuildError(
            "compute_importance: no labels and no loss_fn for a model without an LM head; "
            "pass y (class labels) or loss_fn (e.g. paretoforge.tasks.embedding.importance_loss)."
        )

    return loss


def compute_importance(
    model: nn.Module,
    x: Any,
    y: np.ndarray | torch.Tensor | None = None,
    batch_size: int = 64,
    max_batches: int | None = None,
    *,
    loss_fn: LossFn | None = None,
) -> Importance:
    """Score every head, FFN neuron and layer of ``model`` on labelled data ``(x, y)``.

    Per-example gradients come out of a single backward pass per batch: each gate has a batch
    dimension (one gate value per example), so ``dL_i / d gate_i`` is exactly example ``i``'s
    gradient and its absolute value can be averaged without per-example passes.

    Args:
        model: Model of a family with an adapter; it is put back in its original mode and has
            no hooks or gradients left afterwards.
        x: Training inputs (never the held-out split): one array (passed positionally, e.g.
            pixel values) or a mapping of input name to array (e.g. ``input_ids`` and
            ``attention_mask``).
        y: Integer labels of ``x``; ``None`` for label-free losses (causal LM, embeddings).
        batch_size: Examples per forward/backward pass.
        max_batches: Use only the first ``max_batches`` batches (in data order), if given.
            Without it, text (inputs with a 2-D ``attention_mask``) is taken shortest first,
            so that each batch is trimmed to about its own length, at a fraction of the
            padding's compute (all-MiniLM-L6-v2: 2,373 sentences of ~26 tokens padded to
            128). With a per-example loss the scores are the same in any order; an in-batch
            loss (the embedding task's contrastive one) then contrasts each text with texts
            of about its length.
        loss_fn: Loss to score against (see :data:`LossFn`); default :func:`default_loss`.

    Returns:
        The importance scores.

    Example:
        >>> imp = compute_importance(model, task.x_train, task.y_train)  # doctest: +SKIP
        >>> imp.heads.shape  # doctest: +SKIP
        (4, 4)
    """
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    hd = adapter.head_dim(model)
    n_heads = [adapter.num_heads(layer, hd) for layer in layers]
    widths = [adapter.ffn_width(layer) for layer in layers]
    xt = as_input(x)
    n = num_examples(xt)
    yt = None if y is None else torch.as_tensor(y, dtype=torch.long)
    if n == 0 or (yt is not None and n != len(yt)):
        raise BuildError(
            f"compute_importance needs as many labels as inputs and at least one example, "
            f"got {n} inputs and {'no' if yt is None else len(yt)} labels."
        )
    loss_fn = loss_fn or default_loss(adapter)

    head_sum = [torch.zeros(h, dtype=torch.float64) for h in n_heads]
    neuron_sum = [torch.zeros(w, dtype=torch.float64) for w in widths]
    layer_sum = torch.zeros(len(layers), dtype=torch.float64)
    gates: dict[str, list[torch.Tensor]] = {}

    def head_hook(i: int):  # o's input is (B, T, nh * hd), head (or GQA group) by head
        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            inp = args[0]
            b = inp.shape[0]
            # a unit is a head, or a GQA group's query heads: (B, T, nh, unit features)
            split = inp.reshape(*inp.shape[:-1], n_heads[i], -1)
            gate = gates["heads"][i].view(b, *([1] * (inp.dim() - 2)), n_heads[i], 1)
            return ((split * gate).reshape(inp.shape), *args[1:])  # (B, T, nh * hs)

        return hook

    def neuron_hook(i: int):  # down's input is (B, T, width)
        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            inp = args[0]
            gate = gates["neurons"][i].view(inp.shape[0], *([1] * (inp.dim() - 2)), widths[i])
            return (inp * gate, *args[1:])

        return hook

    def layer_hook(i: int):  # scale only the residual branch: out = inp + g * (out - inp)
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            inp = args[0]
            out = output if isinstance(output, torch.Tensor) else output[0]
            gate = gates["layers"][i].view(inp.shape[0], *([1] * (inp.dim() - 1)))
            return _replace_first(output, inp + gate * (out - inp))

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(adapter.out_projection(layer).register_forward_pre_hook(head_hook(i)))
        handles.append(adapter.ffn(layer)[1].register_forward_pre_hook(neuron_hook(i)))
        handles.append(layer.register_forward_hook(layer_hook(i)))

    was_training = model.training
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    # Eval mode: importance of the deployed (dropout-free) network. Parameter gradients are not
    # needed, only the gates'; turning them off saves their accumulation.
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    n_seen = 0
    order = _by_length(xt) if max_batches is None else None
    try:
        for bi, start in enumerate(range(0, n, batch_size)):
            if max_batches is not None and bi >= max_batches:
                break
            rows = (slice(start, start + batch_size) if order is None
                    else order[start : start + batch_size])
            # Positions that are padding in every example change no score: skip their compute.
            xb, _ = trim_padding(take(xt, rows))
            yb = None if yt is None else yt[rows]
            b = num_examples(xb)
            gates["heads"] = [torch.ones(b, h, requires_grad=True) for h in n_heads]
            gates["neurons"] = [torch.ones(b, w, requires_grad=True) for w in widths]
            gates["layers"] = [torch.ones(b, requires_grad=True) for _ in layers]
            # Sum, not mean: each example's gate then gets exactly that example's gradient.
            loss = loss_fn(call(model, xb), xb, yb)
            flat = gates["heads"] + gates["neurons"] + gates["layers"]
            grads = torch.autograd.grad(loss, flat)
            nl = len(layers)
            for i in range(nl):
                head_sum[i] += grads[i].abs().sum(0).double()
                neuron_sum[i] += grads[nl + i].abs().sum(0).double()
                layer_sum[i] += grads[2 * nl + i].abs().sum().double()
            n_seen += b
    finally:
        for h in handles:
            h.remove()
        gates.clear()
        for name, p in model.named_parameters():
            p.requires_grad_(requires_grad[name])
        model.train(was_training)

    # A pruned model may have different head counts per layer: pad rows with NaN.
    heads = np.full((len(layers), max(n_heads)), np.nan, dtype=np.float64)
    for i, s in enumerate(head_sum):
        row = (s / n_seen).numpy()
        norm = np.linalg.norm(row)
        # Michel et al. normalise per layer so that layers compete on equal footing.
        heads[i, : len(row)] = row / norm if norm > 0 else row
    return Importance(
        heads=heads,
        neurons=[(s / n_seen).numpy() for s in neuron_sum],
        layers=(layer_sum / n_seen).numpy(),
    )
