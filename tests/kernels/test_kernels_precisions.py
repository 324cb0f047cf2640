"""The fp16 and int4 precisions: ONNX Runtime's float16 converter and MatMulNBits quantizer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from paretoforge.evaluators.predictor import features_from
from paretoforge.exceptions import BuildError
from paretoforge.kernels import PRECISIONS, apply_precision, export_onnx, graph_summary
from paretoforge.search_spaces import CandidateConfig

VOCAB, SEQ = 101, 12


def _gpt2() -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_embd=64, n_layer=2, n_head=4, n_inner=256, vocab_size=VOCAB, n_positions=40,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, use_cache=False,
        attn_implementation="eager",
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


def _text_inputs(batch: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, SEQ), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, SEQ - 4 :] = 0  # right padding on all rows but the first
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


@pytest.fixture(scope="module")
def models(
    make_vit: Callable[..., torch.nn.Module], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    """fp32 ONNX files of a tiny GPT-2 (decoder, Conv1D -> Gemm) and a tiny ViT (encoder),
    each with inputs to run it on."""
    d = tmp_path_factory.mktemp("precisions")
    gpt2 = export_onnx(_gpt2(), _text_inputs(2, seed=0), d / "gpt2.onnx")
    vit = export_onnx(make_vit(hidden=64, ffn=256, layers=2),
                      {"pixel_values": torch.randn(1, 1, 8, 8)}, d / "vit.onnx")
    pixels = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32)
    return {
        "gpt2": (gpt2, {k: v.numpy() for k, v in _text_inputs(4, seed=1).items()}),
        "vit": (vit, {"pixel_values": pixels}),
    }


def _run(path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]
    return sess.run(None, feed)[0]


def _built(models: dict, name: str, precision: str) -> tuple[Path, Path, dict]:
    src, feed = models[name]
    dst = src.with_name(f"{name}.{precision}.onnx")
    if not dst.exists():
        assert apply_precision(src, dst, precision) == dst
    return src, dst, feed


def test_new_precisions_are_listed() -> None:
    assert PRECISIONS[:3] == ("fp32", "int8", "int8-static")  # existing keys unchanged
    assert {"fp16", "int4"} <= set(PRECISIONS)


@pytest.mark.parametrize("name", ["gpt2", "vit"])
def test_fp16_runs_on_cpu_close_to_fp32(models: dict, name: str) -> None:
    src, fp16, feed = _built(models, name, "fp16")
    s32, s16 = graph_summary(src), graph_summary(fp16)
    # Inputs and outputs keep their exported types; the weights are float16.
    assert s16["inputs"] == s32["inputs"] and s16["outputs"] == s32["outputs"]
    assert s16["initializer_dtype_bytes"].get("float16", 0) > 0.9 * s16["initializer_bytes"]
    assert s16["initializer_bytes"] < 0.55 * s32["initializer_bytes"]
    ref, got = _run(src, feed), _run(fp16, feed)
    assert got.dtype == ref.dtype == np.float32 and got.shape == ref.shape
    # float16 keeps 11 significant bits (relative step 1e-3 per rounding); measured ~5e-4.
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert rel < 1e-2, rel
    assert np.abs(got - ref).max() < 1e-2 * np.abs(ref).max()


@pytest.mark.parametrize("name", ["gpt2", "vit"])
def test_int4_is_matmulnbits_on_cpu_close_to_fp32(models: dict, name: str) -> None:
    src, int4, feed = _built(models, name, "int4")
    s32, s4 = graph_summary(src), graph_summary(int4)
    # Every linear layer, Gemm ones included (GPT-2's Conv1D, the classifier), is MatMulNBits:
    # no fp32 weight matmul is left, and the MACs per token are the same as fp32's.
    assert s4["op_counts"].get("MatMulNBits", 0) >= 2 * 4  # >= 4 linear layers per block
    assert s4["op_counts"].get("Gemm", 0) == 0
    assert s4["quant_op_counts"]["MatMulNBits"] == s4["op_counts"]["MatMulNBits"]
    assert s4["matmul_weight_elems"] == s32["matmul_weight_elems"]
    assert s4["file_bytes"] < s32["file_bytes"]
    assert s4["initializer_bytes"] < s32["initializer_bytes"]
    ref, got = _run(src, feed), _run(int4, feed)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    # 4-bit weights (15 levels per block of 32) leave a few percent of relative error per
    # layer; the outputs still point the same way: cosine over the whole output > 0.95.
    cos = float((ref * got).sum() / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert cos > 0.95, cos


@pytest.mark.parametrize("name", ["gpt2", "vit"])
def test_int4_shrinks_the_weights(models: dict, name: str) -> None:
    # Measured: 0.23x (GPT-2, embeddings stay fp32) and 0.17x (ViT) of the fp32 weight bytes.
    src, int4, _ = _built(models, name, "int4")
    s32, s4 = graph_summary(src), graph_summary(int4)
    assert s4["initializer_bytes"] < 0.35 * s32["initializer_bytes"]


def test_int4_without_weights_is_a_build_error(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    src = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph), str(src))
    with pytest.raises(BuildError, match="int4"):
        apply_precision(src, tmp_path / "relu.int4.onnx", "int4")
    assert not (tmp_path / "relu.int4.onnx").exists()
    with pytest.raises(BuildError, match="no such file"):
        apply_precision(tmp_path / "absent.onnx", tmp_path / "x.onnx", "fp16")


@pytest.mark.parametrize("precision", ["fp16", "int4"])
def test_candidate_config_and_predictor_features(models: dict, precision: str) -> None:
    cfg = CandidateConfig(layers_kept=2, heads_kept=4, ffn_kept=1.0, precision=precision)
    other = CandidateConfig(layers_kept=2, heads_kept=4, ffn_kept=1.0, precision="fp32")
    assert len(cfg.key) == 16 and cfg.key != other.key
    _, built, _ = _built(models, "vit", precision)
    summary = graph_summary(built)
    f = features_from(summary, cfg)
    g = features_from(summary)  # precision read from the graph alone (no layer counts)
    macs_keys = [k for k in f if k.startswith("macs_")] + ["int8", "weight_mbytes", "nodes"]
    assert {k: f[k] for k in macs_keys} == {k: g[k] for k in macs_keys}
    macs = f["macs_per_token"]
    assert macs > 0 and f[f"macs_{precision}"] == macs
    assert f["macs_fp32"] == f["macs_int8"] == f["int8"] == 0.0
