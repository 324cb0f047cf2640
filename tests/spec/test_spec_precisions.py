"""A measured profile refuses, when the spec is checked, a precision it does not list."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from paretoforge.cli import app
from paretoforge.exceptions import SpecError
from paretoforge.hw_profiles import PROFILES
from paretoforge.spec import Spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

GPU_SPEC = {
    "profiles": ["gpu-fp16"],
    "objectives": [{"metric": "accuracy", "direction": "maximize"},
                   {"metric": "latency_p50_ms@gpu-fp16", "direction": "minimize"}],
}  # vit-prune suggests fp32 and int8; gpu-fp16 runs fp16 and fp32


def test_a_profile_refuses_a_precision_it_does_not_list() -> None:
    with pytest.raises(SpecError) as e:
        Spec.from_dict(GPU_SPEC)
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("'gpu-fp16'", "'int8'", "fp16, fp32", "space.dimensions.precision"):
        assert part in msg, msg


def test_dropping_the_precision_fixes_it() -> None:
    spec = Spec.from_dict({**GPU_SPEC, "space": {"dimensions": {"precision": ["fp32", "fp16"]}}})
    assert spec.profiles == ["gpu-fp16"]


def test_a_user_profile_is_held_to_its_list() -> None:
    fp32_only = {"name": "fp32-box", "device": "cpu", "intra_op_threads": 1,
                 "precisions": ["fp32"], "resource": None}  # fmt: skip
    data = {"hardware": [fp32_only], "profiles": ["cpu-1t", "fp32-box"]}
    refused = r"'fp32-box' does not run precision 'int8' \(it runs fp32\)"
    with pytest.raises(SpecError, match=refused):
        Spec.from_dict(data)
    Spec.from_dict({**data, "space": {"dimensions": {"precision": ["fp32"]}}})


def test_a_predicted_profile_is_not_held_to_its_list(tmp_path: Path) -> None:
    # Only measured profiles run candidates; a predicted one is served from measurements.
    spec = Spec.from_dict({**GPU_SPEC, "profiles": ["cpu-1t", "gpu-fp16"],
                           "prediction": {"profiles": {"gpu-fp16": {"source": str(tmp_path)}}}},
                          check_sources=False)  # fmt: skip
    assert spec.measured_profiles == ["cpu-1t"]


def test_builtin_cpu_profiles_run_every_preset_precision() -> None:
    from paretoforge.search_spaces import SPACES

    for preset in SPACES.names():
        Spec.from_dict({"space": {"preset": preset}, "profiles": ["cpu-1t", "cpu"]})
    assert "int8-static" in PROFILES.get("cpu-1t").precisions


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_still_validate(path: Path) -> None:
    Spec.from_file(path)


def test_the_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    p = tmp_path / "gpu.yaml"
    p.write_text(yaml.safe_dump(GPU_SPEC))
    result = CliRunner().invoke(app, ["search", str(p), "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "Traceback" not in result.output and len(err.splitlines()) == 1, err
    assert "'gpu-fp16' does not run precision 'int8'" in err
    assert "space.dimensions.precision" in err
    assert not (tmp_path / "r").exists(), "nothing is written for a bad spec"
