"""Structured pruning: nothing pruned changes nothing; pruning is slicing, with real shapes."""

from __future__ import annotations

import json

import pytest
import torch

from paretoforge.exceptions import BuildError, UnknownComponentError
from paretoforge.models.adapters import adapter_for
from paretoforge.models.io import load_pretrained, save_pretrained
from paretoforge.models.surgery import PrunePlan, identity_plan, prune

PLAN = PrunePlan(layers=(0, 1), heads=((0, 2), (1, 2, 3)), neurons=(tuple(range(0, 64, 2)), (5,)))


def test_identity_plan_changes_nothing(tiny_model, batch, logits):
    plan = identity_plan(tiny_model)
    assert plan.layers == (0, 1) and plan.heads == ((0, 1, 2, 3),) * 2
    pruned = prune(tiny_model, plan)
    assert pruned is not tiny_model
    torch.testing.assert_close(logits(pruned, batch), logits(tiny_model, batch), atol=1e-6, rtol=0)


def test_prune_slices_shapes_as_planned(tiny_model, batch, logits):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    pruned = prune(tiny_model, PLAN)
    adapter = adapter_for(pruned)
    layers = adapter.layers(pruned)
    hd = adapter.head_dim(pruned)
    assert hd == 8
    for layer, heads, neurons in zip(layers, PLAN.heads, PLAN.neurons, strict=True):
        q, k, v = adapter.head_projections(layer)
        o = adapter.out_projection(layer)
        up, down = adapter.ffn(layer)
        for proj in (q, k, v):
            assert proj.weight.shape == (len(heads) * hd, 32)
            assert proj.bias.shape == (len(heads) * hd,)
        assert o.weight.shape == (32, len(heads) * hd) and o.bias.shape == (32,)
        assert up.weight.shape == (len(neurons), 32) and up.bias.shape == (len(neurons),)
        assert down.weight.shape == (32, len(neurons))
        assert layer.attention.num_attention_heads == len(heads)
    assert pruned.config.paretoforge_shapes == {"heads": [2, 3], "intermediate": [32, 1]}
    out = logits(pruned, batch)
    assert out.shape == (5, 10) and torch.isfinite(out).all()
    # The original model is untouched.
    for k, v in tiny_model.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)


def test_pruning_equals_silencing_the_dropped_units(tiny_model, batch, logits):
    """Dropping heads/neurons is the same function as zeroing their outgoing weights."""
    pruned = prune(tiny_model, PLAN)
    silenced = prune(tiny_model, identity_plan(tiny_model))
    adapter = adapter_for(silenced)
    with torch.no_grad():
        for layer, heads, neurons in zip(
            adapter.layers(silenced), PLAN.heads, PLAN.neurons, strict=True
        ):
            o = adapter.out_projection(layer)
            for h in set(range(4)) - set(heads):
                o.weight[:, h * 8 : (h + 1) * 8] = 0
            down = adapter.ffn(layer)[1]
            for n in set(range(64)) - set(neurons):
                down.weight[:, n] = 0
    torch.testing.assert_close(logits(pruned, batch), logits(silenced, batch), atol=1e-5, rtol=0)


def test_dropping_a_layer_equals_skipping_it(tiny_model, batch, logits):
    plan = PrunePlan(layers=(1,), heads=((0, 1, 2, 3),), neurons=(tuple(range(64)),))
    pruned = prune(tiny_model, plan)
    assert pruned.config.num_hidden_layers == 1
    skipped = prune(tiny_model, identity_plan(tiny_model))
    skipped.vit.layers[0].register_forward_hook(lambda mod, args, out: args[0])
    torch.testing.assert_close(logits(pruned, batch), logits(skipped, batch), atol=1e-6, rtol=0)


def test_pruned_model_round_trips_through_safetensors(tiny_model, batch, tmp_path, logits):
    pruned = prune(tiny_model, PLAN)
    save_pretrained(pruned, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["paretoforge_shapes"] == {"heads": [2, 3], "intermediate": [32, 1]}
    assert config["architectures"] == ["ViTForImageClassification"]
    loaded = load_pretrained(tmp_path / "ckpt")
    assert not loaded.training and loaded.config._attn_implementation == "eager"
    torch.testing.assert_close(logits(loaded, batch), logits(pruned, batch), atol=0, rtol=0)
    # A pruned model can be pruned again, and still round-trips.
    again = prune(loaded, PrunePlan(layers=(1,), heads=((2,),), neurons=((0,),)))
    save_pretrained(again, tmp_path / "again")
    torch.testing.assert_close(
        logits(load_pretrained(tmp_path / "again"), batch), logits(again, batch), atol=0, rtol=0
    )


def test_unpruned_model_round_trips(tiny_model, batch, tmp_path, logits):
    save_pretrained(tiny_model, tmp_path)
    torch.testing.assert_close(
        logits(load_pretrained(tmp_path), batch), logits(tiny_model, batch), atol=0, rtol=0
    )


def test_load_errors_name_the_file(tiny_model, tmp_path):
    with pytest.raises(BuildError, match="config.json"):
        load_pretrained(tmp_path / "nowhere")
    save_pretrained(tiny_model, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(BuildError, match="model.safetensors"):
        load_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(BuildError, match="model.safetensors"):
        load_pretrained(tmp_path)


def test_weights_that_do_not_match_the_config_raise(tiny_model, tmp_path):
    save_pretrained(prune(tiny_model, PLAN), tmp_path / "pruned")
    save_pretrained(tiny_model, tmp_path / "full")
    # Pair the full model's config with the pruned weights.
    (tmp_path / "full" / "model.safetensors").write_bytes(
        (tmp_path / "pruned" / "model.safetensors").read_bytes()
    )
    with pytest.raises(BuildError, match="do not match"):
        load_pretrained(tmp_path / "full")


@pytest.mark.parametrize(
    "plan, match",
    [
        (PrunePlan(layers=(), heads=(), neurons=()), "no layer"),
        (PrunePlan(layers=(0,), heads=((),), neurons=((1,),)), "no heads in layer 0"),
        (PrunePlan(layers=(0,), heads=((1,),), neurons=((),)), "no neurons in layer 0"),
        (PrunePlan(layers=(2,), heads=((1,),), neurons=((1,),)), "out of range"),
        (PrunePlan(layers=(0,), heads=((4,),), neurons=((1,),)), r"0\.\.3"),
        (PrunePlan(layers=(1, 0), heads=((1,), (1,)), neurons=((1,), (1,))), "ascending"),
        (PrunePlan(layers=(0,), heads=((1,), (2,)), neurons=((1,),)), "one of each"),
    ],
)
def test_invalid_plans_raise_build_error(tiny_model, plan, match):
    with pytest.raises(BuildError, match=match):
        prune(tiny_model, plan)


def test_plan_round_trips_through_json():
    assert PrunePlan.from_dict(json.loads(json.dumps(PLAN.to_dict()))) == PLAN


def test_unknown_family_lists_supported_types():
    from types import SimpleNamespace

    class T5Like(torch.nn.Module):
        config = SimpleNamespace(model_type="t5")

    with pytest.raises(UnknownComponentError, match="Available: bert, deit, distilbert, gpt2, "
                                                    "llama, mistral, qwen2, qwen3, roberta, vit"):
        adapter_for(T5Like())
    with pytest.raises(UnknownComponentError, match="vit"):
        adapter_for(torch.nn.Linear(2, 2))
