"""A tiny end-to-end search, run once per session on the shared Ray cluster."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from paretoforge.spec import Spec

TINY_SPEC = {
    "name": "tiny",
    "model": {"recipe": "vit-digits",
              "overrides": {"hidden_size": 32, "num_layers": 2, "num_heads": 2,
                            "intermediate_size": 64, "epochs": 3}},
    "task": {"name": "digits"},
    "space": {"preset": "vit-prune",
              "dimensions": {"layers_kept": [1, 2], "heads_kept": [1, 2],
                             "ffn_kept": [0.5, 1.0], "precision": ["fp32", "int8"]}},
    "recovery": {"epochs": 1},
    "objectives": [{"metric": "accuracy", "direction": "maximize"},
                   {"metric": "latency_p50_ms@cpu-1t", "direction": "minimize"}],
    "profiles": ["cpu-1t"],
    "search": {"trials": 6, "population_size": 4, "seed": 0},
    "cluster": {"workers": 2},
}


@pytest.fixture(scope="session")
def make_spec():
    """``make_spec(search={...}, constraints=[...], ...)``: the tiny spec with changes."""

    def make(search: dict[str, Any] | None = None, **top: Any) -> Spec:
        d = copy.deepcopy(TINY_SPEC)
        d["search"].update(search or {})
        d.update(top)
        return Spec.from_dict(d)

    return make


@pytest.fixture(scope="session")
def tiny_spec_dict() -> dict[str, Any]:
    return copy.deepcopy(TINY_SPEC)


@pytest.fixture(scope="session")
def tiny_spec() -> Spec:
    return Spec.from_dict(TINY_SPEC)


@pytest.fixture(scope="session")
def tiny_run(ray_cluster, tiny_spec, tmp_path_factory) -> tuple[Path, object]:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    summary = run_search(tiny_spec, run_dir, progress=Progress(6, live=False, quiet=True))
    return run_dir, summary
