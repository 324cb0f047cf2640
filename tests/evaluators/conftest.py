from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def eval_vit() -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=10,
    )
    return transformers.ViTForImageClassification(config).eval()


@pytest.fixture(scope="session")
def eval_onnx(eval_vit: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from paretoforge.kernels import export_onnx

    path = tmp_path_factory.mktemp("evaluators") / "vit.onnx"
    return export_onnx(eval_vit, {"pixel_values": torch.randn(2, 1, 8, 8)}, path)


@pytest.fixture(scope="session")
def samples() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)


def make_token_model(path: Path, vocab: int = 50, hidden: int = 8, classes: int = 3) -> Path:
    """A tiny text classifier with symbolic batch and sequence axes, built node by node.

    logits = (sum_t mask[b, t] * emb[ids[b, t]]) @ w: enough to check that batches of any
    sequence length run, and that the mask and the ids take the same shape.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    emb = numpy_helper.from_array(rng.standard_normal((vocab, hidden)).astype(np.float32), "emb")
    w = numpy_helper.from_array(rng.standard_normal((hidden, classes)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    axes2 = numpy_helper.from_array(np.array([2], np.int64), "axes2")
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"]),  # (B, T, H)
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),  # (B, T)
        helper.make_node("Unsqueeze", ["m", "axes2"], ["m3"]),  # (B, T, 1)
        helper.make_node("Mul", ["e", "m3"], ["em"]),
        helper.make_node("ReduceSum", ["em", "axes"], ["pooled"], keepdims=0),  # (B, H)
        helper.make_node("MatMul", ["pooled", "w"], ["logits"]),  # (B, C)
    ]
    graph = helper.make_graph(
        nodes,
        "tokens",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[emb, w, axes, axes2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def token_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_token_model(tmp_path_factory.mktemp("tokens") / "tokens.onnx")


@pytest.fixture(scope="session")
def token_samples() -> dict[str, np.ndarray]:
    """Padded token samples of varied real lengths (3..20 of width 24), like a tokenizer's."""
    rng = np.random.default_rng(0)
    n, width = 40, 24
    lengths = rng.integers(3, 21, size=n)
    ids = np.zeros((n, width), np.int64)
    mask = np.zeros((n, width), np.int64)
    for i, ln in enumerate(lengths):
        ids[i, :ln] = rng.integers(1, 50, size=ln)
        mask[i, :ln] = 1
    return {"input_ids": ids, "attention_mask": mask}
