"""Run storage by URI (RunStore over file://, the same code as s3://), artifacts sent back by
workers, and the directories the CLI writes (export --force, pull --to)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from paretoforge.cli import app
from paretoforge.exceptions import ParetoforgeError
from paretoforge.manifest import Manifest
from paretoforge.orchestrator.runstore import (
    JOURNAL,
    PAYLOAD,
    RunStore,
    accept_artifact,
    check_out_dir,
)
from paretoforge.pipeline.artifacts import files_match, verify_artifact

KEY = "0123456789abcdef"


def _payload(files: dict[str, bytes], key: str = KEY) -> dict:
    m = Manifest(config={"layers_kept": 1}, key=key, metrics={"accuracy": 0.5},
                 files={n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
    return {"manifest": m.model_dump_json().encode(), "files": dict(files)}


def _store(tmp_path: Path) -> RunStore:
    return RunStore.open((tmp_path / "remote").as_uri(), local=tmp_path / "copy")


def test_a_sent_back_artifact_is_checked_committed_and_uploaded_manifest_last(tmp_path) -> None:
    store = _store(tmp_path)
    assert store.remote
    res = {"artifact_dir": f"artifacts/{KEY}", "metrics": {},
           PAYLOAD: _payload({"model.onnx": b"onnx", "sub/tok.json": b"{}"})}
    out = accept_artifact(store, res)
    assert PAYLOAD not in out  # bytes never reach the study
    assert verify_artifact(tmp_path / "copy" / "artifacts" / KEY, key=KEY) is not None
    remote = tmp_path / "remote" / "artifacts" / KEY
    assert verify_artifact(remote, key=KEY) is not None
    # a fresh working copy fetches it back, verified
    other = RunStore.open((tmp_path / "remote").as_uri(), local=tmp_path / "copy2")
    assert other.remote_keys() == {KEY}
    got = other.fetch_artifact(KEY)
    assert got is not None and (got / "sub" / "tok.json").read_bytes() == b"{}"


def test_a_corrupt_or_unsafe_payload_is_refused(tmp_path) -> None:
    store = _store(tmp_path)
    bad = _payload({"model.onnx": b"onnx"})
    bad["files"]["model.onnx"] = b"flipped"
    with pytest.raises(ParetoforgeError, match="sha256"):
        store.commit_payload(KEY, bad)
    with pytest.raises(ParetoforgeError, match="leave the artifact"):
        store.commit_payload(KEY, _payload({"../escape": b"x"}))
    with pytest.raises(ParetoforgeError, match="manifest of"):
        store.commit_payload(KEY, _payload({"model.onnx": b"x"}, key="fedcba9876543210"))
    assert not (tmp_path / "copy" / "artifacts" / KEY).exists()
    assert not (tmp_path / "escape").exists()


def test_a_half_uploaded_artifact_never_passes(tmp_path) -> None:
    store = _store(tmp_path)
    store.commit_payload(KEY, _payload({"model.onnx": b"onnx", "config.json": b"{}"}))
    store.push_artifact(KEY)
    remote = tmp_path / "remote" / "artifacts" / KEY
    (remote / "config.json").unlink()  # as if the upload died before this file
    other = RunStore.open((tmp_path / "remote").as_uri(), local=tmp_path / "c2")
    assert other.fetch_artifact(KEY) is None
    (remote / "config.json").write_bytes(b"{}")
    (remote / "manifest.json").unlink()  # files there, manifest (written last) not yet
    other = RunStore.open((tmp_path / "remote").as_uri(), local=tmp_path / "c3")
    assert other.remote_keys() == set() and other.fetch_artifact(KEY) is None


def test_the_local_journal_wins_only_when_it_extends_the_remote_one(tmp_path) -> None:
    store = _store(tmp_path)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / JOURNAL).write_bytes(b"a\nb\n")
    store.push_journal()
    (tmp_path / "copy" / JOURNAL).write_bytes(b"a\nb\nc\n")  # a killed driver wrote more
    store.pull()
    assert (tmp_path / "copy" / JOURNAL).read_bytes() == b"a\nb\nc\n"
    (tmp_path / "copy" / JOURNAL).write_bytes(b"stale\n")  # another machine's, diverged
    store.pull()
    assert (tmp_path / "copy" / JOURNAL).read_bytes() == b"a\nb\n"


def test_an_unknown_protocol_is_one_clear_error() -> None:
    with pytest.raises(ParetoforgeError, match="run directory"):
        RunStore.open("nosuchproto://bucket/run")


def test_out_dir_rules(tmp_path) -> None:
    ours = lambda d: {"a.txt"} if (d / "a.txt").exists() else None  # noqa: E731
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ParetoforgeError, match="is a file"):
        check_out_dir(f, force=True, ours=ours, what="export")
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("x")
    with pytest.raises(ParetoforgeError, match="not empty"):
        check_out_dir(d, force=False, ours=ours, what="export")
    assert check_out_dir(d, force=True, ours=ours, what="export") == d.resolve()
    (d / "mine.txt").write_text("user")
    with pytest.raises(ParetoforgeError, match="mine.txt"):
        check_out_dir(d, force=True, ours=ours, what="export")
    user = tmp_path / "u"
    user.mkdir()
    (user / "notes.md").write_text("keep")
    with pytest.raises(ParetoforgeError, match="not an earlier export"):
        check_out_dir(user, force=True, ours=ours, what="export")


def _one_line_exit_2(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_export_force_replaces_only_an_earlier_export(tiny_run, tmp_path) -> None:
    run_dir, summary = tiny_run
    trial = str(summary.front[0].trial)
    runner = CliRunner()
    out = tmp_path / "exp"
    base = ["export", str(run_dir), "--trial", trial, "--out", str(out)]
    assert runner.invoke(app, base).exit_code == 0
    first = json.loads((out / "manifest.json").read_text())
    # a previous export is replaced
    res = runner.invoke(app, [*base, "--force"])
    assert res.exit_code == 0, res.output
    assert files_match(out, json.loads((out / "manifest.json").read_text())["files"])
    assert json.loads((out / "manifest.json").read_text())["files"] == first["files"]
    # a file it did not write: refused, and the file survives
    (out / "my-notes.txt").write_text("mine")
    err = _one_line_exit_2(runner.invoke(app, [*base, "--force"]))
    assert "my-notes.txt" in err
    assert (out / "my-notes.txt").read_text() == "mine"
    assert (out / "model.onnx").exists()
    # a user's own directory is never erased
    own = tmp_path / "own"
    own.mkdir()
    (own / "data.csv").write_text("1,2\n")
    _one_line_exit_2(runner.invoke(app, ["export", str(run_dir), "--trial", trial, "--out",
                                         str(own), "--force"]))
    assert (own / "data.csv").read_text() == "1,2\n"
    # --out naming a file: one line, exit 2
    f = tmp_path / "a-file"
    f.write_text("x")
    err = _one_line_exit_2(runner.invoke(app, ["export", str(run_dir), "--trial", trial,
                                               "--out", str(f)]))
    assert "is a file" in err and f.read_text() == "x"


def test_pull_brings_a_run_that_front_and_report_read(tiny_run, tmp_path) -> None:
    run_dir, summary = tiny_run
    runner = CliRunner()
    to = tmp_path / "pulled"
    res = runner.invoke(app, ["pull", str(run_dir), "--to", str(to)])
    assert res.exit_code == 0, res.output
    from paretoforge.orchestrator.results import load_run

    here = load_run(to)
    assert [m.trial for m in here.front()] == [m.trial for m in summary.front]
    for m in here.front():
        assert here.checkpoint(m.trial).verify()
    assert runner.invoke(app, ["report", str(to)]).exit_code == 0
    # pulled again over the earlier pull (and its report): replaced
    assert runner.invoke(app, ["pull", str(run_dir), "--to", str(to), "--trials", "all"]
                         ).exit_code == 0
    (to / "mine.txt").write_text("keep")
    _one_line_exit_2(runner.invoke(app, ["pull", str(run_dir), "--to", str(to)]))
    assert (to / "mine.txt").exists()
