from __future__ import annotations

import pytest

from paretoforge._sysinfo import ISA_FEATURES, isa_features
from paretoforge.hw_profiles import PROFILES, get_profile, parse_profile, served_profiles
from paretoforge.hw_profiles.doctor import (
    doctor_report,
    format_doctor,
    format_machine,
    node_machines,
    probe_node,
    profile_problems,
)


def test_served_profiles_follow_resources() -> None:
    plain = served_profiles({"CPU": 2.0, "memory": 1e9})
    assert set(plain) == set(PROFILES.names())
    assert plain["cpu"] and plain["cpu-1t"]
    assert not plain["edge-arm"] and not plain["gpu-fp16"]
    both = served_profiles({"CPU": 8.0, "GPU": 1.0, "hw:edge-arm": 1.0})
    assert both["edge-arm"] and both["gpu-fp16"]
    assert served_profiles({"hw:edge-arm": 0.0}, ["edge-arm"]) == {"edge-arm": False}


def test_probe_node_describes_this_machine() -> None:
    p = probe_node()
    for key in ("hostname", "machine", "cpu_model", "logical_cores", "usable_cores",
                "memory_gb", "onnxruntime", "torch"):
        assert p[key] not in (None, ""), key
    assert "CPUExecutionProvider" in p["onnxruntime"]["providers"]
    assert isinstance(p["torch"]["cuda_available"], bool)
    ident = p["identity"]
    assert ident["isa"] == isa_features() and ident["physical_cores"] >= 1
    assert ident["calibration"]["fp32_gflops"] > 0 and ident["calibration"]["int8_gops"] > 0


def _probe(providers: list[str], machine: str = "x86_64", gpus: list[str] | None = None) -> dict:
    return {"onnxruntime": {"providers": providers}, "machine": machine, "nvidia_smi": gpus,
            "torch": {"cuda_available": False}, "usable_cores": 4}


def test_profile_problems_say_what_to_fix() -> None:
    cpu_only = _probe(["CPUExecutionProvider"])
    assert profile_problems(get_profile("cpu"), cpu_only) == []
    gpu = profile_problems(get_profile("gpu-fp16"), cpu_only)
    assert any("onnxruntime-gpu" in p for p in gpu)
    assert any("no NVIDIA GPU" in p for p in gpu)
    ready = _probe(["CUDAExecutionProvider", "CPUExecutionProvider"], gpus=["GPU 0: H100"])
    assert profile_problems(get_profile("gpu-fp16"), ready) == []
    assert "not an ARM board" in profile_problems(get_profile("edge-arm"), cpu_only)[0]
    assert profile_problems(get_profile("edge-arm"), _probe(["CPUExecutionProvider"],
                                                            machine="aarch64")) == []
    broken = {"onnxruntime": {"error": "ImportError: x"}, "machine": "x86_64"}
    assert "does not import" in profile_problems(get_profile("cpu"), broken)[0]


def test_format_doctor_lists_nodes_and_fixes() -> None:
    report = {
        "ray_version": "2.x",
        "nodes": [{"node_id": "abc123", "address": "10.0.0.1", "resources": {"CPU": 2.0},
                   "probe": {**probe_node(), "nvidia_smi": None}}],
        "profiles": {
            "cpu": {"served": True, "resource": None, "nodes": ["abc123"],
                    "usable_nodes": ["abc123"], "problems": {}},
            "edge-arm": {"served": False, "resource": "hw:edge-arm", "nodes": [],
                         "usable_nodes": [], "problems": {}},
            "gpu-fp16": {"served": True, "resource": "GPU", "nodes": ["abc123"],
                         "usable_nodes": [], "problems": {"abc123": ["no NVIDIA GPU"]}},
        },
    }
    text = format_doctor(report)
    assert "1 node(s)" in text and "abc123" in text and "onnxruntime" in text
    assert "NOT SERVED" in text and '--resources \'{"hw:edge-arm": 1}\'' in text
    assert "UNUSABLE" in text and "no NVIDIA GPU" in text
    assert "cpu" in text and "ok" in text


@pytest.mark.usefixtures("ray_cluster")
def test_doctor_report_probes_every_node_of_a_real_cluster() -> None:
    report = doctor_report(timeout_s=120)
    assert len(report["nodes"]) >= 1
    node = report["nodes"][0]
    assert "error" not in node["probe"], node["probe"]
    assert node["probe"]["ray"]["node_id"] == node["node_id"]  # ran on the node it names
    ident = node["probe"]["identity"]  # measured on the node: features and a calibration
    assert ident["isa"] == isa_features() and ident["calibration"]["int8_gops"] > 0
    assert report["profiles"]["cpu-1t"]["served"]
    assert report["profiles"]["cpu-1t"]["usable_nodes"] == [node["node_id"]]
    assert not report["profiles"]["edge-arm"]["served"]
    text = format_doctor(report)
    assert "paretoforge doctor" in text
    assert f"isa {' '.join(ident['isa'])}" in text and "GFLOP/s" in text and "GOP/s" in text


@pytest.mark.usefixtures("ray_cluster")
def test_node_machines_identify_each_node() -> None:
    import ray

    machines = node_machines()
    assert set(machines) == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    for ident in machines.values():
        assert ident["isa"] == isa_features() and ident["calibration"]["fp32_gflops"] > 0
        assert format_machine(ident).startswith("isa ")


def test_profile_problems_name_missing_cpu_features() -> None:
    have = isa_features()
    lacking = next(f for f in ISA_FEATURES if f not in have)
    probe = {**_probe(["CPUExecutionProvider"]), "identity": {"isa": have}}
    needs = parse_profile({"name": "hwtest-needs", "device": "cpu", "resource": None,
                           "requires": [lacking]})
    assert profile_problems(needs, probe) == [
        f"CPU lacks {lacking} (the profile requires {lacking})"]
    if have:
        fine = parse_profile({"name": "hwtest-fine", "device": "cpu", "resource": None,
                              "requires": have[:1]})
        assert profile_problems(fine, probe) == []
