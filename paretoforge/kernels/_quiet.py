"""Silence third-party chatter around export and quantization; failures still raise."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Warnings ignored, stdout swallowed, and ``loggers`` (default: the root logger) raised to
    ERROR for the duration; their levels are restored afterwards.

    The torch exporter and onnxruntime's quantizers print per-node notes and warn about
    nothing a candidate can act on; a real failure still surfaces as an exception.
    """
    targets = [logging.getLogger(n) for n in loggers] or [logging.getLogger()]
    levels = [lg.level for lg in targets]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in targets:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, lvl in zip(targets, levels, strict=True):
                lg.setLevel(lvl)
