"""The ``>>>`` examples of the cheap modules run, and must pass, as part of the suite.

Listed explicitly: a module here must have examples, and each must pass. An example that is
genuinely expensive (training a model, starting a cluster) is marked ``# doctest: +SKIP`` in
its module. Names an example registers (a profile, a task) are removed again afterwards, so
the contract suites and the CLI listings see the registries as the package leaves them.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import sys

import pytest

from paretoforge.registry import Registry

CHEAP_MODULES = [
    "paretoforge",
    "paretoforge.exceptions",
    "paretoforge.registry",
    "paretoforge._io",
    "paretoforge._sysinfo",
    "paretoforge._ray_auth",
    "paretoforge.names",
    "paretoforge.samplers",
    "paretoforge.search_spaces",
    "paretoforge.hw_profiles",
    "paretoforge.hw_profiles._profile",
    "paretoforge.hw_profiles._builtin",
    "paretoforge.hw_profiles.doctor",
    "paretoforge.tasks",
    "paretoforge.tasks._base",
    "paretoforge.tasks._contract",
    "paretoforge.tasks.causal_lm",
    "paretoforge.tasks.digits",
    "paretoforge.tasks.embedding",
    "paretoforge.tasks.image",
    "paretoforge.tasks.text",
    "paretoforge.models",
    "paretoforge.models.adapters",
    "paretoforge.models.distill",
    "paretoforge.models.families._base",
    "paretoforge.models.importance",
    "paretoforge.models.recipes",
    "paretoforge.models.surgery",
    "paretoforge.models.tokenizer",
    "paretoforge.models.vit",
    "paretoforge.kernels",
    "paretoforge.kernels.decoder_export",
    "paretoforge.kernels.export",
    "paretoforge.kernels.ort",
    "paretoforge.kernels.quantize",
    "paretoforge.kernels.runtime",
    "paretoforge.evaluators",
    "paretoforge.evaluators.config_features",
    "paretoforge.evaluators.inputs",
    "paretoforge.evaluators.latency",
    "paretoforge.evaluators.predictor",
    "paretoforge.evaluators.quality",
    "paretoforge.evaluators.size",
    "paretoforge.spec",
    "paretoforge.spec._sections",
    "paretoforge.pipeline.cache",
    "paretoforge.manifest",
    "paretoforge.pipeline.stages",
    "paretoforge.orchestrator.bench",
    "paretoforge.orchestrator.gate",
    "paretoforge.orchestrator.hypervolume",
    "paretoforge.orchestrator.prediction",
    "paretoforge.orchestrator.progress",
    "paretoforge.orchestrator.results",
    "paretoforge.testing.contracts",
]


@contextlib.contextmanager
def registries_restored():
    """Put every loaded registry's entries back as they were (examples register names)."""
    found = {id(v): v for m in list(sys.modules.values())
             if getattr(m, "__name__", "").startswith("paretoforge")
             for v in vars(m).values() if isinstance(v, Registry)}  # fmt: skip
    saved = {key: dict(reg._items) for key, reg in found.items()}  # no public removal: tests only
    try:
        yield
    finally:
        for key, reg in found.items():
            reg._items.clear()
            reg._items.update(saved[key])


@pytest.mark.parametrize("name", CHEAP_MODULES)
def test_module_examples_pass(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # an example that writes relative paths writes here
    module = importlib.import_module(name)  # before the snapshot: its own entries stay
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    assert tests, f"{name} has no >>> examples; add one or drop it from CHEAP_MODULES"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out = io.StringIO()
    with registries_restored():
        for test in tests:
            runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed:\n{out.getvalue()}"
    assert result.attempted > 0
