"""The spec: unknown keys and bad values are one clear SpecError naming the field and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from paretoforge.exceptions import SpecError
from paretoforge.spec import Spec, parse_metric

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_quickstart_spec_is_valid() -> None:
    spec = Spec.from_file(EXAMPLES / "quickstart.yaml")
    assert spec.task.name == "digits"
    assert "cpu-1t" in spec.profiles
    assert [o.metric for o in spec.objectives][1] == "latency_p50_ms@cpu-1t"


def _err(tmp_path: Path, text: str) -> str:
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    with pytest.raises(SpecError) as e:
        Spec.from_file(p)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    ("text", "must_contain"),
    [
        ("nmae: x\n", ["nmae", "allowed keys"]),
        ("search: {trails: 3}\n", ["search.trails", "trials"]),
        ("search: {trials: 0}\n", ["search.trials", "0"]),
        ("search: {sampler: cmaes}\n", ["search.sampler", "cmaes"]),
        ("profiles: [cpu1t]\n", ["cpu1t", "Did you mean 'cpu-1t'"]),
        ("objectives: [{metric: latency_p50_ms, direction: minimize}]\n", ["@cpu-1t"]),
        (
            "objectives: [{metric: latency_p50_ms@cpu, direction: minimize}]\n",
            ["'cpu'", "profiles"],
        ),
        ("objectives: [{metric: acc, direction: maximize}]\n", ["unknown metric 'acc'"]),
        ("task: {name: mnist}\n", ["mnist", "digits"]),
        ("space: {preset: vit}\n", ["vit-prune"]),
        ("model: {recipe: bert}\n", ["bert", "vit-digits"]),
        ("name: ../evil\n", ["name", "../evil"]),
        ("task: {split: {heldout_fraction: 1.5}}\n", ["heldout_fraction", "1.5"]),
        ("constraints: [{metric: accuracy}]\n", ["min", "max"]),
        ("- a\n- b\n", ["mapping"]),
        ("search: [\n", ["not valid YAML"]),
    ],
)
def test_bad_specs_name_field_and_value(
    tmp_path: Path, text: str, must_contain: list[str]
) -> None:
    msg = _err(tmp_path, text)
    for s in must_contain:
        assert s in msg, msg


def test_missing_file() -> None:
    with pytest.raises(SpecError, match="does not exist"):
        Spec.from_file("no/such/spec.yaml")


def test_overrides_are_revalidated() -> None:
    spec = Spec()
    assert spec.with_overrides(**{"search.trials": 5}).search.trials == 5
    with pytest.raises(SpecError, match="cluster.workers"):
        spec.with_overrides(**{"cluster.workers": 0})


def test_parse_metric() -> None:
    assert parse_metric("accuracy") == ("accuracy", None)
    assert parse_metric("latency_p90_ms@cpu") == ("latency_p90_ms", "cpu")
    with pytest.raises(ValueError):
        parse_metric("accuracy@cpu")


def test_json_schema_documents_every_field() -> None:
    schema = Spec.model_json_schema()
    assert "search" in schema["properties"]
    for name, model in schema["$defs"].items():
        for field, prop in model.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"


def test_digits_refuses_task_data(tmp_path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("text,label\na,0\n")
    with pytest.raises(SpecError, match="digits task brings its own data"):
        Spec.from_dict({"task": {"name": "digits", "data": str(data)}})
