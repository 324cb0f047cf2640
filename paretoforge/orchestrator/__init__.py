"""Ray + Optuna orchestration: the driver loop, worker actors, the run directory and results.

Imports are lazy so that ``paretoforge --help`` does not import Ray or torch.

Example:
    >>> from paretoforge.orchestrator import load_run  # doctest: +SKIP
    >>> run = load_run("runs/quickstart")  # doctest: +SKIP
    >>> rows = run.trials_table()  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["Run", "SearchSummary", "export_trial", "load_run", "run_search", "write_report"]

_WHERE = {
    "Run": "results", "export_trial": "results", "load_run": "results",
    "run_search": "driver", "SearchSummary": "driver", "write_report": "report",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        module = importlib.import_module(f"paretoforge.orchestrator.{_WHERE[name]}")
        return getattr(module, name)
    raise AttributeError(name)
