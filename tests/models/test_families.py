"""Every supported family, tiny and random: prune, export, quantize, save and load.

Per family: a 3-layer model (hidden 32, 4 heads, FFN 64, vocab 99, sequence 16) loses different
heads per layer, half and nearly all FFN neurons, and its middle layer. Properties checked:
pruning equals masking the removed units in the original; the identity plan changes nothing;
ONNX fp32 equals PyTorch on new inputs with padding; dynamic int8 runs and tracks fp32;
save/load is exact.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers
from torch import nn

from paretoforge.kernels import export_onnx, graph_summary, quantize_dynamic_int8
from paretoforge.models.adapters import adapter_for, out_features
from paretoforge.models.importance import compute_importance
from paretoforge.models.io import load_pretrained, save_pretrained
from paretoforge.models.surgery import PrunePlan, identity_plan, plan_from_importance, prune

SEQ, VOCAB, LAYERS = 16, 99, 3
TEXT = dict(hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
            intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=40)  # fmt: skip
IMAGE = dict(image_size=8, patch_size=2, num_channels=1, hidden_size=32,
             num_hidden_layers=LAYERS, num_attention_heads=4, intermediate_size=64)  # fmt: skip
# Different heads per layer, two FFN widths, and layer 1 dropped.
PLAN = PrunePlan(
    layers=(0, 2),
    heads=((1, 3), (0, 2, 3)),
    neurons=(tuple(range(0, 64, 2)), (3, 17, 40, 63)),
)


@dataclass(frozen=True)
class Family:
    name: str
    make: Callable[[], nn.Module]
    pad_id: int | None  # None: image model
    output: str  # ONNX output name


def _text(config_cls: Any, model_cls: Any, **extra: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        config = config_cls(**{**TEXT, **extra}, attn_implementation="eager")
        return model_cls(config)

    return make


def _distilbert() -> nn.Module:
    config = transformers.DistilBertConfig(
        dim=32, n_layers=LAYERS, n_heads=4, hidden_dim=64, vocab_size=VOCAB,
        max_position_embeddings=40, attn_implementation="eager",
    )  # fmt: skip
    return transformers.DistilBertForSequenceClassification(config)


def _gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        n_embd=32, n_layer=LAYERS, n_head=4, n_inner=64, vocab_size=VOCAB, n_positions=40,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, use_cache=False,
        attn_implementation="eager",
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)  # tied LM head: exercises tied-weight I/O


def _image(config_cls: Any, model_cls: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        return model_cls(config_cls(**IMAGE, num_labels=10, attn_implementation="eager"))

    return make


FAMILIES = {
    f.name: f
    for f in (
        Family("bert", _text(transformers.BertConfig, transformers.BertForSequenceClassification,
                             num_labels=3), 0, "logits"),  # fmt: skip
        # MiniLM is the BERT architecture; as a bare encoder (sentence embeddings) it has no head.
        Family("minilm", _text(transformers.BertConfig, transformers.BertModel), 0,
               "last_hidden_state"),  # fmt: skip
        Family("roberta", _text(transformers.RobertaConfig,
                                transformers.RobertaForSequenceClassification,
                                pad_token_id=1, num_labels=3), 1, "logits"),  # fmt: skip
        Family("distilbert", _distilbert, 0, "logits"),
        Family("gpt2", _gpt2, 0, "logits"),
        Family("vit", _image(transformers.ViTConfig, transformers.ViTForImageClassification),
               None, "logits"),  # fmt: skip
        Family("deit", _image(transformers.DeiTConfig, transformers.DeiTForImageClassification),
               None, "logits"),  # fmt: skip
    )
}


def make_inputs(fam: Family, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Token ids with right padding of varied length (text), or random images."""
    g = torch.Generator().manual_seed(seed)
    if fam.pad_id is None:
        return {"pixel_values": torch.rand(batch, 1, 8, 8, generator=g)}
    ids = torch.randint(3, VOCAB, (batch, SEQ), generator=g)
    lengths = torch.randint(3, SEQ + 1, (batch,), generator=g)
    lengths[0] = SEQ  # at least one full row
    mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).long()  # (B, T)
    ids = ids.masked_fill(mask == 0, fam.pad_id)
    return {"input_ids": ids, "attention_mask": mask}


def run_torch(model: nn.Module, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.no_grad():
        out = model.eval()(**inputs)
    return (out.logits if getattr(out, "logits", None) is not None else out[0]).numpy()


def run_onnx(path: Path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.numpy() for k, v in inputs.items()})[0]


def masked_reference(model: nn.Module, plan: PrunePlan, inputs: dict[str, torch.Tensor]):
    """Outputs of the *unpruned* model with the units ``plan`` removes silenced by hooks."""
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    hd = adapter.head_dim(model)
    handles = []

    def scale_input(mask: torch.Tensor):
        return lambda module, args: (args[0] * mask, *args[1:])

    def skip_layer(module, args, output):  # a removed layer passes its input through
        return args[0] if isinstance(output, torch.Tensor) else (args[0], *output[1:])

    kept = dict(zip(plan.layers, zip(plan.heads, plan.neurons, strict=True), strict=True))
    for i, layer in enumerate(layers):
        if i not in kept:
            handles.append(layer.register_forward_hook(skip_layer))
            continue
        heads, neurons = kept[i]
        head_mask = torch.zeros(adapter.num_heads(layer, hd), hd)
        head_mask[list(heads)] = 1
        neuron_mask = torch.zeros(adapter.ffn_width(layer))
        neuron_mask[list(neurons)] = 1
        out_proj, down = adapter.out_projection(layer), adapter.ffn(layer)[1]
        handles.append(out_proj.register_forward_pre_hook(scale_input(head_mask.reshape(-1))))
        handles.append(down.register_forward_pre_hook(scale_input(neuron_mask)))
    try:
        return run_torch(model, inputs)
    finally:
        for h in handles:
            h.remove()


@pytest.fixture(scope="module", params=list(FAMILIES))
def built(request, tmp_path_factory) -> dict[str, Any]:
    """Per family: the model, its pruned version, and their ONNX fp32 / int8 exports."""
    fam = FAMILIES[request.param]
    torch.manual_seed(0)
    model = fam.make().eval()
    pruned = prune(model, PLAN)
    d = tmp_path_factory.mktemp(fam.name)
    fp32 = export_onnx(pruned, make_inputs(fam, 2, seed=1), d / "model.onnx",
                       output_names=(fam.output,))  # fmt: skip
    int8 = quantize_dynamic_int8(fp32, d / "model.int8.onnx")
    return {"fam": fam, "model": model, "pruned": pruned, "fp32": fp32, "int8": int8, "dir": d}


def test_pruned_shapes_and_config(built):
    model, pruned = built["model"], built["pruned"]
    adapter = adapter_for(pruned)
    hd = adapter.head_dim(pruned)
    assert hd == adapter.head_dim(model) == 8
    layers = adapter.layers(pruned)
    assert [adapter.num_heads(layer, hd) for layer in layers] == [2, 3]
    assert [adapter.ffn_width(layer) for layer in layers] == [32, 4]
    for layer, n_heads in zip(layers, (2, 3), strict=True):
        for proj in adapter.head_projections(layer):
            assert out_features(proj) == adapter.head_sections * n_heads * hd
    assert pruned.config.num_hidden_layers == 2
    assert pruned.config.paretoforge_shapes == {"heads": [2, 3], "intermediate": [32, 4]}
    assert pruned.config.paretoforge_source_layers == [0, 2]
    # The original is untouched.
    assert len(adapter.layers(model)) == LAYERS
    assert adapter.num_heads(adapter.layers(model)[0], hd) == 4


def test_pruning_equals_masking_the_removed_units(built):
    fam = built["fam"]
    x = make_inputs(fam, 4, seed=2)
    expected = masked_reference(built["model"], PLAN, x)
    np.testing.assert_allclose(run_torch(built["pruned"], x), expected, atol=1e-5, rtol=0)


def test_identity_plan_changes_nothing(built):
    model = built["model"]
    x = make_inputs(built["fam"], 4, seed=3)
    same = prune(model, identity_plan(model))
    np.testing.assert_allclose(run_torch(same, x), run_torch(model, x), atol=1e-6, rtol=0)


def test_onnx_fp32_matches_pytorch_with_padding(built):
    fam = built["fam"]
    x = make_inputs(fam, 5, seed=4)  # other values, batch size and padding than the export
    if fam.pad_id is not None:
        assert (x["attention_mask"] == 0).any()
    summary = graph_summary(built["fp32"])
    assert [i["name"] for i in summary["inputs"]] == list(x)
    assert [o["name"] for o in summary["outputs"]] == [fam.output]  # no KV-cache outputs
    np.testing.assert_allclose(
        run_onnx(built["fp32"], x), run_torch(built["pruned"], x), atol=1e-4, rtol=0
    )


def test_int8_runs_and_tracks_fp32(built):
    x = make_inputs(built["fam"], 8, seed=5)
    ref, got = run_onnx(built["fp32"], x), run_onnx(built["int8"], x)
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert graph_summary(built["int8"])["quant_op_counts"]["MatMulInteger"] > 0
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99


def test_save_load_round_trip_is_exact(built, tmp_path):
    pruned = built["pruned"]
    save_pretrained(pruned, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["paretoforge_shapes"] == {"heads": [2, 3], "intermediate": [32, 4]}
    assert config["architectures"] == [type(pruned).__name__]
    loaded = load_pretrained(tmp_path)
    assert type(loaded) is type(pruned)
    ref, got = pruned.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    x = make_inputs(built["fam"], 3, seed=6)
    np.testing.assert_array_equal(run_torch(loaded, x), run_torch(pruned, x))
    # Pruning the reloaded model again composes the source-layer record.
    again = prune(loaded, PrunePlan(layers=(1,), heads=((0,),), neurons=((1, 2),)))
    assert again.config.paretoforge_source_layers == [2]


def test_importance_plans_and_prunes(built):
    fam, model = built["fam"], built["model"]
    x = make_inputs(fam, 6, seed=7)
    loss_fn = None
    y = None
    if fam.name == "minilm":  # no head: score against an arbitrary target on the embeddings
        def loss_fn(out, inputs, labels):
            return out.last_hidden_state[:, 0].pow(2).sum()
    elif fam.name != "gpt2":  # GPT-2 without labels scores the next-token loss
        y = torch.arange(6) % 2
    imp = compute_importance(model, x, y, batch_size=4, loss_fn=loss_fn)
    assert imp.heads.shape == (LAYERS, 4) and np.isfinite(imp.heads).all()
    assert [len(n) for n in imp.neurons] == [64] * LAYERS
    assert (imp.layers > 0).all()
    small = prune(model, plan_from_importance(imp, layers_kept=2, heads_kept=1, ffn_kept=0.25))
    assert run_torch(small, x).shape == run_torch(model, x).shape
