"""A candidate's build as named stages: derive weights -> recover -> export -> graph passes ->
score -> measure -> manifest (:mod:`~paretoforge.pipeline.stages`), run in order by
:func:`build_candidate`, each timed and cached by content key (:class:`StageCache`).

:mod:`~paretoforge.pipeline.prepare` computes, once per search on the driver, what every build
shares (:class:`Prepared`: task data, base weights, importance, the task's state);
:mod:`~paretoforge.pipeline.artifacts` and :mod:`~paretoforge.manifest` are the
artifact on disk and its typed :class:`Manifest`. Nothing here knows about Ray: the
orchestrator's worker passes in where to measure and which gate to hold.
"""

from __future__ import annotations

from paretoforge.manifest import ARTIFACT_FORMAT, Manifest, StageRecord, read_manifest
from paretoforge.pipeline.artifacts import (
    artifact_path,
    files_match,
    remove_partial,
    result_from_manifest,
    verify_artifact,
)
from paretoforge.pipeline.build import build_candidate, package_versions
from paretoforge.pipeline.cache import StageCache
from paretoforge.pipeline.prepare import Prepared, prepare, prepare_cached
from paretoforge.pipeline.stages import BuildContext, stage_key

__all__ = ["ARTIFACT_FORMAT", "BuildContext", "Manifest", "Prepared", "StageCache",
           "StageRecord", "artifact_path", "build_candidate", "files_match", "package_versions",
           "prepare", "prepare_cached", "read_manifest", "remove_partial",
           "result_from_manifest", "stage_key", "verify_artifact"]
