"""Machines told apart in a search: a profile's required CPU features are checked against the
nodes at start, and a predictor is not transferred between differing machines unless asked.

Real Ray (the session's local cluster), real calibrations; the prediction sources are the
real candidates of ``benchmarks/results/predictor_quickstart.json`` written as a run
directory, their measurements labelled with the machine they were taken on: this one as it
is, or this one as a slower, AVX2-only machine would report it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from paretoforge._sysinfo import ISA_FEATURES, isa_features
from paretoforge.exceptions import PlacementError, SpecError
from paretoforge.orchestrator.prediction import (
    SearchPredictors,
    cluster_machines,
    predictor_lines,
    source_machines,
)
from paretoforge.spec import Spec

BENCH = Path(__file__).resolve().parents[2] / "benchmarks/results/predictor_quickstart.json"
HERE = {"name": "hwtest-this-cpu", "device": "cpu", "intra_op_threads": 1, "resource": None,
        "description": "this cluster's CPU, predicted rather than measured"}


@pytest.fixture(scope="module")
def machines(ray_cluster) -> tuple[dict[str, Any], dict[str, Any]]:
    return cluster_machines()


def _source(root: Path, machine: dict[str, Any] | None) -> Path:
    """A run directory of 12 real cpu-1t measurements taken on ``machine``."""
    rows = json.loads(BENCH.read_text())["rows"][:12]
    for i, r in enumerate(rows):
        d = root / "artifacts" / f"{i:016x}"
        d.mkdir(parents=True)
        env = {"machine": machine} if machine is not None else {}
        (d / "manifest.json").write_text(json.dumps({
            "format": "paretoforge-artifact/1", "metrics": {}, "files": {},
            "key": f"{i:016x}", "config": r["config"], "plan": r["plan"], "graph": r["graph"],
            "placement": r["placement"],
            "measurements": {"cpu-1t": {"p50_ms": r["p50_ms"], "env": env}}}))
    return root


def _other_machine(here: dict[str, Any]) -> dict[str, Any]:
    """This machine as an AVX2-only one of the same name reports itself: no AVX-512 or VNNI,
    int8 no faster than fp32 (issue 12's slower "AMD EPYC")."""
    cal = here["calibration"]
    return {**here, "fingerprint": "0ther0ther00",
            "isa": [f for f in here["isa"] if not f.startswith(("avx512", "amx", "avx_vnni"))],
            "calibration": {**cal, "fp32_gflops": cal["fp32_gflops"] / 5,
                            "int8_gops": cal["fp32_gflops"] / 5 * 0.9, "int8_speedup": 0.9}}


def _spec(source: Path, **entry: Any) -> Spec:
    return Spec.from_dict({
        "name": "transfer", "space": {"preset": "vit-prune"}, "hardware": [HERE],
        "profiles": ["cpu-1t", HERE["name"]],
        "objectives": [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": f"latency_p50_ms@{HERE['name']}", "direction": "minimize"}],
        "prediction": {"profiles": {HERE["name"]: {"source": str(source),
                                                   "source_profile": "cpu-1t", **entry}}}})


def test_a_source_from_this_machine_is_transferred_and_says_so(machines, tmp_path) -> None:
    here = next(iter(machines[0].values()))
    source = _source(tmp_path / "src", here)
    assert [m["fingerprint"] for m in source_machines(source, "cpu-1t")] == [here["fingerprint"]]
    preds = SearchPredictors(_spec(source), tmp_path, machines=machines)
    rec = preds.to_json()["profiles"][HERE["name"]]["transfer"]
    assert rec["refused"] is False and rec["differences"] == {}
    assert rec["source_machines"][0]["calibration"] == here["calibration"]
    assert set(rec["nodes"]) == set(machines[0])
    assert "the same machine as" in rec["verdict"]
    assert "the same machine as" in " ".join(predictor_lines(preds.to_json()["profiles"]))


def test_a_source_from_a_differing_machine_is_refused(machines, tmp_path) -> None:
    here = next(iter(machines[0].values()))
    source = _source(tmp_path / "src", _other_machine(here))
    with pytest.raises(SpecError, match=rf"prediction.profiles.{HERE['name']}: the source .* "
                       r"different machine than node .*int8_speedup.*allow_transfer: true") as e:
        SearchPredictors(_spec(source), tmp_path, machines=machines)
    assert "\n" not in str(e.value)
    if any(f.startswith("avx512") for f in here["isa"]):
        assert "has avx512" in str(e.value)  # the node has what the source machine lacked


def test_allow_transfer_uses_it_and_records_the_differences(machines, tmp_path) -> None:
    here = next(iter(machines[0].values()))
    source = _source(tmp_path / "src", _other_machine(here))
    preds = SearchPredictors(_spec(source, allow_transfer=True), tmp_path, machines=machines)
    data = preds.to_json()["profiles"][HERE["name"]]
    rec = data["transfer"]
    assert rec["refused"] is False and rec["allowed"] is True
    assert set(rec["differences"]) == set(machines[0])
    assert rec["source_machines"][0]["fingerprint"] == "0ther0ther00"
    assert "transferred to differing machines" in rec["verdict"]
    assert data["source"] == str(source.resolve())


def test_a_wide_tolerance_accepts_a_calibration_only_difference(machines, tmp_path) -> None:
    here = next(iter(machines[0].values()))
    cal = here["calibration"]
    slower = {**here, "calibration": {**cal, "fp32_gflops": cal["fp32_gflops"] / 1.8,
                                      "int8_gops": cal["int8_gops"] / 1.8}}
    source = _source(tmp_path / "src", slower)
    with pytest.raises(SpecError, match="fp32_gflops"):
        SearchPredictors(_spec(source), tmp_path, machines=machines)
    SearchPredictors(_spec(source, transfer_tolerance=1.0), tmp_path, machines=machines)


def test_a_source_without_a_machine_record_is_not_compared(machines, tmp_path) -> None:
    source = _source(tmp_path / "src", None)
    rec = SearchPredictors(_spec(source), tmp_path, machines=machines).transfers[HERE["name"]]
    assert rec["verdict"] == "source machine not recorded: not compared"
    assert rec["refused"] is False


def test_a_search_is_refused_at_start_for_a_differing_source(ray_cluster, tiny_spec_dict,
                                                           tmp_path) -> None:
    """Through the driver: refused before the base model, a worker or a trial."""
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.orchestrator.results import load_run
    from paretoforge.testing import FakeWorker

    here = next(iter(cluster_machines()[0].values()))
    d = copy.deepcopy(tiny_spec_dict)
    d.update(hardware=[HERE], profiles=["cpu-1t", HERE["name"]],
             prediction={"profiles": {HERE["name"]: {
                 "source": str(_source(tmp_path / "src", _other_machine(here))),
                 "source_profile": "cpu-1t"}}})
    with pytest.raises(SpecError, match="allow_transfer"):
        run_search(Spec.from_dict(d), tmp_path / "run", worker_cls=FakeWorker,
                   progress=Progress(1, live=False, quiet=True))
    assert load_run(tmp_path / "run").study.trials == []
    assert not (tmp_path / "run" / "run.json").exists()  # prepare never ran


def test_a_profile_requiring_a_feature_no_node_has_is_refused_at_start(
        ray_cluster, tiny_spec_dict, tmp_path) -> None:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.testing import FakeWorker

    lacking = next(f for f in ISA_FEATURES if f not in isa_features())
    d = copy.deepcopy(tiny_spec_dict)
    d.update(hardware=[{"name": "hwtest-needs-feature", "device": "cpu", "resource": None,
                        "intra_op_threads": 1, "requires": [lacking]}],
             profiles=["cpu-1t", "hwtest-needs-feature"])
    with pytest.raises(PlacementError, match=rf"profile 'hwtest-needs-feature' requires "
                       rf"{lacking} and 1 of the 1 node\(s\) that may measure it lack {lacking}"
                       r".*run the search on a machine that has them") as e:
        run_search(Spec.from_dict(d), tmp_path / "run", worker_cls=FakeWorker,
                   progress=Progress(1, live=False, quiet=True))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_profile_requiring_features_the_nodes_have_is_served(ray_cluster) -> None:
    from paretoforge.hw_profiles import parse_profile, register_profile
    from paretoforge.orchestrator.driver import _check_placement

    have = isa_features()
    if not have:
        pytest.skip("this machine reports no ISA features")
    _check_placement([register_profile(parse_profile({
        "name": "hwtest-has-feature", "device": "cpu", "resource": None, "requires": have}))])


def test_a_node_lacking_a_required_feature_among_others_is_named(machines) -> None:
    """Two nodes, one of them without AVX-512: the profile is refused with the node and the
    fix (bind it to a resource the capable nodes carry)."""
    from paretoforge.hw_profiles import parse_profile
    from paretoforge.orchestrator.driver import _check_requires

    here = next(iter(machines[0].values()))
    idents = {"a" * 16: here, "b" * 16: _other_machine(here)}
    res = {nid: {"CPU": 1.0} for nid in idents}
    avx512 = [f for f in here["isa"] if f.startswith("avx512")]
    if not avx512:
        pytest.skip("this machine has no AVX-512 to take away")
    p = parse_profile({"name": "hwtest-512", "device": "cpu", "resource": None,
                       "requires": avx512[:1]})
    with pytest.raises(PlacementError, match=r"1 of the 2 node\(s\).*node bbbbbbbbbbbb.*"
                       r"set `resource: hw:hwtest-512`"):
        _check_requires(p, idents, res)
    _check_requires(p, {"a" * 16: here}, {"a" * 16: {"CPU": 1.0}})
    # a node without CPUs holds no worker and measures nothing: not asked
    _check_requires(p, idents, {"a" * 16: {"CPU": 1.0}, "b" * 16: {"CPU": 0.0}})
