"""No example of the test split reaches a search decision.

The task below is the digits task with every test input replaced by NaN, a value no real input
has. Whatever array reaches importance, distillation, int8-static calibration, the latency
samples or the score stage is recorded on its way in (the real functions run on it) and must be
free of NaN; the one place the NaN inputs do go is the test score after the search, where a
model's outputs on them are NaN and the task scores them -1 -- a value no study value, no
constraint and no refined member's validation number may hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from paretoforge.names import StudyAttr, TrialAttr
from paretoforge.tasks import Task, TaskData, classification_accuracy, load_task, register_task

POISONED = -1.0  # the score of outputs on NaN inputs


@register_task
class SentinelDigits(Task):
    """Digits whose test inputs are all NaN."""

    name = "sentinel-digits"
    metrics = {"accuracy": "maximize"}
    sources = ("recipe",)
    modality = "vision"

    def load(self, heldout_fraction: float = 0.25, test_fraction: float = 0.5,
             seed: int = 0) -> TaskData:
        d = load_task("digits", heldout_fraction=heldout_fraction, test_fraction=test_fraction,
                      seed=seed)
        return TaskData(name=self.name, x_train=d.x_train, y_train=d.y_train,
                        x_validation=d.x_validation, y_validation=d.y_validation,
                        x_test=np.full_like(d.x_test, np.nan), y_test=d.y_test,
                        num_classes=10, input_name=d.input_name, metric="accuracy",
                        preprocessing=d.preprocessing + "; test inputs NaN", split=d.split)

    def score(self, outputs: np.ndarray, data: TaskData, state: Any) -> float:
        if not np.isfinite(outputs).all():
            return POISONED
        return classification_accuracy(outputs, data.y_scored)


def _arrays(x: Any) -> list[np.ndarray]:
    if isinstance(x, dict):
        return [np.asarray(v) for v in x.values()]
    return [np.asarray(x)]


def _poisoned(x: Any) -> bool:
    return any(np.isnan(a).any() for a in _arrays(x) if np.issubdtype(a.dtype, np.floating))


def _rows(x: Any) -> set[bytes]:
    a = _arrays(x)[0]
    return {r.tobytes() for r in a.reshape(len(a), -1)}


def _spec(**search: Any) -> Any:
    from paretoforge.testing import tiny_spec

    return tiny_spec({"trials": 3, "sampler": "random", **search},
                     task={"name": "sentinel-digits"})


def test_no_test_example_reaches_importance_distillation_calibration_or_the_score(
        monkeypatch, tmp_path: Path) -> None:
    import paretoforge.evaluators.quality as quality
    import paretoforge.kernels.quantize as quantize
    import paretoforge.models.distill as distill
    import paretoforge.models.importance as importance
    from paretoforge.pipeline import BuildContext, build_candidate, prepare, score_test
    from paretoforge.search_spaces import CandidateConfig

    seen: dict[str, list[Any]] = {"importance": [], "distill": [], "calibration": [],
                                  "scored": [], "latency": []}

    def spy(module: Any, name: str, record: Any) -> None:
        real = getattr(module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            record(*args, **kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    spy(importance, "compute_importance", lambda m, x, *a, **k: seen["importance"].append(x))
    spy(distill, "distill", lambda s, t, x, *a, **k: seen["distill"].append(x))
    spy(quantize, "apply_precision",
        lambda *a, calibration=None, **k: seen["calibration"].append(calibration))
    spy(quality, "onnx_logits", lambda path, x, **k: seen["scored"].append(x))

    spec = _spec()
    prepared = prepare(spec, log=lambda *_: None)
    data = prepared.task
    assert _poisoned(data.feeds("test")) and not _poisoned(data.feeds("validation"))
    # the full bundle, not the workers' copy: the stages themselves must not read test
    ctx = BuildContext(prepared, recovery=spec.recovery, seed=0)

    def measurer(path: Path, profile: str, samples: dict, *, precision: str) -> dict:
        seen["latency"].append(samples)
        return {"p50_ms": 1.0, "p90_ms": 1.0, "mean_ms": 1.0, "placement": {}}

    cfg = CandidateConfig(layers_kept=1, heads_kept=1, ffn_kept=0.5, precision="int8-static")
    manifest = build_candidate(ctx, cfg, run_dir=tmp_path, profiles=["p"], measurer=measurer)

    train, val = _rows(data.feeds("train")), _rows(data.feeds("validation"))
    assert len(seen["importance"]) == 1 and len(seen["distill"]) == 1
    assert [c is not None for c in seen["calibration"]] == [True]  # int8-static, calibrated
    assert len(seen["scored"]) == 1 and len(seen["latency"]) == 1
    for stage in ("importance", "distill", "calibration", "latency"):
        for x in seen[stage]:
            assert not _poisoned(x), f"a test example reached {stage}"
            assert _rows(x) <= train, f"{stage} got an example that is not a training one"
    (scored,) = seen["scored"]
    assert not _poisoned(scored) and _rows(scored) == val  # the score stage: validation only
    assert 0.0 <= manifest.metrics["accuracy"] <= 1.0 and not manifest.test_metrics

    # The test split's one use: after the search, scored on the NaN inputs -- the spy sees them.
    test = score_test(prepared, tmp_path / "artifacts" / cfg.key)
    assert _poisoned(seen["scored"][-1])
    assert len(_arrays(seen["scored"][-1])[0]) == len(data.y_test)
    assert set(test) == {"accuracy"}
    # The workers' bundle has no test split at all.
    workers = prepared.for_workers()
    assert not workers.task.has_test and workers.test_state is None
    with pytest.raises(Exception, match="withheld"):
        workers.feeds("test")


@pytest.fixture(scope="module")
def sentinel_run(ray_cluster, tmp_path_factory) -> Path:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress

    spec = _spec(seed_configs=[{"layers_kept": 1, "heads_kept": 1, "ffn_kept": 0.5,
                                "precision": "fp32"}],
                 prescreen=False)
    d = spec.model_dump(mode="json")
    d["space"]["dimensions"]["precision"] = ["fp32"]  # fp32 outputs on NaN inputs are NaN
    d["constraints"] = [{"metric": "accuracy", "min": 0.0}]
    from paretoforge.spec import Spec

    run_dir = tmp_path_factory.mktemp("runs") / "sentinel"
    summary = run_search(Spec.from_dict(d), run_dir,
                         progress=Progress(3, live=False, quiet=True))
    assert summary.completed == 3 and summary.failed == 0
    return run_dir


def test_no_test_example_reaches_the_studys_values_constraints_or_promotion(
        sentinel_run: Path) -> None:
    from paretoforge.orchestrator.refine import refine_front
    from paretoforge.orchestrator.results import load_run

    run = load_run(sentinel_run)
    for t in run.trials():
        # the study's values and constraints come from validation: never the poisoned score
        assert 0.0 <= t.values[0] <= 1.0, t.number
        assert 0.0 <= t.user_attrs[TrialAttr.METRICS]["accuracy"] <= 1.0
        assert all(c <= 0 for c in t.user_attrs[TrialAttr.CONSTRAINTS])
    # after the search, and only then, every front member and the base met the test split
    front = run.front()
    scored = run.study.user_attrs[StudyAttr.TEST_METRICS]
    wanted = {m.trial for m in front} | {run.base_trial().number}
    assert {int(k) for k in scored} == wanted
    for m in front:
        assert m.test_metrics == {"accuracy": POISONED}
        assert m.quality == {"validation": m.metrics["accuracy"], "test": POISONED}
        manifest = json.loads(Path(m.artifacts["manifest.json"]).read_text())
        assert manifest["test_metrics"] == {"accuracy": POISONED}
        assert manifest["metrics"]["accuracy"] == m.metrics["accuracy"] != POISONED
    saved = json.loads((sentinel_run / "front.json").read_text())
    assert all(s["quality"]["test"] == POISONED for s in saved)

    # promotion: refine rebuilds on validation; the test split is scored once afterwards
    pruned = next(t for t in run.trials() if not t.user_attrs.get(TrialAttr.IS_BASE))
    rows = refine_front(sentinel_run, epochs=2, trials=[pruned.number], log=lambda *_: None)
    (row,) = rows
    assert 0.0 <= row["refined"]["accuracy"] <= 1.0
    assert row["refined_test"] == {"accuracy": POISONED}
    assert row["search_test"] == {"accuracy": POISONED}
    refined = json.loads((Path(row["artifact_dir"]) / "manifest.json").read_text())
    assert refined["test_metrics"] == {"accuracy": POISONED}
    assert refined["metrics"]["accuracy"] == row["refined"]["accuracy"]


def test_test_metrics_are_scored_once(sentinel_run: Path) -> None:
    """A second end of search (a resume with nothing left) does not score test again."""
    from paretoforge.orchestrator.results import load_run, score_test_split
    from paretoforge.pipeline import prepare_cached

    run = load_run(sentinel_run)
    before = run.study.user_attrs[StudyAttr.TEST_METRICS]
    mtimes = {m.trial: Path(m.artifacts["manifest.json"]).stat().st_mtime_ns
              for m in run.front()}
    lines: list[str] = []
    done = score_test_split(run, prepare_cached(run.spec, log=lambda *_: None), log=lines.append)
    assert {str(k): v for k, v in done.items()} == before and not lines
    assert mtimes == {m.trial: Path(m.artifacts["manifest.json"]).stat().st_mtime_ns
                      for m in run.front()}
