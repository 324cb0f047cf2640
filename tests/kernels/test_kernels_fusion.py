"""Graph fusions: ONNX Runtime's transformer optimizer applies, and the output is unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from paretoforge.exceptions import BuildError
from paretoforge.kernels import apply_precision, export_onnx
from paretoforge.kernels.fusion import fuse, fusion_model_type


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _tiny_bert() -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32, num_labels=3,
    )
    return transformers.BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 100, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.int64)
    mask[1, 8:] = 0  # padding in the second example
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    path = tmp_path_factory.mktemp("fusion") / "bert.onnx"
    export_onnx(_tiny_bert(), feeds, path)
    return path, {k: v.numpy() for k, v in feeds.items()}


def test_fuse_bert_applies_and_keeps_outputs(bert_onnx, tmp_path: Path) -> None:
    src, feeds = bert_onnx
    applied = fuse(src, tmp_path / "fused.onnx", "bert", num_heads=4, hidden_size=32)
    assert applied and all(n > 0 for n in applied.values())
    assert applied.get("SkipLayerNormalization", 0) > 0 or applied.get("Attention", 0) > 0
    np.testing.assert_allclose(_run(tmp_path / "fused.onnx", feeds), _run(src, feeds),
                               atol=1e-4, rtol=0)


def test_fuse_vit_applies_and_keeps_outputs(vit_onnx: Path, tmp_path: Path) -> None:
    applied = fuse(vit_onnx, tmp_path / "fused.onnx", "deit", num_heads=4, hidden_size=32)
    assert applied.get("SkipLayerNormalization", 0) > 0 or applied.get("Attention", 0) > 0
    x = {"pixel_values": np.random.default_rng(0).standard_normal((3, 1, 8, 8), np.float32)}
    np.testing.assert_allclose(_run(tmp_path / "fused.onnx", x), _run(vit_onnx, x),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("precision", ["int8", "fp16", "int4"])
def test_precisions_on_a_fused_graph(vit_onnx: Path, tmp_path: Path, precision: str) -> None:
    fuse(vit_onnx, tmp_path / "fused.onnx", "vit", num_heads=4, hidden_size=32)
    apply_precision(tmp_path / "fused.onnx", tmp_path / "q.onnx", precision)
    apply_precision(vit_onnx, tmp_path / "q_unfused.onnx", precision)
    x = {"pixel_values": np.random.default_rng(0).standard_normal((3, 1, 8, 8), np.float32)}
    got, want = _run(tmp_path / "q.onnx", x), _run(tmp_path / "q_unfused.onnx", x)
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), atol=1e-2)


def test_unsupported_model_type_and_broken_input(tmp_path: Path) -> None:
    assert fusion_model_type("roberta") == "bert"
    with pytest.raises(BuildError, match="no graph fusions for model_type 'llama'"):
        fuse(tmp_path / "x.onnx", tmp_path / "y.onnx", "llama", num_heads=1, hidden_size=8)
    (tmp_path / "x.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(BuildError, match="fusion \\(bert\\) of .* failed"):
        fuse(tmp_path / "x.onnx", tmp_path / "y.onnx", "bert", num_heads=1, hidden_size=8)
