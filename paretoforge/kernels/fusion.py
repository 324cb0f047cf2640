"""ONNX Runtime's transformer graph fusions, as an optional build step.

:func:`fuse` runs ``onnxruntime.transformers.optimizer.optimize_model`` (offline, no runtime
graph optimization) on an exported fp32 graph: attention subgraphs become ``Attention``
nodes, residual add + LayerNorm becomes ``SkipLayerNormalization``, erf-GELU becomes
``Gelu`` / ``BiasGelu`` and so on. It returns the fusions that applied, with their counts,
which the worker records in the candidate's manifest.
"""

from __future__ import annotations

import os
from pathlib import Path

from paretoforge.exceptions import BuildError
from paretoforge.kernels._quiet import quiet

__all__ = ["FUSION_MODEL_TYPES", "fuse", "fusion_model_type"]

#: Hugging Face ``config.model_type`` -> the optimizer's model type.
FUSION_MODEL_TYPES: dict[str, str] = {
    "bert": "bert",
    "roberta": "bert",
    "distilbert": "bert",
    "vit": "vit",
    "deit": "vit",
    "gpt2": "gpt2",
}


def fusion_model_type(hf_model_type: str) -> str:
    """The optimizer's model type for a Hugging Face ``model_type``; BuildError if none."""
    try:
        return FUSION_MODEL_TYPES[hf_model_type]
    except KeyError:
        raise BuildError(
            f"fusion: no graph fusions for model_type {hf_model_type!r}; supported: "
            f"{', '.join(sorted(FUSION_MODEL_TYPES))}"
        ) from None


def fuse(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    model_type: str,
    num_heads: int,
    hidden_size: int,
) -> dict[str, int]:
    """Fuse the transformer subgraphs of the ONNX model ``src`` into ``dst``.

    Args:
        src: An exported fp32 ONNX model.
        dst: Where the fused model is written.
        model_type: A Hugging Face ``model_type`` (``bert``, ``roberta``, ``distilbert``,
            ``vit``, ``deit``, ``gpt2``) or the optimizer's own (``bert``, ``vit``, ``gpt2``).
        num_heads: Attention heads per layer (after head pruning: the heads kept).
        hidden_size: Width of the attention's Q/K/V projections (heads x head size).

    Returns:
        ``{fused operator: count}`` for the fusions that applied (counts above zero).

    Raises:
        BuildError: The model type has no fusions, or the optimizer failed.
    """
    opt_type = fusion_model_type(model_type)
    dst = Path(dst)
    try:
        with quiet("onnxruntime", "onnxruntime.transformers", "fusion"):
            from onnxruntime.transformers.optimizer import optimize_model

            optimized = optimize_model(
                str(src),
                model_type=opt_type,
                num_heads=int(num_heads),
                hidden_size=int(hidden_size),
                opt_level=0,  # offline fusions only; the session optimizes at load time
                use_gpu=False,
            )
            stats = optimized.get_fused_operator_statistics()
            dst.parent.mkdir(parents=True, exist_ok=True)
            optimized.save_model_to_file(str(dst))
    except Exception as e:
        raise BuildError(f"fusion ({opt_type}) of {str(src)!r} failed: "
                         f"{type(e).__name__}: {e}") from e
    return {str(op): int(n) for op, n in sorted(stats.items()) if int(n) > 0}
