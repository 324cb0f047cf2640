"""Search progress: a rich live panel on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import sys
import time
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
    front: int = 0
    best: dict[str, float] = field(default_factory=dict)


class Progress:
    """Shows :class:`Counts`; ``live=None`` picks a live display when ``stream`` is a terminal."""

    def __init__(self, target: int, *, stream: TextIO | None = None, live: bool | None = None,
                 quiet: bool = False) -> None:
        self.counts = Counts(target=target)
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

    def update(self, event: str | None = None, **changes: Any) -> None:
        for k, v in changes.items():
            setattr(self.counts, k, v)
        if self._live is not None:
            self._live.update(self._render())
        elif event and not self.quiet:
            print(f"[{self._elapsed()}] {event} | {self._summary()}", file=self.stream, flush=True)

    def _elapsed(self) -> str:
        s = int(time.perf_counter() - self._t0)
        return f"{s // 60:02d}:{s % 60:02d}"

    def _summary(self) -> str:
        c = self.counts
        best = ", ".join(f"{k}={v:.4g}" for k, v in c.best.items())
        return (f"done {c.done}/{c.target} (cached {c.cached}) running {c.running} "
                f"failed {c.failed} front {c.front}" + (f" | best {best}" if best else ""))

    def _render(self) -> Any:
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        c = self.counts
        table = Table.grid(padding=(0, 2))
        table.add_row(ProgressBar(total=max(c.target, 1), completed=c.done, width=40),
                      f"{c.done}/{c.target} done", f"elapsed {self._elapsed()}")
        table.add_row(f"running {c.running}", f"failed {c.failed}", f"cached {c.cached}")
        table.add_row(f"front size {c.front}",
                      " ".join(f"best {k} {v:.4g}" for k, v in c.best.items()), "")
        return Panel(table, title="paretoforge search", expand=False)
