"""The test split's one use: the quality of a finished artifact, scored after the search.

No search decision sees the test split. Workers get the prepared bundle without it
(:meth:`~paretoforge.pipeline.prepare.Prepared.for_workers`); the driver, once the search (or
``refine``) is done, loads each front member's ``model.onnx`` and scores it here, with the
task's own :meth:`~paretoforge.tasks.Task.score` on ``data.scoring("test")``. The result is
written into the artifact's manifest as ``test_metrics`` beside the validation ``metrics``;
it is never told to the study as a value.

Example:
    >>> metrics = score_test(prepared, "runs/quickstart/artifacts/0123456789abcdef")
    ... # doctest: +SKIP
    >>> metrics  # doctest: +SKIP
    {'accuracy': 0.964}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from paretoforge.exceptions import ParetoforgeError
from paretoforge.manifest import read_manifest
from paretoforge.pipeline.prepare import Prepared
from paretoforge.pipeline.stages import QUALITY_BATCH

__all__ = ["record_test_metrics", "score_test", "describe_test_split"]


def describe_test_split(prepared: Prepared, *, batch_size: int = QUALITY_BATCH) -> dict[str, Any]:
    """What the test score was computed on: split name, size, sha256 of its indices."""
    split = prepared.task.split
    return {"split": "test", "n": int(len(prepared.task.labels("test"))),
            "indices_sha256": split.get("test_indices_sha256"),
            "test_fraction": split.get("test_fraction"), "batch_size": int(batch_size)}


def score_test(prepared: Prepared, artifact_dir: str | os.PathLike[str], *,
               batch_size: int = QUALITY_BATCH) -> dict[str, float]:
    """The task's quality metric of the artifact's ``model.onnx`` on the test split.

    Args:
        prepared: The driver's full bundle (with its test split, not the workers' copy).
        artifact_dir: A built candidate's directory.
        batch_size: Examples per call, as the search scored validation (default 1).

    Returns:
        ``{quality metric: value}``.

    Raises:
        ParetoforgeError: the bundle has no test split (a worker's copy), or the artifact
            has no ``model.onnx``.
    """
    from paretoforge.evaluators.quality import onnx_logits

    onnx_path = Path(artifact_dir) / "model.onnx"
    if not onnx_path.is_file():
        raise ParetoforgeError(f"{str(onnx_path)!r} does not exist; cannot score the test "
                               "split of an artifact without its ONNX model")
    data = prepared.task.scoring("test")  # raises where the test split is withheld
    out = onnx_logits(onnx_path, data.feeds("test"), batch_size=batch_size)
    state = prepared.test_state if prepared.test_state is not None else {}
    value = float(prepared.task_impl.score(out, data, state))
    return {prepared.task.metric: value}


def record_test_metrics(artifact_dir: str | os.PathLike[str], metrics: dict[str, float],
                        split: dict[str, Any]) -> bool:
    """Write ``test_metrics`` and ``test_split`` into the artifact's manifest (atomically).

    The manifest's file checksums do not cover ``manifest.json`` itself, so the artifact
    still verifies. Returns False (and writes nothing) when the manifest is not a real
    build's.
    """
    manifest = read_manifest(artifact_dir)
    if manifest is None:
        return False
    manifest.model_copy(update={"test_metrics": dict(metrics), "test_split": dict(split)}
                        ).write(Path(artifact_dir) / "manifest.json")
    return True
