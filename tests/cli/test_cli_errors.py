"""The CLI: bad input is one clean error line on stderr and exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from paretoforge.cli import app

runner = CliRunner()


def _check_clean_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1, err
    return err


def test_unknown_key(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("search: {trials: 4, samplr: tpe}\n")
    err = _check_clean_error(
        runner.invoke(app, ["search", str(p), "--run-dir", str(tmp_path / "r")]))
    assert "search.samplr" in err and "sampler" in err
    assert not (tmp_path / "r").exists(), "nothing is written for a bad spec"


def test_bad_cli_override(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("name: ok\n")
    err = _check_clean_error(runner.invoke(app, ["search", str(p), "--trials", "0"]))
    assert "search.trials" in err


def test_front_of_missing_run(tmp_path: Path) -> None:
    err = _check_clean_error(runner.invoke(app, ["front", str(tmp_path / "nope")]))
    assert "not a paretoforge run directory" in err


def test_profiles_lists_builtins() -> None:
    result = runner.invoke(app, ["profiles"])
    assert result.exit_code == 0, result.output
    assert "cpu-1t" in result.output and "cpu" in result.output


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False),
                     st.text(max_size=12))
_keys = st.sampled_from(["name", "model", "task", "space", "search", "cluster", "profiles",
                         "objectives", "constraints", "recovery", "storage", "bogus", "trials",
                         "sampler", "workers", "metric", "direction", "split", "preset"])
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)), max_leaves=8)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(_keys, _values, min_size=1, max_size=4))
def test_malformed_specs_give_one_clean_line(tmp_path: Path, doc: dict) -> None:
    p = tmp_path / "fuzz.yaml"
    p.write_text(yaml.safe_dump(doc))
    run_dir = tmp_path / "fuzz-run"
    result = runner.invoke(app, ["search", str(p), "--run-dir", str(run_dir), "--trials", "0"])
    # --trials 0 is itself invalid, so even a valid document ends in a clean error
    _check_clean_error(result)
    assert not run_dir.exists()


def test_doctor_probes_the_cluster(ray_cluster) -> None:
    import json

    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    text = json.dumps(report)
    assert "CPUExecutionProvider" in text
    assert "cpu-1t" in text and "edge-arm" in text
