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
