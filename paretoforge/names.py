"""The names several layers share: trial and study user attributes, stop reasons, failure kinds,
precisions.

A name written here is written nowhere else: the driver sets a trial's user attributes under
:class:`TrialAttr`, and results, reports, predictors, benchmarks and tests read them back under
the same constants. The values are the strings journals have always held, so runs written before
this module still read. No heavy imports (foundation layer).

Example:
    >>> from paretoforge.names import PRECISIONS, FailKind, StopReason, TrialAttr
    >>> TrialAttr.FAIL_KIND, FailKind.BUILD == "build", StopReason.MAX_FAILURES.value
    ('fail_kind', True, 'max_failures')
    >>> PRECISIONS
    ('fp32', 'int8', 'int8-static', 'fp16', 'int4')
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal, get_args

__all__ = [
    "PRECISIONS", "TORCH_PRECISIONS", "FailKind", "Phase", "Precision", "StopReason", "StudyAttr",
    "TrialAttr",
]


class TrialAttr:
    """Names of the user attributes the driver sets on a trial (``trial.user_attrs[...]``).

    Plain ``str`` constants (not enum members), so what Optuna stores is a plain string.
    """

    __slots__ = ()

    # What the candidate is.
    CONFIG: Final = "config"  # the CandidateConfig as JSON
    KEY: Final = "key"  # its content key (the artifact directory's name)
    IS_BASE: Final = "is_base"  # True on the unpruned base model's trial
    SEED_CONFIG: Final = "seed_config"  # index into search.seed_configs
    # What a built (or cached) candidate gave.
    METRICS: Final = "metrics"  # every metric, measured or predicted
    ARTIFACT_DIR: Final = "artifact_dir"  # relative to the run directory
    TIMINGS: Final = "timings"  # seconds per build stage, "total_s" included
    WORKER: Final = "worker"  # the worker that built it
    NODE_ID: Final = "node_id"  # the Ray node it was built on
    PREDICTED_METRICS: Final = "predicted_metrics"  # names of the metrics a predictor gave
    CONSTRAINTS: Final = "constraints"  # one value per bound, <= 0 satisfied
    REUSED_ARTIFACT: Final = "reused_artifact"  # True: completed from an artifact on disk
    CACHED_FROM: Final = "cached_from"  # number of the trial whose values it took
    ATTEMPTS: Final = "attempts"  # how many times it ran
    ATTEMPT_ERRORS: Final = "attempt_errors"  # why each lost attempt was lost
    # Why it failed or was skipped.
    FAIL_REASON: Final = "fail_reason"
    FAIL_KIND: Final = "fail_kind"  # a FailKind value
    FAILED_LIKE: Final = "failed_like"  # number of the failed trial with the same config
    PRESCREENED: Final = "prescreened"  # True on a trial skipped before it was built
    PRESCREEN_REASON: Final = "prescreen_reason"
    PRESCREEN_PREDICTED: Final = "prescreen_predicted"  # the predictions it was skipped on
    # One-shot search and its finishing (search.strategy: one-shot).
    PHASE: Final = "phase"  # a Phase value; absent on a per-candidate search's trials
    RUNG: Final = "rung"  # finishing: the successive-halving rung, 0 first
    RECOVERY_EPOCHS: Final = "recovery_epochs"  # finishing: distillation epochs it got
    ONE_SHOT_TRIAL: Final = "one_shot_trial"  # finishing: the one-shot trial of its config
    RESUME_FROM: Final = "resume_from"  # finishing: the previous rung's artifact it continues
    RESUME_EPOCHS: Final = "resume_epochs"  # ... and the epochs those weights had already
    MUTATED_FROM: Final = "mutated_from"  # one-shot: the repeated trial this one mutates
    BASE_PRECISION: Final = "base_precision"  # one-shot: the unpruned base at this precision

    def __new__(cls) -> TrialAttr:  # a namespace, not a type of value
        raise TypeError("TrialAttr is a namespace of names; use TrialAttr.KEY etc.")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every attribute name, in declaration order."""
        return tuple(v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str))


class Phase(StrEnum):
    """Which part of a one-shot search a trial belongs to (its ``phase`` user attribute)."""

    ONE_SHOT = "one-shot"  # a sub-network cut from the supernet, no recovery: seconds
    FINISH = "finish"  # a front candidate recovered by distillation (one rung of halving)


class StudyAttr:
    """Names of the user attributes the driver sets on the study (``study.user_attrs[...]``).

    What is known only after the search goes here, keyed by trial number: Optuna refuses a
    user attribute on a finished trial, and a value set after the search can never have fed
    a search decision.
    """

    __slots__ = ()

    # {str(trial number): {quality metric: value on the test split}}, for the front members
    # and the base trial, scored once after the search (the manifest's test_metrics).
    TEST_METRICS: Final = "test_metrics"
    # {str(trial number): {profile: record}}: the front's members and the base timed again
    # together after the search, in interleaved rounds (orchestrator/retime.py).
    RETIMED: Final = "retimed"

    def __new__(cls) -> StudyAttr:
        raise TypeError("StudyAttr is a namespace of names; use StudyAttr.TEST_METRICS")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every attribute name, in declaration order."""
        return tuple(v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str))


class FailKind(StrEnum):
    """Why a trial FAILed (its ``fail_kind`` user attribute)."""

    BUILD = "build"  # surgery, recovery, export or quantization failed (BuildError)
    MEASUREMENT = "measurement"  # a profile could not measure it (MeasurementError)
    ERROR = "error"  # any other error in the worker, or a result the driver cannot use
    WORKER_LOST = "worker_lost"  # its worker died on every attempt (search.max_retries)
    TIMEOUT = "timeout"  # it ran past search.trial_timeout_s
    INTERRUPTED = "interrupted"  # the search stopped before it ran; not a failure of the search

    @property
    def counts_as_failure(self) -> bool:
        """Whether it counts towards ``search.max_failures`` and the failed count."""
        return self is not FailKind.INTERRUPTED


class StopReason(StrEnum):
    """Why a search stopped before it had its trials (``LoopStats.stop_reason``)."""

    MAX_FAILURES = "max_failures"  # search.max_failures trials failed in this session
    TIME_BUDGET = "time_budget"  # search.timeout_s passed: no new trial starts
    EXHAUSTED = "exhausted"  # one-shot: the sampler keeps proposing configs already evaluated


Precision = Literal["fp32", "int8", "int8-static", "fp16", "int4"]
# The one list of weight precisions a candidate may have (CandidateConfig.precision,
# kernels.apply_precision, hardware profiles' precisions, the predictors' features).
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
# The precisions a torch profile builds from the candidate's checkpoint (fp32 as is, dynamic
# int8 Linear layers on CPU, a half-precision model): kernels.runtime.torch_at_precision.
TORCH_PRECISIONS: tuple[Precision, ...] = ("fp32", "int8", "fp16")
