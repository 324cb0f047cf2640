"""The driver loop on real Ray and Optuna, around a stand-in worker (no model builds).

Retries, timeouts, build failures, seeds, budgets, storage and resume: each test runs a whole
``run_search`` with :class:`FakeWorker` and checks properties of the study it leaves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from paretoforge.names import StopReason, TrialAttr
from paretoforge.orchestrator.driver import run_search
from paretoforge.orchestrator.progress import Progress
from paretoforge.orchestrator.results import load_run, non_dominated
from paretoforge.search_spaces import CandidateConfig
from paretoforge.spec import Spec
from paretoforge.testing import FakeWorker, verify_fake_artifact

SMALL = {"layers_kept": 1, "heads_kept": 1, "ffn_kept": 0.5, "precision": "int8"}
MID = {"layers_kept": 1, "heads_kept": 2, "ffn_kept": 0.5, "precision": "fp32"}


@pytest.fixture
def spec_of(make_spec):
    """The tiny spec with the random sampler and these search fields."""
    return lambda **search: make_spec({"sampler": "random", **search})


def _run(spec: Spec, run_dir: Path, events: list | None = None, **worker_kwargs: Any):
    progress = Progress(spec.search.trials, live=False, quiet=True,
                        on_event=(lambda k, d: events.append((k, d))) if events is not None
                        else None)
    # a resumed fake search reuses the fake artifacts a stopped driver left: opted in here
    return run_search(spec, run_dir, progress=progress, worker_cls=FakeWorker,
                      worker_kwargs=worker_kwargs, verify=verify_fake_artifact)


def _key(params: dict[str, Any]) -> str:
    return CandidateConfig(**params).key


def _by_state(run_dir: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for t in load_run(run_dir).study.get_trials(deepcopy=False):
        out.setdefault(t.state.name, []).append(t)
    return out


def _assert_exact(run_dir: Path, target: int) -> None:
    """Exactly ``target`` COMPLETE trials, no RUNNING left, no config built twice."""
    states = _by_state(run_dir)
    complete = states.get("COMPLETE", [])
    assert len(complete) == target
    assert not states.get("RUNNING"), "no trial is left running"
    built = [t.user_attrs[TrialAttr.KEY] for t in complete
             if TrialAttr.CACHED_FROM not in t.user_attrs]
    assert len(built) == len(set(built)), "no configuration completed twice"
    for t in complete:
        if TrialAttr.CACHED_FROM in t.user_attrs:
            src = load_run(run_dir).trial(t.user_attrs[TrialAttr.CACHED_FROM])
            assert src.user_attrs[TrialAttr.KEY] == t.user_attrs[TrialAttr.KEY]
            assert src.values == t.values


def test_build_failure_fails_once_with_reason(ray_cluster, tmp_path: Path, spec_of) -> None:
    spec = spec_of(trials=5, seed_configs=[SMALL, SMALL])
    summary = _run(spec, tmp_path / "r", fail_when=[SMALL], log_path=str(tmp_path / "log"))
    _assert_exact(tmp_path / "r", 5)
    failed = _by_state(tmp_path / "r")["FAIL"]
    assert summary.failed == len(failed) >= 2
    first = min(failed, key=lambda t: t.number)
    assert first.params == SMALL and first.user_attrs[TrialAttr.FAIL_KIND] == "build"
    assert "fake shape error" in first.user_attrs[TrialAttr.FAIL_REASON]
    assert first.user_attrs[TrialAttr.ATTEMPTS] == 1
    # the same config again fails from the record, without another build
    built = [line.split()[1] for line in (tmp_path / "log").read_text().splitlines()]
    assert built.count(_key(SMALL)) == 1
    assert all(t.user_attrs.get(TrialAttr.FAILED_LIKE) == first.number
               for t in failed if t.number != first.number)


def test_worker_killed_mid_trial_is_retried(ray_cluster, tmp_path: Path, spec_of) -> None:
    spec = spec_of(trials=4, seed_configs=[MID], max_retries=2)
    events: list = []
    _run(spec, tmp_path / "r", events, crash_when=[MID], crash_times=1)
    _assert_exact(tmp_path / "r", 4)
    t = next(t for t in _by_state(tmp_path / "r")["COMPLETE"] if t.params == MID)
    assert t.user_attrs[TrialAttr.ATTEMPTS] == 2
    (err,) = t.user_attrs[TrialAttr.ATTEMPT_ERRORS]
    assert "attempt 1" in err and "worker lost" in err
    assert any(k == "worker_lost" and d["trial"] == t.number for k, d in events)


def test_worker_lost_on_every_attempt_fails_with_reasons(ray_cluster, tmp_path: Path,
                                                         spec_of) -> None:
    spec = spec_of(trials=3, seed_configs=[MID], max_retries=1)
    summary = _run(spec, tmp_path / "r", crash_when=[MID], crash_times=99)
    _assert_exact(tmp_path / "r", 3)
    (t,) = _by_state(tmp_path / "r")["FAIL"]
    assert t.params == MID and t.user_attrs[TrialAttr.FAIL_KIND] == "worker_lost"
    assert t.user_attrs[TrialAttr.ATTEMPTS] == 2
    assert len(t.user_attrs[TrialAttr.ATTEMPT_ERRORS]) == 2
    assert "max_retries=1" in t.user_attrs[TrialAttr.FAIL_REASON]
    assert summary.failed == 1


def test_trial_timeout_kills_and_replaces_the_worker(ray_cluster, tmp_path: Path,
                                                     spec_of) -> None:
    spec = spec_of(trials=3, seed_configs=[MID], trial_timeout_s=2.0)
    summary = _run(spec, tmp_path / "r", hang_when=[MID])
    _assert_exact(tmp_path / "r", 3)
    (t,) = _by_state(tmp_path / "r")["FAIL"]
    assert t.params == MID and t.user_attrs[TrialAttr.FAIL_KIND] == "timeout"
    assert t.user_attrs[TrialAttr.FAIL_REASON].startswith("timeout")
    assert summary.stats["timed_out"] == 1


def test_seed_configs_follow_the_base(ray_cluster, tmp_path: Path, spec_of) -> None:
    partial = {"layers_kept": 1, "precision": "fp32"}
    spec = spec_of(trials=4, seed_configs=[SMALL, partial])
    _run(spec, tmp_path / "r")
    run = load_run(tmp_path / "r")
    assert run.trial(0).user_attrs.get(TrialAttr.IS_BASE)
    assert run.trial(1).params == SMALL
    assert {k: run.trial(2).params[k] for k in partial} == partial


def test_bad_seed_config_is_a_spec_error(tmp_path: Path, spec_of) -> None:
    from paretoforge.exceptions import SpecError

    with pytest.raises(SpecError, match=r"seed_configs\[0\].layers_kept.*7"):
        run_search(spec_of(seed_configs=[{"layers_kept": 7}]), tmp_path / "r")
    with pytest.raises(SpecError, match="unknown dimension 'depth'"):
        run_search(spec_of(seed_configs=[{"depth": 1}]), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_resume_with_more_trials_is_exact(ray_cluster, tmp_path: Path, spec_of) -> None:
    log = tmp_path / "log"
    _run(spec_of(trials=4), tmp_path / "r", write_artifacts=True, log_path=str(log))
    summary = _run(spec_of(trials=9), tmp_path / "r", write_artifacts=True, log_path=str(log))
    assert summary.completed == 9
    _assert_exact(tmp_path / "r", 9)
    keys = [line.split()[1] for line in log.read_text().splitlines()]
    assert len(keys) == len(set(keys)), "no config evaluated twice across the two sessions"


def test_resume_takes_up_trials_left_running(ray_cluster, tmp_path: Path,
                                             spec_of) -> None:
    """A dead driver's RUNNING trials: reused artifact, cache answer, or a re-run -- once each."""
    import optuna

    from paretoforge.orchestrator.storage import open_study

    run_dir = tmp_path / "r"
    log = tmp_path / "log"
    spec = spec_of(trials=3, seed_configs=[MID, SMALL])  # every config chosen: base + seeds
    _run(spec, run_dir, write_artifacts=True, log_path=str(log))
    done_keys = {t.user_attrs[TrialAttr.KEY] for t in _by_state(run_dir)["COMPLETE"]}
    assert {_key(MID), _key(SMALL)} <= done_keys

    # What a driver killed mid-search leaves: three trials RUNNING.
    study = open_study(run_dir, spec)
    other = {"layers_kept": 2, "heads_kept": 1, "ffn_kept": 0.5, "precision": "int8"}
    fresh = {"layers_kept": 2, "heads_kept": 1, "ffn_kept": 1.0, "precision": "int8"}
    assert _key(other) not in done_keys and _key(fresh) not in done_keys
    left = {}
    for name, params in (("built", other), ("twin", MID), ("fresh", fresh)):
        study.enqueue_trial(params)
        trial = study.ask()
        for k, v in params.items():
            trial.suggest_categorical(k, spec.space.dimensions[k])
            assert trial.params[k] == v
        trial.set_user_attr(TrialAttr.KEY, _key(params))
        left[name] = trial.number
    # the "built" one had finished its artifact before the driver died
    FakeWorker(None, spec.model_dump(mode="json"), str(run_dir), write_artifacts=True).evaluate(
        left["built"], other)
    assert all(t.state == optuna.trial.TrialState.RUNNING
               for t in study.get_trials() if t.number in left.values())

    summary = _run(spec.with_overrides(**{"search.trials": 7}), run_dir, write_artifacts=True,
                   log_path=str(log))
    assert summary.completed == 7
    _assert_exact(run_dir, 7)
    run = load_run(run_dir)
    assert run.trial(left["built"]).user_attrs.get(TrialAttr.REUSED_ARTIFACT) is True
    assert run.trial(left["twin"]).user_attrs.get(TrialAttr.CACHED_FROM) is not None
    assert run.trial(left["fresh"]).state.name == "COMPLETE"
    evaluated = [int(line.split()[0]) for line in log.read_text().splitlines()]
    assert left["built"] not in evaluated and left["twin"] not in evaluated
    assert evaluated.count(left["fresh"]) == 1


def test_resume_with_fewer_trials_fails_the_extra_running(ray_cluster, tmp_path: Path,
                                                          spec_of) -> None:
    from paretoforge.orchestrator.storage import open_study

    spec = spec_of(trials=3)
    _run(spec, tmp_path / "r")
    study = open_study(tmp_path / "r", spec)
    trial = study.ask()
    trial.suggest_categorical("layers_kept", [1, 2])
    summary = _run(spec, tmp_path / "r")
    assert summary.completed == 3 and summary.failed == 0
    t = load_run(tmp_path / "r").trial(trial.number)
    assert t.state.name == "FAIL" and t.user_attrs[TrialAttr.FAIL_KIND] == "interrupted"


def test_max_failures_stops_the_search(ray_cluster, tmp_path: Path, spec_of) -> None:
    every = [{"precision": "fp32"}, {"precision": "int8"}]
    summary = _run(spec_of(trials=6, max_failures=2), tmp_path / "r", fail_when=every)
    assert summary.completed == 0 and summary.failed >= 2
    assert "max_failures" in (summary.stopped or "")
    assert summary.stop_reason is StopReason.MAX_FAILURES
    assert summary.stats["stop_reason"] == "max_failures"
    assert not _by_state(tmp_path / "r").get("RUNNING")


def test_sqlite_storage(ray_cluster, tmp_path: Path, make_spec) -> None:
    db = tmp_path / "db" / "study.db"
    db.parent.mkdir()
    spec = make_spec({"trials": 4, "sampler": "tpe"}, storage=f"sqlite:///{db}")
    summary = _run(spec, tmp_path / "r", write_artifacts=True)
    assert summary.completed == 4
    assert db.is_file() and not (tmp_path / "r" / "study.journal").exists()
    _assert_exact(tmp_path / "r", 4)
    summary = _run(spec.with_overrides(**{"search.trials": 6}), tmp_path / "r")
    _assert_exact(tmp_path / "r", 6)


def test_bad_storage_url_is_a_spec_error(make_spec) -> None:
    from paretoforge.exceptions import SpecError

    with pytest.raises(SpecError, match="not a storage URL"):
        make_spec(storage="study.db")


def test_infeasible_front_is_best_effort_with_misses(ray_cluster, tmp_path: Path,
                                                     make_spec) -> None:
    spec = make_spec({"trials": 6}, constraints=[{"metric": "accuracy", "min": 0.999}])
    _run(spec, tmp_path / "r", write_artifacts=True)
    run = load_run(tmp_path / "r")
    front = run.front()
    assert front and not any(m.feasible for m in front)
    for m in front:
        miss = m.misses["accuracy >= 0.999"]
        assert miss == pytest.approx(0.999 - m.metrics["accuracy"])
        assert m.constraint_violation == pytest.approx(miss)
    dirs = [o.direction for o in run.spec.objectives]
    unique = {t.user_attrs[TrialAttr.KEY]: tuple(t.values) for t in run.trials()}
    pts = list(unique.values())
    assert {tuple(m.objectives.values()) for m in front} == {
        pts[i] for i in non_dominated(pts, dirs)}
    saved = json.loads(json.dumps([m.to_json() for m in front]))
    assert all(s["feasible"] is False and s["misses"] for s in saved)


def test_constraints_reach_the_sampler(ray_cluster, tmp_path: Path, make_spec) -> None:
    spec = make_spec({"trials": 4}, constraints=[{"metric": "latency_p50_ms@cpu-1t", "max": 0.2}])
    _run(spec, tmp_path / "r")
    for t in load_run(tmp_path / "r").trials():
        lat = t.user_attrs[TrialAttr.METRICS]["latency_p50_ms@cpu-1t"]
        assert list(t.constraints.values()) == [pytest.approx(lat - 0.2)]


def test_workers_that_cannot_start_end_the_search_cleanly(ray_cluster, tmp_path: Path,
                                                          spec_of) -> None:
    from paretoforge.exceptions import PlacementError

    with pytest.raises(PlacementError, match="no worker could start"):
        _run(spec_of(trials=2), tmp_path / "r", fail_init=True)
    assert not _by_state(tmp_path / "r").get("RUNNING")


def test_a_time_budget_stops_the_search(ray_cluster, tmp_path: Path, spec_of) -> None:
    summary = _run(spec_of(trials=50, timeout_s=1.0), tmp_path / "r", sleep_s=1.0)
    assert summary.completed < 50
    assert summary.stop_reason is StopReason.TIME_BUDGET
    assert "search.timeout_s" in (summary.stopped or "")
    assert not _by_state(tmp_path / "r").get("RUNNING")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_optuna_plots_label_the_objectives(ray_cluster, tmp_path: Path, spec_of) -> None:
    import matplotlib
    import optuna

    from paretoforge.orchestrator.storage import JOURNAL

    matplotlib.use("Agg")
    spec = spec_of(trials=4)
    _run(spec, tmp_path / "r")
    names = [o.metric for o in spec.objectives]
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "r" / JOURNAL)))
    study = optuna.load_study(study_name=spec.name, storage=journal)  # as optuna-dashboard does
    assert study.metric_names == names == ["accuracy", "latency_p50_ms@cpu-1t"]
    ax = optuna.visualization.matplotlib.plot_pareto_front(study)
    assert [ax.get_xlabel(), ax.get_ylabel()] == names
    matplotlib.pyplot.close("all")
    _run(spec.with_overrides(**{"search.trials": 6}), tmp_path / "r")  # resumed: names kept
    assert optuna.load_study(study_name=spec.name, storage=journal).metric_names == names


def test_a_freed_worker_gets_its_next_trial_before_the_last_is_told(ray_cluster, tmp_path: Path,
                                                                     make_spec) -> None:
    """The driver hands a worker its next trial as soon as its result is in, and does the
    result's bookkeeping (artifact, predictors, the study's writes) while the worker runs:
    with one worker, trial n + 1 starts before trial n is done. The count stays exact."""
    spec = make_spec({"sampler": "random", "trials": 6}, cluster={"workers": 1})
    events: list = []
    summary = _run(spec, tmp_path / "r", events, sleep_s=0.2)
    _assert_exact(tmp_path / "r", 6)
    # and the sampler's next trial is asked while the worker runs, so that it starts at once:
    # every built trial but the first two (asked while the worker was free)
    built = summary.stats["completed"] - summary.stats["cached"]
    assert built >= 3 and summary.stats["asked_ahead"] == built - 2, summary.stats
    order = [(k, d["trial"]) for k, d in events if k in ("trial_started", "trial_done")]
    started = [n for k, n in order if k == "trial_started"]
    for prev, nxt in zip(started, started[1:], strict=False):
        assert order.index(("trial_started", nxt)) < order.index(("trial_done", prev)), order
