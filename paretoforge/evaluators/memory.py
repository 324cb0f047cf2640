"""Peak memory of a decoder session: what generating with the graph adds to a process.

:func:`session_peak_memory` runs the session in a fresh Python process (numpy and
onnxruntime imported, nothing else) and measures that process's resident-set high-water mark
(Linux ``VmHWM``) around the session's whole life as a generator: it resets the mark
(``/proc/self/clear_refs``, value 5), notes the resident set, then creates the ONNX Runtime
session, runs a prefill of ``prompt_tokens`` and ``decode_tokens`` decode steps fed back
their own cache, and reads the mark again. The difference is the memory the session needed
at its peak: weights as loaded and prepacked, the arena, the KV cache, and the per-call
buffers. It is what a deployment pays on top of its own interpreter, measured, not estimated.

Why a fresh process: in a long-lived one (a worker that has just traced and quantized the
model) the allocator keeps freed memory, which the session then reuses without raising the
resident set; measured there, a 17 MB model's session read 0 MB. The child costs about half a
second. Without ``/proc/self/clear_refs`` (not Linux) the mark cannot be reset, and the
measurement is a :class:`MeasurementError`.

Example:
    >>> peak = session_peak_memory("decoder.onnx", prompt_tokens=64)  # doctest: +SKIP
    >>> peak["peak_mb"] > peak["session_mb"] > 0  # doctest: +SKIP
    True
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from paretoforge.exceptions import MeasurementError

__all__ = ["MEMORY_METHOD", "session_peak_memory"]

#: What ``peak_mb`` is, recorded beside it in a manifest.
MEMORY_METHOD = ("VmHWM - VmRSS of a fresh process holding numpy and onnxruntime "
                 "(high-water mark reset through /proc/self/clear_refs) over session "
                 "creation, one prefill and the decode steps")

_FIELD = re.compile(r"^(VmRSS|VmHWM):\s+(\d+)\s+kB", re.MULTILINE)


def _status_kb() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(v) for k, v in _FIELD.findall(text)}


def _reset_high_water_mark() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as err:
        raise MeasurementError(
            f"Peak memory needs Linux's /proc/self/clear_refs to reset the resident-set "
            f"high-water mark; it is not writable here ({err}); leave peak_memory_mb out of "
            "the objectives on this machine") from err


def session_peak_memory(
    path: str | os.PathLike[str],
    *,
    prompt_tokens: int = 64,
    decode_tokens: int = 8,
    intra_op_threads: int = 1,
    provider: str = "CPUExecutionProvider",
    fresh_process: bool = True,
) -> dict[str, Any]:
    """Peak resident memory (MiB) a KV-cache decoder session adds to a process while it is
    created, prefills ``prompt_tokens`` and decodes ``decode_tokens`` tokens (batch 1).

    Args:
        path: A graph written by :func:`~paretoforge.kernels.decoder_export.export_decoder_onnx`
            (any precision).
        prompt_tokens: Prompt length of the prefill (the cache then holds that many tokens).
        decode_tokens: Decode steps after the prefill, each fed the previous step's cache.
        intra_op_threads: ONNX Runtime threads (a profile's ``intra_op_threads``).
        provider: Execution provider.
        fresh_process: Measure in a new Python process (the honest figure, see the module's
            docstring); False measures in this one (a lower bound).

    Returns:
        ``{"peak_mb", "session_mb", "baseline_mb", "prompt_tokens", "decode_tokens",
        "method"}``: ``peak_mb`` is the high-water mark over the whole run less the resident
        set before it, ``session_mb`` the resident set just after the session was created
        less the same baseline (weights and arena), ``baseline_mb`` the process's own.

    Raises:
        MeasurementError: the graph is not a KV-cache decoder graph, or the high-water mark
            cannot be reset on this system.
    """
    if prompt_tokens < 1 or decode_tokens < 0:
        raise MeasurementError(f"peak memory needs prompt_tokens >= 1 and decode_tokens >= 0; "
                               f"got {prompt_tokens} and {decode_tokens}")
    args = {"path": str(path), "prompt_tokens": int(prompt_tokens),
            "decode_tokens": int(decode_tokens), "intra_op_threads": int(intra_op_threads),
            "provider": provider}
    if not fresh_process:
        return _measure_here(**args)
    code = ("import json, sys; from paretoforge.evaluators.memory import _measure_here; "
            "print(json.dumps(_measure_here(**json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)],
                          capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        raise MeasurementError(
            f"peak memory of {str(path)!r}: the measuring process exited {proc.returncode}: "
            f"{lines[-1]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _measure_here(*, path: str, prompt_tokens: int, decode_tokens: int,
                  intra_op_threads: int, provider: str) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    from paretoforge.kernels.decoder_export import CacheLayout, prefill_feeds

    gc.collect()
    _reset_high_water_mark()
    before = _status_kb()["VmRSS"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(intra_op_threads)
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), so, providers=[provider])
    after_session = _status_kb()["VmRSS"]
    layout = CacheLayout.from_session(session)
    names = [o.name for o in session.get_outputs()]
    to_past = dict(zip(layout.present_names, layout.past_names, strict=True))
    ids = np.arange(prompt_tokens, dtype=np.int64)[None] % 2  # tokens 0/1: in every vocab
    feeds = prefill_feeds(layout, ids)
    length = prompt_tokens
    for _ in range(decode_tokens + 1):
        out = dict(zip(names, session.run(names, feeds), strict=True))
        length += 1
        feeds = {"input_ids": np.zeros((1, 1), dtype=np.int64),
                 "attention_mask": np.ones((1, length), dtype=np.int64),
                 "position_ids": np.array([[length - 1]], dtype=np.int64)}
        feeds.update({to_past[n]: out[n] for n in layout.present_names})
    peak = _status_kb()["VmHWM"]
    del session, out, feeds
    return {"peak_mb": round((peak - before) / 1024, 2),
            "session_mb": round((after_session - before) / 1024, 2),
            "baseline_mb": round(before / 1024, 2), "prompt_tokens": int(prompt_tokens),
            "decode_tokens": int(decode_tokens), "method": MEMORY_METHOD}
