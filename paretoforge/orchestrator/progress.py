"""Search progress: a rich live panel on a terminal, plain log lines elsewhere.

Besides the counts, the display shows the hypervolume of the current front -- its reference
point is the worst value observed on each objective, printed beside it, so it can move when a
worse trial arrives -- and an ETA: the trials still needed at this session's completion rate,
capped by the wall-time budget.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["Counts", "Progress"]


@dataclass
class Counts:
    target: int
    done: int = 0
    running: int = 0
    failed: int = 0
    cached: int = 0
    prescreened: int = 0  # skipped before building (search.prescreen)
    front: int = 0
    best: dict[str, float] = field(default_factory=dict)
    hypervolume: float | None = None
    hv_reference: dict[str, float] = field(default_factory=dict)
    eta_s: float | None = None


class Progress:
    """Shows :class:`Counts`; ``live=None`` picks a live display when ``stream`` is a terminal.

    ``on_event(kind, data)`` hears the loop's structured events: ``worker_ready`` (worker, pid,
    node_id), ``trial_started`` (trial, key, worker, attempt, pid, node_id), ``trial_done`` (trial,
    attempts), ``trial_failed`` (trial, kind), ``trial_prescreened`` (trial, key, reason) and
    ``worker_lost`` (worker, trial, attempt, error). It runs on the driver's loop, so it must be
    quick.

    Example:
        >>> p = Progress(8, live=False, quiet=True, on_event=lambda kind, data: None)
        >>> p.update("trial 0 done", done=1, hypervolume=0.5, eta_s=70.0)
        >>> p.summary()
        'done 1/8 (cached 0) running 0 failed 0 front 0 | hv 0.5 | eta 01:10'
    """

    def __init__(self, target: int, *, stream: TextIO | None = None, live: bool | None = None,
                 quiet: bool = False,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.counts = Counts(target=target)
        self.on_event = on_event
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.live_enabled = (self.stream.isatty() if live is None else live) and not quiet
        self._live: Any = None
        self._t0 = time.perf_counter()

    def __enter__(self) -> Progress:
        if self.live_enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(file=self.stream),
                              refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)
            self._live = None

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if self._live is not None:
            self._live.console.print(message)
        else:
            print(message, file=self.stream, flush=True)

    def event(self, name: str, /, **data: Any) -> None:
        """A structured event from the loop (see the class docstring)."""
        if self.on_event is not None:
            self.on_event(name, data)

    def update(self, event: str | None = None, **changes: Any) -> None:
        for k, v in changes.items():
            setattr(self.counts, k, v)
        if self._live is not None:
            self._live.update(self._render())
        elif event and not self.quiet:
            print(f"[{self._elapsed()}] {event} | {self.summary()}", file=self.stream, flush=True)

    def _elapsed(self) -> str:
        return _mmss(time.perf_counter() - self._t0)

    def summary(self) -> str:
        """The counts as one line (the plain display's suffix)."""
        c = self.counts
        best = ", ".join(f"{k}={v:.4g}" for k, v in c.best.items())
        out = (f"done {c.done}/{c.target} (cached {c.cached}) running {c.running} "
               f"failed {c.failed}" + (f" prescreened {c.prescreened}" if c.prescreened else "")
               + f" front {c.front}" + (f" | best {best}" if best else ""))
        if c.hypervolume is not None:
            out += f" | {self._hv_text()}"
        if c.eta_s is not None:
            out += f" | eta {_mmss(c.eta_s)}"
        return out

    def _hv_text(self) -> str:
        c = self.counts
        ref = ", ".join(f"{k}={v:.4g}" for k, v in c.hv_reference.items())
        return f"hv {c.hypervolume:.4g}" + (f" (ref: worst observed {ref})" if ref else "")

    def _render(self) -> Any:
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        c = self.counts
        table = Table.grid(padding=(0, 2))
        table.add_row(ProgressBar(total=max(c.target, 1), completed=c.done, width=40),
                      f"{c.done}/{c.target} done", f"elapsed {self._elapsed()}")
        table.add_row(f"running {c.running}", f"failed {c.failed}", f"cached {c.cached}"
                      + (f", prescreened {c.prescreened}" if c.prescreened else ""))
        table.add_row(f"front size {c.front}",
                      " ".join(f"best {k} {v:.4g}" for k, v in c.best.items()),
                      f"eta {_mmss(c.eta_s)}" if c.eta_s is not None else "eta -")
        body: Any = table
        if c.hypervolume is not None:
            from rich.console import Group
            from rich.text import Text

            body = Group(table, Text(self._hv_text()))
        return Panel(body, title="paretoforge search", expand=False)


def _mmss(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m:02d}:{s % 60:02d}"
