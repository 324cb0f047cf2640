"""Two search dimensions of your own, registered when a spec names this file.

``classifier_bias``: at the derive stage (on the PyTorch model after surgery, before
recovery), keep or drop the classifier's bias. ``graph_doc``: at the passes stage (on the fp32
ONNX graph, before the precision step), stamp the graph's doc string. A spec searches both:

    space:
      preset: vit-prune
      modules: [dimensions/classifier_dims.py]   # relative to the spec file

Each dimension's first choice is its default: the value that leaves the candidate as it is
(the unpruned base, trial 0, has it, and configs at it keep the keys they had without it).
"""

from __future__ import annotations

import torch

from paretoforge.search_spaces import Dimension, register_dimension


def classifier_bias(model: torch.nn.Module, value: str) -> torch.nn.Module:
    """``"drop"``: zero the classifier's bias (a smaller head to recover); ``"keep"``: as is."""
    head = getattr(model, "classifier", None)
    if value == "drop" and head is not None and getattr(head, "bias", None) is not None:
        with torch.no_grad():
            head.bias.zero_()
        model.config.classifier_bias = "dropped"  # recorded in the artifact's config.json
    return model


def graph_doc(onnx_in: str, onnx_out: str, value: str) -> None:
    """Write the graph to ``onnx_out`` with ``value`` as its doc string."""
    import onnx

    graph = onnx.load(str(onnx_in))
    graph.doc_string = f"paretoforge example: {value}"
    onnx.save(graph, str(onnx_out))


register_dimension(Dimension(
    name="classifier_bias", choices=("keep", "drop"), stage="derive", apply=classifier_bias,
    description="Keep or zero the classifier's bias before recovery."))
register_dimension(Dimension(
    name="graph_doc", choices=("none", "stamped"), stage="passes", apply=graph_doc,
    description="Stamp the ONNX graph's doc string."))
