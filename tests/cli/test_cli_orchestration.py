"""The orchestration commands' error paths: one clean line, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from paretoforge.cli import app

runner = CliRunner()


def _clean_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_unknown_sampler_option(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("name: ok\n")
    err = _clean_error(runner.invoke(app, ["search", str(p), "--sampler", "cmaes",
                                           "--run-dir", str(tmp_path / "r")]))
    assert "search.sampler" in err and "cmaes" in err
    assert not (tmp_path / "r").exists()


def test_bad_seed_config(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("search: {seed_configs: [{layers_kept: 9}]}\n")
    err = _clean_error(runner.invoke(app, ["search", str(p), "--run-dir", str(tmp_path / "r")]))
    assert "seed_configs[0].layers_kept" in err and "9" in err


def test_bad_storage_url(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("storage: study.db\n")
    err = _clean_error(runner.invoke(app, ["search", str(p)]))
    assert "storage" in err and "sqlite:///" in err


def test_resume_and_report_need_a_run_directory(tmp_path: Path) -> None:
    err = _clean_error(runner.invoke(app, ["resume", str(tmp_path / "nope")]))
    assert "not a run directory" in err
    err = _clean_error(runner.invoke(app, ["report", str(tmp_path / "nope")]))
    assert "not a paretoforge run directory" in err


def test_help_lists_the_orchestration_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("search", "resume", "report", "front", "export"):
        assert cmd in result.output
    assert "--sampler" in runner.invoke(app, ["search", "--help"]).output


def test_pooled_weight_outside_embedding_fidelity_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("task: {name: digits}\nrecovery: {pooled_weight: 0.5}\n")
    res = runner.invoke(app, ["search", str(spec), "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "recovery.pooled_weight" in res.output and "embedding-fidelity" in res.output
    assert not (tmp_path / "r").exists()


def test_a_search_stopped_by_failures_exits_1(ray_cluster, tmp_path: Path) -> None:
    """Every trial outlives its timeout: the search stops at max_failures, and says so."""
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "model: {recipe: vit-digits, overrides: {hidden_size: 32, num_layers: 2, num_heads: 2,"
        " intermediate_size: 64, epochs: 2}}\n"
        "task: {name: digits}\n"
        "space: {preset: vit-prune, dimensions: {layers_kept: [1, 2], heads_kept: [1, 2],"
        " ffn_kept: [0.5, 1.0], precision: [fp32]}}\n"
        "recovery: {epochs: 1}\n"
        "profiles: [cpu-1t]\n"
        "search: {trials: 4, max_failures: 2, trial_timeout_s: 0.05, max_retries: 0}\n"
        "cluster: {workers: 2}\n")
    res = runner.invoke(app, ["search", str(spec), "--run-dir", str(tmp_path / "r"),
                              "--quiet"])
    assert res.exit_code == 1, res.output
    assert "stopped after 2 failed trials" in res.output
    assert "timeout" in res.output.lower()
