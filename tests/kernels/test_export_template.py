"""Exports from a template: the same file a trace writes, for every encoder family; a graph that
would compute something else is traced instead."""

from __future__ import annotations

import filecmp

import numpy as np
import onnxruntime as ort
import pytest
import torch

from paretoforge.kernels.export import export_onnx
from paretoforge.kernels.export_template import ExportTemplates, structure_signature
from paretoforge.models.adapters import ADAPTERS
from paretoforge.models.surgery import PrunePlan, prune

FAMILIES = {
    "bert": "BertForSequenceClassification",
    "bert-encoder": "BertModel",
    "distilbert": "DistilBertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "vit": "ViTForImageClassification",
    "deit": "DeiTForImageClassification",
}


def _model(family: str, seed: int = 0, *, trained: bool = True) -> torch.nn.Module:
    """A tiny model of ``family``; ``trained``: every parameter distinct, as after training
    (a fresh init's zero biases and unit norms are equal, and a trace merges equal ones)."""
    adapter = ADAPTERS.get(family.split("-")[0])
    config = adapter.tiny_config()
    config.num_hidden_layers = 3
    config.initializer_range = 0.3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = adapter.build(config, FAMILIES[family]).eval()
        if trained:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
    return model


def _example(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    if model.main_input_name == "pixel_values":
        return {"pixel_values": torch.rand(1, 1, 8, 8)}, ()
    ids = torch.randint(3, 99, (1, 7), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ("input_ids",
                                                                         "attention_mask")


def _output(out):
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out.last_hidden_state


# two sub-networks of two layers, each layer with its own heads and FFN neurons
PLANS = [
    PrunePlan(layers=(0, 2), heads=((0, 1, 3), (2,)), neurons=((1, 5, 9, 40), (0, 63))),
    PrunePlan(layers=(1, 2), heads=((1,), (0, 1, 2, 3)), neurons=(tuple(range(32)), (7,))),
    PrunePlan(layers=(0, 1), heads=((2, 3), (0, 3)), neurons=((4, 8), tuple(range(0, 64, 3)))),
]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_filled_template_is_the_file_a_trace_writes(family, tmp_path):
    templates = ExportTemplates()
    methods = []
    for i, plan in enumerate(PLANS):
        # different weights each time, as the sub-networks of a search have
        model = prune(_model(family, seed=i), plan).eval()
        example, tokens = _example(model)
        sig = structure_signature(model, example, "test")
        methods.append(templates.export(model, example, tmp_path / f"t{i}.onnx", signature=sig,
                                        output_fn=_output, dynamic_sequence=tokens))
        export_onnx(model, example, tmp_path / f"r{i}.onnx", output_fn=_output,
                    dynamic_sequence=tokens)
        assert filecmp.cmp(tmp_path / f"t{i}.onnx", tmp_path / f"r{i}.onnx", shallow=False), i
        # and it runs: a longer batch than the example, as the quality evaluation feeds it
        sess = ort.InferenceSession(str(tmp_path / f"t{i}.onnx"),
                                    providers=["CPUExecutionProvider"])
        feeds = {k: torch.cat([v, v]) for k, v in example.items()}
        with torch.no_grad():
            want = _output(model(**feeds)).numpy()
        got = sess.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert methods == ["traced", "template", "template"]
    assert templates.counts == {"traced": 1, "template": 2, "rejected": 0}


def test_a_fresh_init_with_equal_parameters_is_templated_and_exact(tmp_path):
    # its trace merges the equal zero biases into one initializer; the template is learned
    # from random copies instead, and a filled graph computes the model all the same
    templates = ExportTemplates()
    for i, plan in enumerate(PLANS):
        model = prune(_model("bert", seed=i, trained=False), plan).eval()
        example, tokens = _example(model)
        templates.export(model, example, tmp_path / f"{i}.onnx", output_fn=_output,
                         signature=structure_signature(model, example), dynamic_sequence=tokens)
        sess = ort.InferenceSession(str(tmp_path / f"{i}.onnx"),
                                    providers=["CPUExecutionProvider"])
        with torch.no_grad():
            want = _output(model(**example)).numpy()
        np.testing.assert_allclose(sess.run(None, {k: v.numpy() for k, v in example.items()})[0],
                                   want, rtol=1e-4, atol=1e-5)
    assert templates.counts == {"traced": 1, "template": 2, "rejected": 0}


def test_a_signature_that_hides_a_difference_costs_a_trace_not_a_wrong_graph(tmp_path):
    templates = ExportTemplates()
    two = prune(_model("vit"), PLANS[0]).eval()
    three = prune(_model("vit", seed=1), PrunePlan(
        layers=(0, 1, 2), heads=((0,), (1,), (2,)), neurons=((0,), (1,), (2,)))).eval()
    example, _ = _example(two)
    assert templates.export(two, example, tmp_path / "a.onnx", signature="same") == "traced"
    # the depth-2 graph filled from a depth-3 model computes a depth-2 network: caught
    assert templates.export(three, example, tmp_path / "b.onnx", signature="same") == "traced"
    assert templates.counts["rejected"] == 1
    export_onnx(three, example, tmp_path / "r.onnx")
    assert filecmp.cmp(tmp_path / "b.onnx", tmp_path / "r.onnx", shallow=False)
    # the signature is not templated again
    assert templates.export(two, example, tmp_path / "c.onnx", signature="same") == "traced"


class _Folded(torch.nn.Module):
    """A weight the exporter folds into a constant no parameter equals (2 * w)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.w * 2.0)


def test_a_structure_whose_constants_come_from_weights_is_always_traced(tmp_path):
    templates = ExportTemplates()
    x = {"x": torch.randn(1, 4)}
    for i in range(3):
        m = _Folded(4)
        assert templates.export(m, x, tmp_path / f"{i}.onnx", signature="folded") == "traced"
        sess = ort.InferenceSession(str(tmp_path / f"{i}.onnx"),
                                    providers=["CPUExecutionProvider"])
        with torch.no_grad():
            np.testing.assert_allclose(sess.run(None, {"x": x["x"].numpy()})[0],
                                       m(x["x"]).numpy(), rtol=1e-6)
    assert templates.counts == {"traced": 3, "template": 0, "rejected": 0}


def test_sub_networks_of_one_structure_share_a_graph_key_and_a_placement(tmp_path):
    # A screening measurement reports the placement of a graph structure once per worker:
    # sub-networks keeping the same layers (any heads, FFN neurons, weights) share the key;
    # another depth does not.
    from paretoforge.hw_profiles import get_profile
    from paretoforge.kernels.runtime import graph_structure_key, placement_report
    from paretoforge.orchestrator.bench import measure_profile

    paths = []
    for i, plan in enumerate(PLANS):
        model = prune(_model("vit", seed=i), plan).eval()
        example, _ = _example(model)
        export_onnx(model, example, tmp_path / f"{i}.onnx", output_fn=_output)
        paths.append(tmp_path / f"{i}.onnx")
    three = prune(_model("vit"), PrunePlan(layers=(0, 1, 2), heads=((0,), (1,), (2,)),
                                           neurons=((0,), (1,), (2,)))).eval()
    export_onnx(three, example, tmp_path / "three.onnx", output_fn=_output)
    keys = {graph_structure_key(p) for p in paths}
    assert len(keys) == 1 and graph_structure_key(tmp_path / "three.onnx") not in keys

    profile = get_profile("cpu-1t")
    inputs = {"pixel_values": np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)}
    settings = {"rounds": 1, "max_rounds": 1, "max_seconds": 0.02, "min_runs": 3}
    placements: dict = {}
    first = measure_profile(paths[0], profile, inputs, cores=[0], node_id="n",
                            settings=settings, placements=placements)
    second = measure_profile(paths[1], profile, inputs, cores=[0], node_id="n",
                             settings=settings, placements=placements)
    other = measure_profile(tmp_path / "three.onnx", profile, inputs, cores=[0], node_id="n",
                            settings=settings, placements=placements)
    assert len(placements) == 2 and "same_structure_as_earlier" not in first["placement"]
    assert second["placement"].pop("same_structure_as_earlier") is True
    # the copy is what the graph's own report says
    assert second["placement"] == placement_report(paths[1], profile, inputs, cores=[0])
    assert other["placement"]["nodes_after"] != first["placement"]["nodes_after"]
