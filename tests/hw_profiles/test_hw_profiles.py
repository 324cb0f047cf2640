from __future__ import annotations

from pathlib import Path

import pytest

from paretoforge.exceptions import PlacementError, SpecError, UnknownComponentError
from paretoforge.hw_profiles import (
    PROFILES,
    HardwareProfile,
    get_profile,
    load_profiles_yaml,
    parse_profile,
)


def test_builtins_exist_and_run_anywhere() -> None:
    assert {"cpu", "cpu-1t"} <= set(PROFILES.names())
    cpu, one = get_profile("cpu"), get_profile("cpu-1t")
    assert cpu.intra_op_threads is None and one.intra_op_threads == 1
    assert cpu.resource is None and one.resource is None
    assert cpu.device == "cpu" and cpu.provider == "CPUExecutionProvider"
    assert set(cpu.precisions) == {"fp32", "int8", "int8-static", "fp16", "int4"}  # ORT CPU: all


def test_threads_for() -> None:
    assert get_profile("cpu").threads_for(6) == 6
    assert get_profile("cpu-1t").threads_for(6) == 1
    with pytest.raises(PlacementError, match="intra_op_threads"):
        HardwareProfile(name="big", device="cpu", intra_op_threads=8).threads_for(2)


def test_unknown_profile_suggests() -> None:
    with pytest.raises(UnknownComponentError, match="Did you mean 'cpu-1t'"):
        get_profile("cpu1t")


def test_resource_defaults_to_hw_name_and_null_means_any() -> None:
    assert parse_profile({"name": "edge", "device": "cpu"}).resource == "hw:edge"
    assert parse_profile({"name": "edge", "device": "cpu", "resource": None}).resource is None
    assert parse_profile({"name": "e", "device": "cpu", "resource": "rack1"}).resource == "rack1"


def test_profile_is_frozen() -> None:
    p = get_profile("cpu")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type is internal
        p.batch_size = 8  # type: ignore[misc]


def test_yaml_user_profiles_load(tmp_path: Path) -> None:
    f = tmp_path / "profiles.yaml"
    f.write_text(
        "profiles:\n"
        "  - name: edge-2t\n"
        "    device: cpu\n"
        "    intra_op_threads: 2\n"
        "    batch_size: 4\n"
        "    precisions: [int8]\n"
        "  - name: gpu-a\n"
        "    device: cuda\n"
        "    provider: CUDAExecutionProvider\n"
    )
    edge, gpu = load_profiles_yaml(f)
    assert edge.name == "edge-2t" and edge.batch_size == 4 and edge.precisions == ("int8",)
    assert edge.resource == "hw:edge-2t"
    assert gpu.device == "cuda"
    # A bare list works too.
    f.write_text("- {name: x, device: cpu}\n")
    assert [p.name for p in load_profiles_yaml(f)] == ["x"]


def test_yaml_unknown_key_is_spec_error_naming_field(tmp_path: Path) -> None:
    f = tmp_path / "profiles.yaml"
    f.write_text("- name: edge\n  device: cpu\n  threads: 2\n")
    with pytest.raises(SpecError, match=r"unknown field 'threads'.*intra_op_threads"):
        load_profiles_yaml(f)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("- {name: e, device: cpu, batch_size: 0}", "batch_size"),
        ("- {name: e, device: tpu}", "device"),
        ("- {name: e}", "missing required field 'device'"),
        ("- {name: e, device: cuda}", "CUDA execution provider"),
        ("- {name: e, device: cpu, precisions: [int8, int8]}", "repeat"),
        ("- {name: e, device: cpu}\n- {name: e, device: cpu}", "more than once"),
        ("name: e", "list of profiles"),
        ("- [1, 2]", "mapping"),
        ("- {name: 'a/b', device: cpu}", "name"),
    ],
)
def test_yaml_invalid(tmp_path: Path, body: str, match: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(body + "\n")
    with pytest.raises(SpecError, match=match):
        load_profiles_yaml(f)


def test_missing_file_is_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="Cannot read"):
        load_profiles_yaml(tmp_path / "nope.yaml")


def test_json_schema_has_descriptions() -> None:
    props = HardwareProfile.model_json_schema()["properties"]
    assert all(p.get("description") for p in props.values())


def test_specific_hardware_builtins() -> None:
    edge, gpu = get_profile("edge-arm"), get_profile("gpu-fp16")
    assert edge.resource == "hw:edge-arm" and edge.device == "cpu"
    assert edge.intra_op_threads is None  # the whole board
    assert edge.ray_options() == {"resources": {"hw:edge-arm": 1}}
    assert gpu.device == "cuda" and gpu.provider == "CUDAExecutionProvider"
    assert gpu.io_binding and gpu.supports("fp16") and not gpu.supports("int8")
    assert gpu.resource == "GPU" and gpu.on_gpu
    # Ray refuses "GPU" in resources={...}; the GPU is asked for with num_gpus.
    assert gpu.ray_options() == {"num_gpus": 1}
    assert get_profile("cpu-1t").ray_options() == {}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"device": "cpu", "cuda_graph": True}, "cuda_graph needs device 'cuda'"),
        ({"device": "cuda", "provider": "CUDAExecutionProvider", "cuda_graph": True},
         "io_binding"),
        ({"device": "cuda", "provider": "CUDAExecutionProvider", "io_binding": True,
          "cuda_graph": True, "sequence_lengths": "task"}, "fixed shapes"),
        ({"device": "cpu", "runtime": "torch-eager", "io_binding": True}, "ONNX Runtime options"),
        ({"device": "cpu", "runtime": "tvm"}, "runtime"),
    ],
)
def test_runtime_options_validate(data: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        parse_profile({"name": "x", **data})


def test_torch_profiles_need_no_provider() -> None:
    p = parse_profile({"name": "tc", "device": "cuda", "runtime": "torch-compile"})
    assert p.runtime == "torch-compile" and p.ray_options() == {"num_gpus": 1,
                                                                 "resources": {"hw:tc": 1}}
    ok = parse_profile({"name": "g", "device": "cuda", "provider": "CUDAExecutionProvider",
                        "io_binding": True, "cuda_graph": True, "sequence_length": 128})
    assert ok.cuda_graph


def test_register_profile_is_idempotent_and_refuses_a_different_definition() -> None:
    from paretoforge.hw_profiles import register_profile

    p = parse_profile({"name": "hwtest-reg", "device": "cpu", "intra_op_threads": 1})
    assert register_profile(p) is register_profile(parse_profile(p.model_dump()))
    with pytest.raises(SpecError, match=r"hwtest-reg.*\['intra_op_threads'\]"):
        register_profile(parse_profile({"name": "hwtest-reg", "device": "cpu",
                                        "intra_op_threads": 2}))
    with pytest.raises(SpecError, match="'cpu-1t' is already registered"):
        register_profile(parse_profile({"name": "cpu-1t", "device": "cpu"}))


def test_spec_hardware_profiles_are_registered_and_travel_with_the_spec(tmp_path: Path) -> None:
    from paretoforge.spec import Spec

    edge = {"name": "hwtest-edge", "device": "cpu", "intra_op_threads": 1}
    spec = Spec.from_dict({"hardware": [edge], "profiles": ["cpu-1t", "hwtest-edge"]})
    assert get_profile("hwtest-edge").resource == "hw:hwtest-edge"
    # another process rebuilds the spec from its JSON (registering the same definition again)
    again = Spec.model_validate(spec.model_dump(mode="json"))
    assert again == spec and again.hardware[0].name == "hwtest-edge"
    # a profiles YAML file: read once, the spec carries the definitions
    f = tmp_path / "profiles.yaml"
    f.write_text("profiles:\n  - {name: hwtest-file, device: cpu, resource: rack-7}\n")
    from_file = Spec.from_dict({"hardware": str(f), "profiles": ["hwtest-file"],
                                "objectives": [{"metric": "accuracy",
                                                "direction": "maximize"}]})
    assert from_file.model_dump(mode="json")["hardware"][0]["resource"] == "rack-7"


@pytest.mark.parametrize(
    ("hardware", "profiles", "match"),
    [
        ([{"name": "hwtest-edge", "device": "cpu", "intra_op_threads": 4}], ["cpu-1t"],
         r"hardware: Profile 'hwtest-edge' is already registered with a different definition"),
        ([{"name": "hwtest-d", "device": "cpu"}] * 2, ["cpu-1t"], "defined more than once"),
        ([{"name": "hwtest-x", "device": "cpu", "threads": 2}], ["cpu-1t"],
         "unknown field 'hardware.0.threads'"),
        ("no-such-profiles.yaml", ["cpu-1t"], "Cannot read hardware profiles file"),
        ([], ["hwtest-undeclared"], "declared under `hardware:`"),
    ],
)
def test_spec_hardware_errors(hardware: object, profiles: list[str], match: str) -> None:
    from paretoforge.spec import Spec

    Spec.from_dict({"hardware": [{"name": "hwtest-edge", "device": "cpu",
                                  "intra_op_threads": 1}]})
    with pytest.raises(SpecError, match=match):
        Spec.from_dict({"hardware": hardware, "profiles": profiles})


def test_requires_takes_known_cpu_features_only() -> None:
    p = parse_profile({"name": "hwtest-vnni", "device": "cpu",
                       "requires": ["avx512_vnni", "avx2", "avx2"]})
    assert p.requires == ("avx2", "avx512_vnni")  # sorted, once each
    assert p.missing_features(["avx2", "fma"]) == ["avx512_vnni"]
    assert p.missing_features(["avx2", "avx512_vnni"]) == []
    assert parse_profile({"name": "hwtest-any", "device": "cpu"}).requires == ()
    with pytest.raises(SpecError, match=r"requires: unknown CPU feature 'avx512vnni'; did you "
                                        r"mean 'avx512_vnni'\?") as err:
        parse_profile({"name": "hwtest-bad", "device": "cpu", "requires": ["avx512vnni"]})
    assert "\n" not in str(err.value) and "sse4_2" in str(err.value)  # lists the features
