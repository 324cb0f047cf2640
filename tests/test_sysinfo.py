"""paretoforge._sysinfo: what a machine is (features, cores) and how fast (a real calibration)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from paretoforge import _sysinfo
from paretoforge._sysinfo import (
    ISA_FEATURES,
    calibrate,
    calibration,
    isa_features,
    machine_differences,
    machine_identity,
)


def test_identity_names_features_cores_and_fingerprint() -> None:
    ident = machine_identity(calibrated=False)
    assert set(ident["isa"]) <= set(ISA_FEATURES) and ident["isa"] == sorted(ident["isa"])
    assert ident["isa"] == isa_features()
    assert ident["logical_cores"] == os.cpu_count()
    assert 1 <= (ident["physical_cores"] or 1) <= ident["logical_cores"]
    assert len(ident["fingerprint"]) == 12
    assert "calibration" not in ident


def test_calibration_measures_both_gemms() -> None:
    cal = calibrate()
    assert cal["format"] == _sysinfo.CALIBRATION_FORMAT
    assert cal["fp32_gflops"] > 0 and cal["int8_gops"] > 0
    assert cal["int8_speedup"] == pytest.approx(cal["int8_gops"] / cal["fp32_gflops"], rel=0.01)
    assert 0 < cal["seconds"] < 5  # "a few hundred milliseconds", not a benchmark


def test_calibration_is_cached_per_kind_of_cpu(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PARETOFORGE_CACHE", str(tmp_path))
    monkeypatch.setattr(_sysinfo, "_calibrated", {})
    first = calibration()
    path = tmp_path / "calibration" / f"{machine_identity(calibrated=False)['fingerprint']}.json"
    assert json.loads(path.read_text()) == first
    # a new process on the node reads the file instead of measuring again
    monkeypatch.setattr(_sysinfo, "_calibrated", {})
    stored = {**first, "fp32_gflops": 12345.0}
    path.write_text(json.dumps(stored))
    assert calibration()["fp32_gflops"] == 12345.0
    assert machine_identity()["calibration"]["fp32_gflops"] == 12345.0
    # another ONNX Runtime version's calibration is measured again; so is one asked to be
    monkeypatch.setattr(_sysinfo, "_calibrated", {})
    path.write_text(json.dumps({**stored, "onnxruntime": "0.0.1"}))
    assert calibration()["fp32_gflops"] != 12345.0
    path.write_text(json.dumps(stored))
    assert calibration(refresh=True)["fp32_gflops"] != 12345.0


MACHINE = {"arch": "x86_64", "isa": ["avx2", "avx512_vnni", "fma"],
           "calibration": {"fp32_gflops": 80.0, "int8_gops": 280.0, "int8_speedup": 3.5}}


def test_machine_differences_follow_features_and_tolerance() -> None:
    assert machine_differences(MACHINE, MACHINE) == []
    slower = {**MACHINE, "calibration": {"fp32_gflops": 60.0, "int8_gops": 210.0,
                                         "int8_speedup": 3.5}}
    assert machine_differences(MACHINE, slower) == []  # 1.33x: within the default 1.5x
    assert machine_differences(MACHINE, slower, tolerance=0.2) == [
        "fp32_gflops 60 vs 80 (1.33x)", "int8_gops 210 vs 280 (1.33x)"]
    avx2_only = {"arch": "x86_64", "isa": ["avx2", "fma"],
                 "calibration": {"fp32_gflops": 70.0, "int8_gops": 50.0, "int8_speedup": 0.71}}
    diffs = machine_differences(MACHINE, avx2_only)
    assert diffs[0] == "lacks avx512_vnni"
    assert any(d.startswith("int8_speedup") for d in diffs)
    assert machine_differences(MACHINE, {"arch": "aarch64", "isa": ["avx2", "avx512_vnni",
                                                                   "fma"]}) == [
        "architecture aarch64 vs x86_64"]
    # nothing recorded on one side: not compared
    assert machine_differences({"fingerprint": "x"}, avx2_only) == []
