"""Placement: a profile bound to a Ray resource is measured on a node that carries it.

The cluster test runs a real search on a 2-node ``ray.cluster_utils.Cluster`` (in a subprocess:
one Ray instance per process) whose nodes carry different resources, with two user-declared
profiles bound to them; every measurement must come from its resource's node, whichever worker
built the candidate. The bench itself is tested without Ray.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paretoforge.exceptions import MeasurementError
from paretoforge.hw_profiles import HardwareProfile
from paretoforge.orchestrator.bench import Bench, current_node_id

HERE = Path(__file__).parent

# One definition per name for the whole test session: the registry refuses a different one.
ALPHA = {"name": "alpha-1t", "device": "cpu", "intra_op_threads": 1, "resource": "hw:alpha"}
BETA = {"name": "beta-1t", "device": "cpu", "intra_op_threads": 1, "resource": "hw:beta"}
GAMMA = {"name": "gamma-1t", "device": "cpu", "intra_op_threads": 1, "resource": "hw:gamma"}


def _spec(tiny: dict, profiles: list[str], hardware: list[dict], trials: int) -> dict:
    d = copy.deepcopy(tiny)
    d["hardware"] = hardware
    d["profiles"] = profiles
    d["objectives"] = [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": f"latency_p50_ms@{profiles[0]}", "direction": "minimize"}]
    d["search"].update(trials=trials)
    return d


def test_each_profile_is_measured_on_its_resource_node(tiny_spec_dict, tmp_path: Path) -> None:
    spec = _spec(tiny_spec_dict, ["alpha-1t", "beta-1t"], [ALPHA, BETA], trials=3)
    refused = _spec(tiny_spec_dict, ["cpu-1t", "gamma-1t"], [GAMMA], trials=1)
    run_dir, out = tmp_path / "run", tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, str(HERE / "placement_script.py"), json.dumps(spec), json.dumps(refused),
         str(run_dir), str(out)],
        capture_output=True, text=True, timeout=240, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["completed"] == 3 and result["failed"] == 0
    nodes = result["nodes"]

    manifests = [json.loads(p.read_text()) for p in run_dir.glob("artifacts/*/manifest.json")]
    assert len(manifests) == 3
    measured_on = set()
    for m in manifests:
        alpha = m["measurements"]["alpha-1t"]["env"]["node_id"]
        beta = m["measurements"]["beta-1t"]["env"]["node_id"]
        assert alpha == nodes["hw:alpha"], "alpha-1t measured off its node"
        assert beta == nodes["hw:beta"], "beta-1t measured off its node"
        assert m["placement"]["alpha-1t"]["profile"] == "alpha-1t"
        assert m["built_on"]["node_id"] in (alpha, beta)
        measured_on |= {alpha, beta}
    # Both nodes measured every candidate, so each candidate had one profile measured by the
    # bench of the node its builder was not on.
    assert measured_on == set(nodes.values()) and len(measured_on) == 2

    refusal = result["refused"]
    assert refusal is not None, "a profile no node serves must refuse the run"
    assert "hw:gamma" in refusal["error"] and "gamma-1t" in refusal["error"]
    assert refusal["artifacts"] == []
    assert not (tmp_path / "refused" / "run.json").exists(), "refused before prepare"


def _tiny_onnx() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32),
                                "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_bench_measures_its_profiles_without_ray() -> None:
    profile = HardwareProfile.model_validate(ALPHA)
    bench = Bench([profile.model_dump(mode="json")])
    samples = {"x": np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32)}
    out = bench.measure(_tiny_onnx(), "alpha-1t", samples)
    assert out["env"]["node_id"] == current_node_id()
    assert out["profile"] == "alpha-1t" and out["p50_ms"] > 0
    assert out["placement"]["profile"] == "alpha-1t"
    assert bench.ping()["measured"] == 1
    with pytest.raises(MeasurementError, match="beta-1t"):
        bench.measure(_tiny_onnx(), "beta-1t", samples)


def test_bench_measures_a_torch_profile_from_the_artifact_files(tmp_path: Path) -> None:
    """A torch profile loads the PyTorch model: the bench gets config + safetensors too."""
    import torch

    from paretoforge.kernels.export import export_onnx
    from paretoforge.models.io import save_pretrained
    from paretoforge.models.recipes import get_recipe
    from paretoforge.models.vit import build_vit

    model = build_vit(get_recipe("vit-digits", hidden_size=16, num_layers=1, num_heads=2,
                                 intermediate_size=32)).eval()
    save_pretrained(model, tmp_path)
    x = np.random.default_rng(2).normal(size=(8, 1, 8, 8)).astype(np.float32)
    export_onnx(model, {"pixel_values": torch.from_numpy(x[:1])}, tmp_path / "model.onnx")
    files = {n: (tmp_path / n).read_bytes()
             for n in ("model.onnx", "config.json", "model.safetensors")}
    profile = HardwareProfile(name="alpha-torch", device="cpu", runtime="torch-eager",
                              intra_op_threads=1, resource="hw:alpha")
    bench = Bench([profile.model_dump(mode="json")])
    out = bench.measure(files, "alpha-torch", {"pixel_values": x})
    assert out["p50_ms"] > 0 and out["env"]["node_id"] == current_node_id()
    with pytest.raises(MeasurementError, match="bad artifact file name"):
        bench.measure({"../model.onnx": files["model.onnx"]}, "alpha-torch",
                      {"pixel_values": x})
