"""Ray + Optuna orchestration: the driver loop, worker actors, the run directory and results.

Imports are lazy so that ``paretoforge --help`` does not import Ray or torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Run", "export_trial", "load_run", "run_search"]


def __getattr__(name: str) -> Any:
    if name in ("Run", "export_trial", "load_run"):
        from paretoforge.orchestrator import results

        return getattr(results, name)
    if name == "run_search":
        from paretoforge.orchestrator.driver import run_search

        return run_search
    raise AttributeError(name)
