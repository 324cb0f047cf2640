"""The Task contract suite over every registered task, and a toy task added in one file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import toy_task  # noqa: F401  (registers "digit-parity" through the public API)

from paretoforge.tasks import TASKS
from paretoforge.testing.contracts import check_task, check_task_data


@pytest.mark.parametrize("name", TASKS.names())
def test_every_registered_task_keeps_the_contract(name: str) -> None:
    check_task(TASKS.get(name))


@pytest.mark.parametrize("name", [n for n in TASKS.names()
                                  if "recipe" in TASKS.get(n).sources])
def test_tasks_that_bring_their_data_load_a_consistent_split(name: str) -> None:
    task = TASKS.get(name)
    check_task_data(task, task.load(seed=0))


def test_a_toy_task_from_tests_runs_a_real_search(ray_cluster, tmp_path: Path) -> None:
    """The toy task of tests/tasks/toy_task.py: spec, base recipe, search, front, export."""
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.results import export_trial, load_run
    from paretoforge.testing import tiny_spec

    spec = tiny_spec({"trials": 3, "sampler": "random"},
                     task={"name": "digit-parity"},
                     objectives=[{"metric": "balanced_accuracy", "direction": "maximize"},
                                 {"metric": "latency_p50_ms@cpu-1t", "direction": "minimize"}])
    assert spec.task.metric == "balanced_accuracy"
    d = spec.model_dump(mode="json")
    d["model"]["overrides"]["num_labels"] = 2
    from paretoforge.spec import Spec

    summary = run_search(Spec.from_dict(d), tmp_path / "run")
    assert summary.completed == 3 and summary.failed == 0
    run = load_run(tmp_path / "run")
    front = run.front()
    assert front and all(0.0 <= m.metrics["balanced_accuracy"] <= 1.0 for m in front)
    out = export_trial(run, front[0].trial, tmp_path / "export")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"]["name"] == "digit-parity"
    assert manifest["outputs"][0]["shape"] == ["batch", 2]


def test_an_objective_of_another_tasks_metric_is_refused() -> None:
    from paretoforge.exceptions import SpecError
    from paretoforge.testing import tiny_spec

    with pytest.raises(SpecError, match="digit-parity"):
        tiny_spec(task={"name": "digit-parity"})  # objectives still name accuracy
