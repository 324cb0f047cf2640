"""A candidate's build as named stages: derive weights -> recover -> export -> graph passes ->
score -> measure -> manifest (:mod:`~paretoforge.pipeline.stages`), run in order by
:func:`build_candidate`, each timed and cached by content key (:class:`StageCache`).

:mod:`~paretoforge.pipeline.prepare` computes, once per search on the driver, what every build
shares (:class:`Prepared`: task data, base weights, importance, the task's state; workers
get it without the test split, which :mod:`~paretoforge.pipeline.final` scores after the
search);
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
from paretoforge.pipeline.final import describe_test_split, record_test_metrics, score_test
from paretoforge.pipeline.prepare import Prepared, prepare, prepare_cached
from paretoforge.pipeline.stages import BuildContext, stage_key

__all__ = ["ARTIFACT_FORMAT", "BuildContext", "Manifest", "Prepared", "StageCache",
           "StageRecord", "artifact_path", "build_candidate", "describe_test_split", "files_match",
           "package_versions", "prepare", "prepare_cached", "read_manifest",
           "record_test_metrics", "remove_partial", "result_from_manifest", "score_test",
           "stage_key", "verify_artifact"]
