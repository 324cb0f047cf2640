"""paretoforge: Pareto-optimal deployable transformers for the hardware they run on.

Example:
    >>> import paretoforge
    >>> run = paretoforge.load_run("runs/quickstart")  # doctest: +SKIP
    >>> [m.trial for m in run.front()]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Spec", "__version__", "load_run"]


def __getattr__(name: str) -> Any:  # lazy: `import paretoforge` stays cheap
    if name == "load_run":
        from paretoforge.orchestrator.results import load_run

        return load_run
    if name == "Spec":
        from paretoforge.spec import Spec

        return Spec
    raise AttributeError(f"module 'paretoforge' has no attribute {name!r}")
