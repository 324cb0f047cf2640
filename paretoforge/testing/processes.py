"""Killing a running search at a chosen point, for the fault tests (driver SIGKILL, resume).

Example:
    >>> driver = subprocess.Popen([...], start_new_session=True)  # doctest: +SKIP
    >>> wait_for_trials(driver, Path("runs/x"), 2)  # doctest: +SKIP
    >>> sigkill_session(driver)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["is_complete", "sigkill_session", "wait_for_trials"]


def is_complete(trial: Any) -> bool:
    """A trial Optuna has as COMPLETE (the default of :func:`wait_for_trials`)."""
    return trial.state.name == "COMPLETE"


def wait_for_trials(driver: subprocess.Popen, run_dir: Path, count: int, *,
                    counts: Callable[[Any], bool] = is_complete,
                    timeout_s: float = 180.0, poll_s: float = 0.2) -> int:
    """Wait until ``count`` trials of the run at ``run_dir`` satisfy ``counts``; return how many.

    Fails (``AssertionError``, with the driver's stderr tail) if the driver ends first or the
    count is not reached within ``timeout_s``: a kill test whose search made no progress before
    the kill proves nothing.
    """
    from paretoforge.orchestrator.results import load_run

    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline and driver.poll() is None:
        time.sleep(poll_s)
        if (run_dir / "study.journal").is_file():
            trials = load_run(run_dir).study.get_trials(deepcopy=False)
            seen = sum(1 for t in trials if counts(t))
            if seen >= count:
                break
    if driver.poll() is not None:
        err = driver.stderr.read()[-3000:] if driver.stderr else ""
        raise AssertionError(f"the search ended (rc={driver.returncode}) before the kill: {err}")
    assert seen >= count, f"the search made progress before the kill ({seen} of {count})"
    return seen


def sigkill_session(driver: subprocess.Popen, *, timeout_s: float = 30.0) -> None:
    """SIGKILL the driver, then its whole session (its own Ray processes go with it).

    ``driver`` must have been started with ``start_new_session=True``.
    """
    try:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=timeout_s)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
