"""Importance scores: right shapes, no trace left on the model, and meaningful rankings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from paretoforge.exceptions import BuildError
from paretoforge.models.adapters import adapter_for
from paretoforge.models.importance import Importance, compute_importance
from paretoforge.models.surgery import PrunePlan, plan_from_importance, prune


@pytest.fixture
def data(digits):
    return digits.x_train[:128], digits.y_train[:128]


def test_shapes_and_no_trace_left(tiny_model, data, batch, logits):
    before = logits(tiny_model, batch)
    tiny_model.train()
    imp = compute_importance(tiny_model, *data, batch_size=32)
    assert imp.heads.shape == (2, 4)
    assert [len(n) for n in imp.neurons] == [64, 64]
    assert imp.layers.shape == (2,)
    for arr in (imp.heads, imp.layers, *imp.neurons):
        assert np.isfinite(arr).all() and (arr >= 0).all()
    # Michel et al.: each layer's head scores have unit L2 norm.
    np.testing.assert_allclose(np.linalg.norm(imp.heads, axis=1), 1.0, rtol=1e-6)
    # The model is as it was: mode, gradients flags, no hooks, same function.
    assert tiny_model.training
    assert all(p.requires_grad and p.grad is None for p in tiny_model.parameters())
    for module in tiny_model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    torch.testing.assert_close(logits(tiny_model, batch), before, atol=0, rtol=0)


def test_dead_head_and_dead_neuron_rank_last(tiny_model, data):
    adapter = adapter_for(tiny_model)
    layer = adapter.layers(tiny_model)[1]
    with torch.no_grad():
        adapter.out_projection(layer).weight[:, 2 * 8 : 3 * 8] = 0  # head 2 of layer 1 is dead
        adapter.ffn(layer)[1].weight[:, 7] = 0  # neuron 7 of layer 1 is dead
    imp = compute_importance(tiny_model, *data, batch_size=64)
    assert imp.heads[1, 2] < 1e-6 * imp.heads[1].max()
    assert int(np.argmin(imp.heads[1])) == 2
    assert imp.neurons[1][7] == 0.0 and int(np.argmin(imp.neurons[1])) == 7
    plan = plan_from_importance(imp, layers_kept=2, heads_kept=3, ffn_kept=63)
    assert plan.heads[1] == (0, 1, 3)
    assert 7 not in plan.neurons[1] and len(plan.neurons[1]) == 63


def test_max_batches_limits_the_data(tiny_model, data):
    a = compute_importance(tiny_model, *data, batch_size=16, max_batches=2)
    b = compute_importance(tiny_model, data[0][:32], data[1][:32], batch_size=16)
    np.testing.assert_allclose(a.layers, b.layers, rtol=1e-6)


def test_works_on_a_pruned_model_with_ragged_heads(tiny_model, data):
    pruned = prune(
        tiny_model,
        PrunePlan(layers=(0, 1), heads=((0, 1, 2), (3,)), neurons=((0, 1, 2), tuple(range(10)))),
    )
    imp = compute_importance(pruned, *data)
    assert imp.heads.shape == (2, 3) and np.isnan(imp.heads[1, 1:]).all()
    assert imp.head_scores(1).shape == (1,)
    assert [len(n) for n in imp.neurons] == [3, 10]
    back = Importance.from_dict(json.loads(json.dumps(imp.to_dict())))
    np.testing.assert_array_equal(back.heads, imp.heads)
    plan = plan_from_importance(imp, layers_kept=2, heads_kept=1, ffn_kept=0.5)
    assert [len(h) for h in plan.heads] == [1, 1]
    assert [len(n) for n in plan.neurons] == [2, 5]


def _synthetic() -> Importance:
    return Importance(
        heads=np.array([[0.1, 0.9, 0.5, 0.9], [0.4, 0.3, 0.2, 0.1], [1.0, 0.0, 0.0, 0.0]]),
        neurons=[np.array([3.0, 1.0, 2.0, 0.0])] * 3,
        layers=np.array([0.2, 0.7, 0.5]),
    )


def test_plan_keeps_the_highest_ranked_with_stable_ties():
    plan = plan_from_importance(_synthetic(), layers_kept=2, heads_kept=2, ffn_kept=0.5)
    assert plan.layers == (1, 2)  # layer 0 is least important
    assert plan.heads == ((0, 1), (0, 1))  # layer 2: tie among zeros goes to the lower index
    assert plan.neurons == ((0, 2), (0, 2))
    ties = plan_from_importance(_synthetic(), layers_kept=3, heads_kept=1, ffn_kept=1)
    assert ties.heads[0] == (1,)  # 0.9 at heads 1 and 3: the lower index wins
    assert ties.neurons == ((0,),) * 3
    full = plan_from_importance(_synthetic(), layers_kept=3, heads_kept=4, ffn_kept=1.0)
    assert full.neurons == ((0, 1, 2, 3),) * 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layers_kept": 0, "heads_kept": 1, "ffn_kept": 1}, "layers_kept=0"),
        ({"layers_kept": 4, "heads_kept": 1, "ffn_kept": 1}, "between 1 and 3"),
        ({"layers_kept": 1, "heads_kept": 5, "ffn_kept": 1}, "heads_kept=5"),
        ({"layers_kept": 1, "heads_kept": 1, "ffn_kept": 0.0}, r"\(0, 1\]"),
        ({"layers_kept": 1, "heads_kept": 1, "ffn_kept": 1.5}, r"\(0, 1\]"),
        ({"layers_kept": 1, "heads_kept": 1, "ffn_kept": 5}, "ffn_kept=5"),
        ({"layers_kept": 1.5, "heads_kept": 1, "ffn_kept": 1}, "integer"),
    ],
)
def test_plan_rejects_bad_counts(kwargs, match):
    with pytest.raises(BuildError, match=match):
        plan_from_importance(_synthetic(), **kwargs)


def test_importance_needs_matching_labels(tiny_model, data):
    with pytest.raises(BuildError, match="as many labels"):
        compute_importance(tiny_model, data[0], data[1][:3])


def test_plan_per_layer_counts_follow_the_kept_layers_in_model_order():
    plan = plan_from_importance(_synthetic(), layers_kept=2, heads_kept=(3, 1),
                                ffn_kept=(1.0, 1))
    assert plan.layers == (1, 2)
    assert plan.heads == ((0, 1, 2), (0,))  # layer 1 keeps 3 heads, layer 2 keeps 1
    assert plan.neurons == ((0, 1, 2, 3), (0,))
    uniform = plan_from_importance(_synthetic(), layers_kept=2, heads_kept=2, ffn_kept=0.5)
    assert plan_from_importance(_synthetic(), layers_kept=2, heads_kept=[2, 2],
                                ffn_kept=[0.5, 0.5]) == uniform
    with pytest.raises(BuildError, match="2 entries for layers_kept=3"):
        plan_from_importance(_synthetic(), layers_kept=3, heads_kept=(1, 2), ffn_kept=1.0)
    with pytest.raises(BuildError, match="heads_kept=5"):
        plan_from_importance(_synthetic(), layers_kept=2, heads_kept=(1, 5), ffn_kept=1.0)


def test_per_layer_surgery_gives_per_layer_shapes(tiny_model, data):
    imp = compute_importance(tiny_model, *data, batch_size=64)
    plan = plan_from_importance(imp, layers_kept=2, heads_kept=(1, 3), ffn_kept=(0.25, 0.75))
    small = prune(tiny_model, plan)
    adapter = adapter_for(small)
    hd = adapter.head_dim(small)
    layers = adapter.layers(small)
    assert [adapter.num_heads(layer, hd) for layer in layers] == [1, 3]
    assert [adapter.ffn_width(layer) for layer in layers] == [16, 48]
    x = torch.from_numpy(data[0][:4])
    with torch.no_grad():
        assert small.eval()(x).logits.shape == (4, 10)
