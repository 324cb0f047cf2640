"""A custom dimension registered from a user's module file is searched end to end: the spec
names the file, real Ray workers build with it (shipped by value: the file is gone by then),
and its values reach the built candidates."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from paretoforge.names import TrialAttr
from paretoforge.search_spaces import DIMENSIONS, CandidateConfig
from paretoforge.spec import Spec
from paretoforge.testing import tiny_spec_dict

MODULE = """
    from paretoforge.search_spaces import Dimension, register_dimension

    def stamp(model, value):
        model.config.e2e_stamp = value  # lands in the artifact's config.json
        return model

    register_dimension(Dimension(name="e2e_stamp", choices=("none", "x", "y"),
                                 stage="derive", apply=stamp))
"""


@pytest.fixture
def restored():
    items, modules = dict(DIMENSIONS._items), set(sys.modules)
    yield
    DIMENSIONS._items.clear()
    DIMENSIONS._items.update(items)
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def test_a_custom_dimension_is_searched_end_to_end(ray_cluster, tmp_path: Path,
                                                   restored) -> None:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.orchestrator.results import load_run

    (tmp_path / "e2e_user_dims.py").write_text(textwrap.dedent(MODULE))
    seed = {"layers_kept": 1, "heads_kept_0": 1, "heads_kept_1": 1, "ffn_kept": 0.5,
            "precision": "fp32", "e2e_stamp": "y"}
    d = tiny_spec_dict({"trials": 4, "sampler": "random", "seed_configs": [seed]},
                       name="dims")
    d["space"]["modules"] = ["e2e_user_dims.py"]
    d["space"]["per_layer"] = ["heads_kept"]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(d))
    spec = Spec.from_file(tmp_path / "spec.yaml")
    # the workers cannot import the module: it travels by value with the prepared bundle
    (tmp_path / "e2e_user_dims.py").unlink()
    run_dir = tmp_path / "run"
    summary = run_search(spec, run_dir, progress=Progress(4, live=False, quiet=True))
    assert summary.completed == 4 and summary.failed == 0

    run = load_run(run_dir)
    t0 = run.trial(0)
    assert t0.params["e2e_stamp"] == "none" and t0.params["heads_kept_1"] == 2
    # the base keeps the key it had before the dimension existed
    assert t0.user_attrs[TrialAttr.KEY] == CandidateConfig(
        layers_kept=2, heads_kept=2, ffn_kept=1.0, precision="fp32").key
    stamps = {}
    for trial in run.trials():
        manifest = json.loads((run.artifact_dir(trial) / "manifest.json").read_text())
        config = json.loads((run.artifact_dir(trial) / "config.json").read_text())
        value = manifest["config"].get("custom", {}).get("e2e_stamp", "none")
        assert value == trial.params["e2e_stamp"]
        assert config.get("e2e_stamp", "none") == value  # applied on the worker
        stamps[trial.number] = value
    assert stamps[1] == "y"  # the seed config, built with its value
    saved = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert saved["space"]["dimensions"]["e2e_stamp"] == ["none", "x", "y"]
