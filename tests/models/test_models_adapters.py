"""Adapter details: Conv1D layout, GPT-2 rules, layer renumbering, Hugging Face checkpoints."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers.pytorch_utils import Conv1D

from paretoforge.exceptions import BuildError
from paretoforge.models.adapters import in_features, out_features, slice_projection
from paretoforge.models.io import load_pretrained, save_pretrained
from paretoforge.models.surgery import PrunePlan, prune


def _gpt2(**extra) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_embd=32, n_layer=3, n_head=4, n_inner=64, vocab_size=99, n_positions=40,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, attn_implementation="eager", **extra,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


def _bert_classifier() -> transformers.BertForSequenceClassification:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=99, max_position_embeddings=40, num_labels=3,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config).eval()


PLAN = PrunePlan(layers=(0, 2), heads=((1,), (0, 3)), neurons=((0, 1, 2), (10, 20)))


def test_conv1d_slicing_matches_the_equivalent_linear():
    torch.manual_seed(0)
    conv = Conv1D(12, 5)  # weight (in=5, out=12)
    torch.nn.init.normal_(conv.bias)
    linear = torch.nn.Linear(5, 12)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    out_idx, in_idx = [1, 4, 11], [0, 3]
    for m in (conv, linear):
        slice_projection(m, out_idx=out_idx, in_idx=in_idx)
        assert (out_features(m), in_features(m)) == (3, 2)
    x = torch.randn(4, 2)
    torch.testing.assert_close(conv(x), linear(x), atol=1e-6, rtol=0)
    assert conv.weight.shape == (2, 3) and (conv.nf, conv.nx) == (3, 2)


def test_slice_refuses_other_modules():
    with pytest.raises(BuildError, match="Conv2d"):
        slice_projection(torch.nn.Conv2d(1, 1, 1), out_idx=[0])


def test_gpt2_fused_qkv_keeps_the_same_heads_in_q_k_and_v():
    model = _gpt2()
    pruned = prune(model, PLAN)
    c_attn = model.transformer.h[2].attn.c_attn.weight  # (32, 3 * 32): q | k | v
    kept = pruned.transformer.h[1].attn
    assert kept.c_attn.weight.shape == (32, 3 * 16) and kept.split_size == 16
    for section in range(3):
        for j, head in enumerate((0, 3)):
            src = c_attn[:, section * 32 + head * 8 : section * 32 + (head + 1) * 8]
            dst = kept.c_attn.weight[:, section * 16 + j * 8 : section * 16 + (j + 1) * 8]
            assert torch.equal(src, dst)


def test_kept_layers_are_renumbered_for_the_kv_cache():
    pruned = prune(_gpt2(), PLAN)
    assert [block.attn.layer_idx for block in pruned.transformer.h] == [0, 1]
    ids = torch.randint(3, 99, (1, 5))
    out = pruned.generate(ids, max_new_tokens=3, do_sample=False, use_cache=True)
    assert out.shape == (1, 8)


def test_gpt2_inverse_layer_scaling_only_drops_trailing_layers():
    model = _gpt2(scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(BuildError, match="trailing layers"):
        prune(model, PLAN)
    trailing = PrunePlan(layers=(0, 1), heads=((0,), (1,)), neurons=((0,), (1,)))
    assert prune(model, trailing).config.num_hidden_layers == 2


def test_gpt2_cross_attention_is_refused():
    model = _gpt2(add_cross_attention=True)
    with pytest.raises(BuildError, match="add_cross_attention"):
        prune(model, PLAN)


def test_hugging_face_checkpoint_loads_and_takes_a_new_head(tmp_path):
    model = _bert_classifier()
    model.save_pretrained(tmp_path)  # transformers' own format, no paretoforge_shapes
    x = torch.randint(3, 99, (2, 16))
    loaded = load_pretrained(tmp_path)
    assert type(loaded) is type(model) and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, atol=1e-5, rtol=0)
    bare = load_pretrained(tmp_path, architecture="BertModel")
    assert type(bare).__name__ == "BertModel"
    five = load_pretrained(tmp_path, num_labels=5)
    assert five.classifier.out_features == 5
    with pytest.raises(BuildError, match="GPT2Model.*Supported: Bert"):
        load_pretrained(tmp_path, architecture="GPT2Model")


def test_pickled_weights_are_refused(tmp_path):
    _bert_classifier().config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(BuildError, match="never unpickles"):
        load_pretrained(tmp_path)


def test_pruned_checkpoint_loads_only_as_saved(tmp_path):
    pruned = prune(_bert_classifier(), PrunePlan(layers=(1,), heads=((0, 2),), neurons=((5,),)))
    save_pretrained(pruned, tmp_path)
    with pytest.raises(BuildError, match="loads only as saved"):
        load_pretrained(tmp_path, num_labels=4)
    # transformers 5 has no per-layer shapes (config.pruned_heads is gone): its own
    # from_pretrained refuses the pruned shapes, which is why load_pretrained exists.
    with pytest.raises(Exception, match="mismatch"):
        transformers.BertForSequenceClassification.from_pretrained(tmp_path, local_files_only=True)
