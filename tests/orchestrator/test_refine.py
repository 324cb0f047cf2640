"""A longer recovery for front members, recorded apart from the search (orchestrator/refine.py)."""

from __future__ import annotations

import json

import pytest

from paretoforge.exceptions import SpecError
from paretoforge.names import TrialAttr
from paretoforge.orchestrator.refine import refine_front
from paretoforge.orchestrator.results import load_run
from paretoforge.pipeline.artifacts import verify_artifact


def test_refine_rebuilds_a_pruned_member_with_more_epochs(tiny_run) -> None:
    run_dir, _ = tiny_run
    run = load_run(run_dir)
    before = (run_dir / "front.json").read_text()
    base = run.base_trial()
    base_key = base.user_attrs[TrialAttr.KEY]
    pruned = [t for t in run.trials() if t.user_attrs[TrialAttr.KEY] != base_key]
    target = pruned[0]
    rows = refine_front(run_dir, epochs=3, trials=[target.number, base.number],
                        log=lambda *_: None)
    # The unpruned base has nothing to recover: skipped, the pruned one rebuilt.
    assert [r["trial"] for r in rows] == [target.number]
    row = rows[0]
    assert row["config"] == target.user_attrs[TrialAttr.CONFIG]
    assert row["search"] == target.user_attrs[TrialAttr.METRICS]
    assert 0.0 <= row["refined"]["accuracy"] <= 1.0
    assert row["refined"]["latency_p50_ms@cpu-1t"] > 0
    manifest = verify_artifact(row["artifact_dir"], key=target.user_attrs[TrialAttr.KEY])
    assert manifest is not None  # a complete checkpoint with valid checksums
    assert str(run_dir / "refined" / "epochs3-lr") in row["artifact_dir"]
    summary = json.loads((run_dir / "refined" / "epochs3-lr0.001" / "refined.json").read_text())
    assert summary["recovery"]["epochs"] == 3
    assert summary["search_recovery"]["epochs"] == 1
    # The search's own record is untouched.
    assert (run_dir / "front.json").read_text() == before
    assert load_run(run_dir).trial(target.number).user_attrs[TrialAttr.METRICS] == row["search"]


def test_refine_refuses_bad_requests(tiny_run) -> None:
    run_dir, _ = tiny_run
    with pytest.raises(SpecError, match="trial 999 is not a completed trial"):
        refine_front(run_dir, epochs=3, trials=[999], log=lambda *_: None)
    with pytest.raises(SpecError, match="no larger a budget"):
        refine_front(run_dir, epochs=1, log=lambda *_: None)


def test_refine_cli(tiny_run) -> None:
    from typer.testing import CliRunner

    from paretoforge.cli import app

    run_dir, _ = tiny_run
    res = CliRunner().invoke(app, ["refine", str(run_dir), "--epochs", "1"])
    assert res.exit_code == 2, res.output
    assert "no larger a budget" in res.output
    res = CliRunner().invoke(app, ["refine", str(run_dir / "nope"), "--epochs", "4"])
    assert res.exit_code == 2, res.output
    run = load_run(run_dir)
    base_key = run.base_trial().user_attrs[TrialAttr.KEY]
    pruned = next(t for t in run.trials() if t.user_attrs[TrialAttr.KEY] != base_key)
    res = CliRunner().invoke(app, ["refine", str(run_dir), "--epochs", "2", "--trial",
                                   str(pruned.number)])
    assert res.exit_code == 0, res.output
    assert "Refined members (epochs2-lr0.001)" in res.output
    assert (run_dir / "refined" / "epochs2-lr0.001" / "refined.json").is_file()
