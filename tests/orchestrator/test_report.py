"""Results API and report: trials_table, checkpoints, report.html + pareto.png, a screenshot."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from paretoforge.cli import app
from paretoforge.orchestrator.report import write_report
from paretoforge.orchestrator.results import load_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_trials_table_has_every_trial(tiny_run) -> None:
    run_dir, _ = tiny_run
    run = load_run(run_dir)
    rows = run.trials_table()
    assert [r["trial"] for r in rows] == sorted(t.number for t in run.study.trials)
    front = {m.trial for m in run.front()}
    for r in rows:
        assert r["state"] in ("COMPLETE", "FAIL")
        assert {"layers_kept", "heads_kept", "ffn_kept", "precision", "accuracy",
                "latency_p50_ms@cpu-1t", "attempts", "fail_reason"} <= set(r)
        assert r["on_front"] == (r["trial"] in front)
        if r["state"] == "COMPLETE":
            assert r["accuracy"] is not None and r["feasible"] is True


def test_checkpoint_by_number_and_member(tiny_run) -> None:
    import numpy as np

    run_dir, _ = tiny_run
    run = load_run(run_dir)
    member = run.front()[0]
    ck = run.checkpoint(member)
    assert ck.dir == run.checkpoint(member.trial).dir
    assert ck.verify()
    sess = ck.load_onnx()
    x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    assert sess.run(None, {"pixel_values": x})[0].shape == (2, 10)


def test_hypervolume_history_never_falls(tiny_run) -> None:
    run_dir, _ = tiny_run
    history, ref = load_run(run_dir).hypervolume_history()
    assert set(ref) == {"accuracy", "latency_p50_ms@cpu-1t"}
    values = [h for _, h in history]
    assert values == sorted(values) and values[-1] >= 0


def _report(run_dir: Path, out: Path) -> tuple[Path, Path]:
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "report.html", out / "pareto.png"


def test_report_is_self_contained(tiny_run, tmp_path: Path) -> None:
    run_dir, _ = tiny_run
    html_path, png_path = _report(run_dir, tmp_path)
    png = png_path.read_bytes()
    assert png.startswith(PNG_MAGIC)
    html = html_path.read_text()
    inline = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(inline) == 1 and base64.b64decode(inline[0]) == png
    assert not re.search(r'(src|href)="(?!data:)', html), "nothing is loaded from elsewhere"
    run = load_run(run_dir)
    assert "Pareto front" in html and "All trials" in html and "reference: worst observed" in html
    for m in run.front():
        assert f"<td>{m.trial}</td>" in html
    # quality twice, labelled: the search's validation number and the test number to quote
    assert "<th>accuracy (validation)</th><th>accuracy (test)</th>" in html
    assert "Quote the test number" in html
    for m in run.front():
        assert m.test_metrics, "every front member is scored on test after the search"
        assert f"<td>{m.test_metrics['accuracy']:.4g}</td>" in html


def test_front_table_shows_validation_and_test(tiny_run) -> None:
    run_dir, _ = tiny_run
    result = CliRunner().invoke(app, ["front", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "accuracy (validation)" in result.output and "accuracy (test)" in result.output
    assert "quote the test number" in result.output
    for m in load_run(run_dir).front():
        assert f"{m.test_metrics['accuracy']:.4g}" in result.output


def test_report_of_a_run_with_failures(ray_cluster, make_spec, tmp_path: Path) -> None:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.testing import FakeWorker

    spec = make_spec({"trials": 4, "sampler": "random", "seed_configs": [
        {"layers_kept": 1, "heads_kept": 1, "ffn_kept": 0.5, "precision": "int8"}]})
    run_search(spec, tmp_path / "r", progress=Progress(4, quiet=True), worker_cls=FakeWorker,
               worker_kwargs={"write_artifacts": True, "fail_when": [{"heads_kept": 1,
                                                                      "layers_kept": 1}]})
    html_path, png_path = write_report(tmp_path / "r")
    assert html_path.parent == tmp_path / "r" and png_path.read_bytes().startswith(PNG_MAGIC)
    html = html_path.read_text()
    assert "fake shape error" in html and "Failed trials (0)" not in html


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_renders_in_headless_chromium(tiny_run, tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (CI installs it: apt-get install chromium)")
    from PIL import Image

    run_dir, _ = tiny_run
    html_path, _ = _report(run_dir, tmp_path / "report")
    shot = tmp_path / "screenshot.png"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1200,1600", html_path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1600)
    # a rendered page, not a blank one: text, table rules and the figure's colours
    colours = img.resize((300, 400)).getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 50
