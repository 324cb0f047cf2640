"""The typed manifest of a built candidate: written by the pipeline, read by everything else.

``manifest.json`` sits in every artifact directory beside ``model.onnx``,
``model.safetensors`` and ``config.json``, and states what the candidate is (its config and
pruning plan), how it was built (the pipeline's stages, each with its content key, time and
whether it came from the stage cache), what it measured (metrics, with the profile each
latency came from, and the per-profile measurements and placement), how to feed it (inputs,
outputs, preprocessing), and the sha256 of every file. Results, export, resume and the latency
predictors read it through :class:`Manifest` only.

Example:
    >>> m = Manifest(config={"layers_kept": 1}, key="00ff", metrics={"accuracy": 0.9},
    ...              files={"model.onnx": "ab" * 32})
    >>> Manifest.model_validate_json(m.model_dump_json()).metrics["accuracy"]
    0.9
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["ARTIFACT_FORMAT", "Manifest", "StageRecord", "load_manifest", "read_manifest"]

ARTIFACT_FORMAT = "paretoforge-artifact/1"  # the manifest format a real build writes


class StageRecord(BaseModel):
    """One pipeline stage of a build: its name, content key, seconds, and cache hit."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Stage name: derive, recover, export, passes, score, measure.")
    key: str = Field("", description="Content key of the stage's output (empty: not cacheable).")
    seconds: float = Field(0.0, description="Wall time of the stage in this build.")
    cached: bool = Field(False, description="Whether the output came from the stage cache.")
    method: str = Field("", description="How the stage made its output, where it has several "
                        "ways (export: 'traced' by torch.onnx, or 'template': the weights "
                        "written into the graph of a structure traced before).")


class Manifest(BaseModel):
    """``manifest.json`` of an artifact. Fields a build always writes are required; the rest
    default to empty, so manifests of earlier versions still read."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["paretoforge-artifact/1"] = Field(
        ARTIFACT_FORMAT, description="Manifest format; a stand-in worker's never validates.")
    config: dict[str, Any] = Field(description="The candidate's config (CandidateConfig).")
    key: str = Field(description="The config's content key (its artifact directory's name).")
    metrics: dict[str, float] = Field(
        description="Metric name -> value; latencies as latency_p50_ms@PROFILE. Quality here "
        "is on the validation split, the one the search decided on.")
    test_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Quality on the test split, which no search decision saw: scored once "
        "after the search for front members (and refined ones); empty until then. Quote "
        "this one.")
    test_split: dict[str, Any] = Field(
        default_factory=dict,
        description="The test split test_metrics were scored on: size, sha256 of its indices, "
        "examples per call.")
    files: dict[str, str] = Field(description="File (relative path) -> sha256.")
    plan: dict[str, Any] = Field(default_factory=dict,
                                 description="Pruning plan: layers, heads, neurons per layer.")
    measurements: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Profile -> its latency measurement (protocol, env).")
    placement: dict[str, Any] = Field(
        default_factory=dict,
        description="Profile -> nodes per execution provider, fallbacks, unfused Q/DQ.")
    quality_batch_size: int = Field(1, description="Examples per call when quality was scored.")
    graph: dict[str, Any] = Field(default_factory=dict, description="ONNX graph summary.")
    fusions: dict[str, int] = Field(default_factory=dict,
                                    description="ONNX Runtime fusions applied: op -> count.")
    task: dict[str, Any] = Field(default_factory=dict,
                                 description="Task name, metric, the split record (train, "
                                 "validation, test sizes and index sha256s).")
    inputs: list[dict[str, Any]] = Field(default_factory=list,
                                         description="ONNX inputs: name, shape, dtype.")
    outputs: list[dict[str, Any]] = Field(default_factory=list,
                                          description="ONNX outputs: name, shape, dtype, extra.")
    cache_layout: dict[str, Any] | None = Field(
        None, description="A decoder's KV-cache layout (model.onnx serves prefill and decode): "
        "input and output names, past layout, key/value heads and head size per layer, dtype "
        "(paretoforge.kernels.decoder_export.CacheLayout.as_dict). None: not a decoder.")
    preprocessing: str = Field("", description="Exact preprocessing of the inputs.")
    latency_inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="The inputs every profile was timed on: split, count, seed, sha256 of the "
        "indices (the same for every candidate of a search).")
    base_model: dict[str, Any] = Field(default_factory=dict,
                                       description="The base model the candidate came from.")
    versions: dict[str, str] = Field(default_factory=dict, description="Package versions.")
    built_on: dict[str, Any] = Field(default_factory=dict,
                                     description="Node, host, worker and cores of the build.")
    timings: dict[str, float] = Field(default_factory=dict,
                                      description="Seconds per step of the build (and total).")
    stages: list[StageRecord] = Field(default_factory=list,
                                      description="The pipeline's stages, in order.")
    # Written by `export` into the exported copy only:
    trial: int | None = Field(None, description="Exported: the trial number.")
    run: dict[str, Any] | None = Field(None, description="Exported: run directory and study.")
    objectives: dict[str, Any] | None = Field(None, description="Exported: objective values.")
    predicted: dict[str, Any] | None = Field(
        None, description="Exported: metrics a latency predictor gave, with its error.")
    base_trial_metrics: dict[str, float] | None = Field(
        None, description="Exported: the unpruned base trial's metrics.")
    base_trial_test_metrics: dict[str, float] | None = Field(
        None, description="Exported: the unpruned base trial's quality on the test split.")
    quality: dict[str, Any] | None = Field(
        None, description="Exported: the quality metric on validation (every search decision "
        "used it) and on test (never seen by the search; the number to quote), side by side.")

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temp file + fsync + rename)."""
        from paretoforge._io import atomic_write_json

        atomic_write_json(path, self.model_dump(mode="json", exclude_none=True))


def read_manifest(path: str | os.PathLike[str]) -> Manifest | None:
    """The manifest at ``path`` (a ``manifest.json`` or its directory), or None when it is
    missing, unreadable or not a real build's."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    try:
        return Manifest.model_validate(json.loads(p.read_text()))
    except (OSError, ValueError, ValidationError):
        return None


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest at ``path`` (a ``manifest.json`` or its directory).

    Raises:
        ParetoforgeError: it is missing or unreadable, of another format than a real build's
            (a stand-in worker's, from :mod:`paretoforge.testing`), or not a valid manifest.
    """
    from paretoforge.exceptions import ParetoforgeError

    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ParetoforgeError(f"{str(p)!r}: cannot read the manifest ({type(e).__name__}: "
                               f"{e}); re-run the trial") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt != ARTIFACT_FORMAT:
        raise ParetoforgeError(
            f"{str(p.parent)!r} is not a paretoforge build's artifact: its manifest's format "
            f"is {fmt!r}, not {ARTIFACT_FORMAT!r} (a stand-in worker's, from "
            "paretoforge.testing?); it cannot be loaded or exported"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "(top level)"
        raise ParetoforgeError(f"{str(p)!r}: not a valid manifest: {where}: "
                               f"{first.get('msg')}; re-run the trial") from None
