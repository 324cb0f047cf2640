"""A tiny end-to-end search, run once per session on the shared Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from paretoforge import testing
from paretoforge.spec import Spec


@pytest.fixture(scope="session")
def make_spec():
    """``make_spec(search={...}, constraints=[...], ...)``: the tiny spec with changes."""
    return testing.tiny_spec


@pytest.fixture(scope="session")
def tiny_spec_dict() -> dict[str, Any]:
    return testing.tiny_spec_dict()


@pytest.fixture(scope="session")
def tiny_spec() -> Spec:
    return testing.tiny_spec()


@pytest.fixture(scope="session")
def tiny_run(ray_cluster, tiny_spec, tmp_path_factory) -> tuple[Path, object]:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    summary = run_search(tiny_spec, run_dir, progress=Progress(6, live=False, quiet=True))
    return run_dir, summary
