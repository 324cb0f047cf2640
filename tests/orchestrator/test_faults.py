"""Faults with real Ray, real workers and real builds: the search ends exact and intact.

(a) a worker process SIGKILLed mid-trial, (b) a node removed mid-search (its own 3-node
``ray.cluster_utils.Cluster``, in a subprocess), (c) the driver SIGKILLed, then ``paretoforge
resume`` (both as subprocesses). Each run ends with exactly the requested number of completed
trials, no configuration completed twice (answers from the cache aside), and every artifact's
files matching their checksums.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from paretoforge._io import sha256_file
from paretoforge.names import TrialAttr
from paretoforge.orchestrator.results import load_run
from paretoforge.testing.processes import sigkill_session, wait_for_trials

HERE = Path(__file__).parent


def _assert_intact(run_dir: Path, target: int) -> list:
    run = load_run(run_dir)
    trials = run.study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == target
    assert not [t for t in trials if t.state.name == "RUNNING"]
    built = [t.user_attrs[TrialAttr.KEY] for t in complete
             if TrialAttr.CACHED_FROM not in t.user_attrs]
    assert len(built) == len(set(built)), "a configuration completed twice"
    for t in complete:
        art = run.artifact_dir(t)
        manifest = json.loads((art / "manifest.json").read_text())
        assert manifest["key"] == t.user_attrs[TrialAttr.KEY]
        for name, digest in manifest["files"].items():
            assert sha256_file(art / name) == digest
    assert not list((run_dir / "artifacts").glob(".*")), "no half-written artifact is left"
    return complete


def test_worker_sigkilled_mid_trial(ray_cluster, tiny_spec, tmp_path: Path) -> None:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress

    run_dir = tmp_path / "run"
    killed: dict = {}

    def on_event(kind: str, data: dict) -> None:
        if kind != "trial_started" or killed or data["trial"] < 1:
            return
        # Wait until the worker is inside the build (its temporary artifact directory exists).
        tmp = run_dir / "artifacts" / f".{data['key']}.tmp-{data['pid']}"
        deadline = time.monotonic() + 30
        while not tmp.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        killed.update(trial=data["trial"], pid=data["pid"], mid_trial=tmp.exists())
        os.kill(data["pid"], signal.SIGKILL)

    spec = tiny_spec.with_overrides(**{"search.trials": 4})
    summary = run_search(spec, run_dir, progress=Progress(4, live=False, quiet=True,
                                                          on_event=on_event))
    assert killed["mid_trial"]
    complete = _assert_intact(run_dir, 4)
    assert summary.completed == 4 and summary.failed == 0
    t = next(t for t in complete if t.number == killed["trial"])
    assert t.user_attrs[TrialAttr.ATTEMPTS] == 2
    assert f"pid {killed['pid']}" in t.user_attrs[TrialAttr.ATTEMPT_ERRORS][0]


def test_node_removed_mid_search(tiny_spec, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = tmp_path / "out.json"
    # Long enough a recovery that removing the node (about a second) lands inside the trial:
    # with 1 epoch the build could end before the node was gone, and ran once.
    spec = tiny_spec.with_overrides(**{"search.trials": 4, "recovery.epochs": 20})
    proc = subprocess.run(
        [sys.executable, str(HERE / "node_loss_script.py"), json.dumps(spec.model_dump(
            mode="json")), str(run_dir), str(out)],
        capture_output=True, text=True, timeout=240, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["removed"]["mid_trial"]
    complete = _assert_intact(run_dir, 4)
    assert result["completed"] == 4
    t = next(t for t in complete if t.number == result["removed"]["trial"])
    assert t.user_attrs[TrialAttr.ATTEMPTS] == 2, "the trial re-ran on the other node"
    assert t.user_attrs[TrialAttr.WORKER] != result["removed"]["worker"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "paretoforge.cli", *args]


def test_driver_sigkilled_then_resumed(tiny_spec, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(
        tiny_spec.with_overrides(**{"search.trials": 5}).model_dump(mode="json")))
    driver = subprocess.Popen(_cli("search", str(spec_path), "--run-dir", str(run_dir),
                                   "--quiet"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True, env=os.environ.copy())
    try:
        wait_for_trials(driver, run_dir, 2)
    finally:
        sigkill_session(driver)  # the driver's own Ray processes (same session) go with it
    before = {t.number: t for t in load_run(run_dir).study.get_trials(deepcopy=False)}
    left_running = [n for n, t in before.items() if t.state.name == "RUNNING"]
    done_before = {n for n, t in before.items() if t.state.name == "COMPLETE"}

    resumed = subprocess.run(_cli("resume", str(run_dir), "--quiet"), capture_output=True,
                             text=True, timeout=240, env=os.environ.copy(),
                             start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    complete = _assert_intact(run_dir, 5)
    after = {t.number: t for t in complete}
    assert done_before <= set(after), "no finished trial is lost"
    for n in done_before:
        assert after[n].values == before[n].values
    for n in left_running:  # taken up again under its own number, not failed
        assert n in after or load_run(run_dir).trial(n).user_attrs.get(TrialAttr.FAIL_KIND) == \
            "interrupted"


@pytest.fixture(autouse=True)
def _no_ray_address(monkeypatch) -> None:
    """Subprocess drivers start their own Ray; never the session's through RAY_ADDRESS."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _raylet_of(session: int) -> int | None:
    """The pid of the raylet a driver started with ``start_new_session=True`` runs."""
    import psutil

    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            if os.getsid(p.pid) == session and (
                    p.info["name"] == "raylet"
                    or any(a.endswith("/raylet") for a in (p.info["cmdline"] or [])[:1])):
                return p.pid
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return None


@pytest.mark.slow
def test_local_raylet_sigkilled_then_the_search_restarts_it(tiny_spec, tmp_path: Path) -> None:
    """The embedded cluster loses its only node (raylet SIGKILLed) mid-search: the search
    restarts a local cluster and resumes by itself; exit 0, nothing lost or built twice."""
    run_dir = tmp_path / "run"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(
        tiny_spec.with_overrides(**{"search.trials": 5}).model_dump(mode="json")))
    driver = subprocess.Popen(_cli("search", str(spec_path), "--run-dir", str(run_dir)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True, env=os.environ.copy())
    try:
        wait_for_trials(driver, run_dir, 2)
        raylet = _raylet_of(driver.pid)
        assert raylet is not None, "the driver's local cluster has a raylet"
        before = {t.number: t.values for t in load_run(run_dir).trials()}
        os.kill(raylet, signal.SIGKILL)
        out, err = driver.communicate(timeout=400)
    finally:
        sigkill_session(driver)
    assert driver.returncode == 0, (out or "")[-2000:] + (err or "")[-3000:]
    assert "restart" in (out + err).lower(), "the driver says it restarted the local cluster"
    complete = _assert_intact(run_dir, 5)
    after = {t.number: t.values for t in complete}
    for n, values in before.items():  # nothing done is lost or changed
        assert after[n] == values
