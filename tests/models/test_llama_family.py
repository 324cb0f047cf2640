"""Llama-style decoders (Llama, Qwen2, Mistral): GQA-aware importance and surgery.

A head unit is a key/value group (its query heads, its key and value head): the pruned model
is still grouped-query attention with the same query heads per KV head, its outputs equal the
full model's with the dropped units masked, and a uniformly pruned checkpoint loads with
``AutoModelForCausalLM.from_pretrained`` as it is.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from paretoforge.models.adapters import adapter_for
from paretoforge.models.importance import compute_importance
from paretoforge.models.io import load_pretrained, save_pretrained
from paretoforge.models.supernet import masked
from paretoforge.models.surgery import PrunePlan, identity_plan, prune

# Shapes unlike the contract suite's: 3 layers, and 4 query heads per KV head in one of them.
CONFIGS = {
    "llama-gqa2": ("LlamaConfig", "LlamaForCausalLM",
                   dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=48)),
    "llama-gqa4": ("LlamaConfig", "LlamaForCausalLM",
                   dict(hidden_size=64, num_attention_heads=8, num_key_value_heads=2,
                        intermediate_size=40)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=48)),
    "mistral": ("MistralConfig", "MistralForCausalLM",
                dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=48)),
}


def _model(name: str) -> torch.nn.Module:
    config_cls, arch, args = CONFIGS[name]
    config = getattr(transformers, config_cls)(
        num_hidden_layers=3, vocab_size=101, max_position_embeddings=64,
        tie_word_embeddings=False, attn_implementation="eager", use_cache=False, **args)
    torch.manual_seed(0)
    return getattr(transformers, arch)(config).eval()


def _ids(n: int = 2, t: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 101, (n, t), generator=torch.Generator().manual_seed(seed))


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _plan(model: torch.nn.Module, *, uniform: bool) -> PrunePlan:
    """Drop layer 1, KV group 0 of every kept layer, and every other FFN neuron (uniform), or
    different groups and widths per layer."""
    width = model.config.intermediate_size
    if uniform:
        return PrunePlan(layers=(0, 2), heads=((1,), (1,)),
                         neurons=(tuple(range(0, width, 2)), tuple(range(1, width, 2))))
    return PrunePlan(layers=(0, 2), heads=((0, 1), (1,)),
                     neurons=(tuple(range(width - 3)), tuple(range(0, width, 3))))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pruning_nothing_changes_nothing(name: str) -> None:
    model = _model(name)
    same = prune(model, identity_plan(model))
    ids = _ids()
    assert torch.equal(_logits(same, ids), _logits(model, ids))


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("uniform", [True, False])
def test_pruned_model_equals_the_masked_full_model_and_stays_gqa(name: str, uniform: bool) -> None:
    model = _model(name)
    q_per_kv = model.config.num_attention_heads // model.config.num_key_value_heads
    hd = adapter_for(model).head_dim(model)
    plan = _plan(model, uniform=uniform)
    small = prune(model, plan)
    ids = _ids(seed=1)
    with masked(model, plan, skip_dropped=True) as m:
        want = _logits(m, ids)
    got = _logits(small, ids)
    assert float((got - want).abs().max()) < 1e-5
    adapter = adapter_for(small)
    for layer, groups in zip(adapter.layers(small), plan.heads, strict=True):
        a = layer.self_attn
        assert a.k_proj.out_features == a.v_proj.out_features == len(groups) * hd
        assert a.q_proj.out_features == a.o_proj.in_features == len(groups) * q_per_kv * hd
        assert a.num_key_value_groups == q_per_kv  # repeat_kv still pairs q heads with kv
        mlp = layer.mlp
        assert mlp.gate_proj.out_features == mlp.up_proj.out_features == mlp.down_proj.in_features
    assert small.config.num_hidden_layers == 2
    # a pruned model reloads exactly through paretoforge's own loader, uniform or not
    assert torch.equal(_logits(_reload(small), ids), got)


def _reload(model: torch.nn.Module) -> torch.nn.Module:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        save_pretrained(model, d)
        return load_pretrained(d)


@pytest.mark.parametrize("name", ["llama-gqa2", "llama-gqa4", "qwen2"])
def test_uniformly_pruned_checkpoint_loads_with_auto_model_for_causal_lm(name: str,
                                                                          tmp_path) -> None:
    model = _model(name)
    small = prune(model, _plan(model, uniform=True))
    save_pretrained(small, tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, local_files_only=True, attn_implementation="eager").eval()
    cfg = loaded.config
    assert (cfg.num_key_value_heads, cfg.num_attention_heads) == (
        1, model.config.num_attention_heads // model.config.num_key_value_heads)
    assert cfg.intermediate_size == len(_plan(model, uniform=True).neurons[0])
    ids = _ids(seed=2)
    assert float((_logits(loaded, ids) - _logits(small, ids)).abs().max()) < 1e-6


@pytest.mark.parametrize("name", ["llama-gqa4", "qwen2"])
def test_importance_scores_kv_groups_and_the_top_group_is_kept(name: str) -> None:
    model = _model(name)
    ids = _ids(n=8, t=16, seed=3)
    x = {"input_ids": ids.numpy(), "attention_mask": torch.ones_like(ids).numpy()}
    imp = compute_importance(model, x, None)  # label-free: the next-token loss
    groups = model.config.num_key_value_heads
    assert imp.heads.shape == (3, groups)
    assert [len(n) for n in imp.neurons] == [model.config.intermediate_size] * 3
    assert (imp.heads > 0).all() and (imp.layers > 0).all()
