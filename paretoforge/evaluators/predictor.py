"""A per-profile latency predictor, fitted on that profile's own measurements.

A profile whose hardware is not in the cluster is never measured elsewhere: it is refused, or
served by a predictor fitted on measurements taken on that hardware earlier (or earlier in the
same search), and its numbers are labelled predicted.

The model is an additive cost model with non-negative coefficients: a call costs a fixed
overhead, plus so much per multiply-accumulate of the linear layers (one rate per precision:
fp32, fp16, int8 and 4-bit weights),
per attention head, per layer and per node the runtime dispatches. Every term is a physical
cost, so the fit cannot make one negative to explain noise, and it extrapolates to smaller or
larger candidates in a sane direction. It is fitted by least squares on *relative* error
(weights ``1 / latency``), because a 10% miss matters as much on a fast candidate as on a
slow one.

Example:
    >>> p = LatencyPredictor("cpu-1t", min_samples=3)
    >>> feats = [{"macs_fp32": m, "layers": 1.0} for m in (1e3, 2e3, 4e3, 8e3)]
    >>> p = p.fit(feats, [0.1 + 1e-5 * f["macs_fp32"] for f in feats])
    >>> value, predicted = p.predict({"macs_fp32": 3e3, "layers": 1.0})
    >>> round(value, 3), predicted
    (0.13, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from paretoforge.exceptions import MeasurementError

__all__ = ["FEATURES", "PREDICTORS_FORMAT", "LatencyPredictor", "cross_validated_error",
           "features_from", "load_predictor"]

# The run directory's predictors.json (one entry per profile, see orchestrator/prediction.py).
PREDICTORS_FORMAT = "paretoforge-predictors/1"

# Physically meaningful features of a candidate; every one is a cost that can only add time.
FEATURES: tuple[str, ...] = (
    "macs_fp32",  # multiply-accumulates per token of fp32 linear layers
    "macs_int8",  # the same for int8 linear layers (a different rate per MAC)
    "macs_fp16",  # the same for fp16 models (tensor cores on GPUs; casts on CPUs)
    "macs_int4",  # the same for 4-bit weight-only layers (MatMulNBits: dequantize + product)
    "heads",  # attention heads summed over kept layers (scores, softmax, context)
    "layers",  # kept layers (norms, residuals, per-layer fixed costs)
    "nodes",  # graph nodes dispatched per call (per-op overhead)
    "weight_mbytes",  # weight bytes moved per call, in MB
    "int8",  # fixed cost of running quantized (per-call activation quantization set-up)
)


def _precision(config: Mapping[str, Any] | None, graph: Mapping[str, Any]) -> str:
    if config and config.get("precision"):
        return str(config["precision"])
    quant = graph.get("quant_op_counts") or {}
    if quant.get("MatMulNBits"):
        return "int4"
    if any(quant.values()):
        return "int8-static" if quant.get("QuantizeLinear") else "int8"
    if "float16" in (graph.get("initializer_dtype_bytes") or {}):
        return "fp16"
    return "fp32"


def macs_by_precision(macs: float, precision: str) -> dict[str, float]:
    """``macs`` under the feature of its precision (``macs_fp32``, ``macs_int8`` -- dynamic
    and static --, ``macs_fp16``, ``macs_int4``), the others 0: each has its own rate.

    Example:
        >>> macs_by_precision(10.0, "int8-static")["macs_int8"]
        10.0
    """
    kind = "int8" if precision.startswith("int8") else precision
    out = {f"macs_{k}": 0.0 for k in ("fp32", "int8", "fp16", "int4")}
    out[f"macs_{kind}" if f"macs_{kind}" in out else "macs_fp32"] = macs
    return out


def features_from(
    source: Mapping[str, Any],
    config: Mapping[str, Any] | Any | None = None,
    *,
    profile: str | None = None,
) -> dict[str, float]:
    """Predictor features of one candidate.

    Args:
        source: A candidate manifest (``manifest.json``: ``graph``, ``config``, ``plan``, and
            optionally ``placement``) or a bare
            :func:`~paretoforge.kernels.ort.graph_summary`.
        config: The candidate config (a ``CandidateConfig`` or its dict: ``layers_kept``,
            ``heads_kept``, ``precision``); default: the manifest's ``config``.
        profile: Which entry of the manifest's ``placement`` (keyed by profile) gives the
            optimised node count; without it the first one does, else the exported graph's.

    Returns:
        Every name in :data:`FEATURES` plus ``macs_per_token`` (the precision-free total),
        as floats.

    Raises:
        MeasurementError: ``source`` is neither a manifest nor a graph summary.

    Example:
        >>> g = {"node_count": 100, "matmul_weight_elems": 5000, "initializer_bytes": 20000,
        ...      "quant_op_counts": {}}
        >>> f = features_from(g, {"layers_kept": 2, "heads_kept": 3, "precision": "fp32"})
        >>> f["heads"], f["macs_fp32"], f["int8"]
        (6.0, 5000.0, 0.0)
    """
    if hasattr(config, "model_dump"):
        config = config.model_dump()
    graph = source.get("graph", source)
    if "node_count" not in graph:
        raise MeasurementError(
            f"features_from needs a manifest (with 'graph') or a graph_summary (with "
            f"'node_count'); got keys {sorted(source)[:8]}"
        )
    cfg: Mapping[str, Any] = config or source.get("config") or {}
    plan = source.get("plan") or {}
    if plan.get("layers") is not None:
        layers = float(len(plan["layers"]))
        heads = float(sum(len(h) for h in plan.get("heads", [])))
    else:
        layers = float(cfg.get("layers_kept", 0))
        heads = layers * float(cfg.get("heads_kept", 0))
    macs = float(graph.get("matmul_weight_elems") or 0)
    if macs == 0:  # an old summary: weights stand in for MACs (one MAC per weight per token)
        macs = float(graph.get("initializer_bytes", 0)) / 4
    precision = _precision(cfg, graph)
    int8 = 1.0 if precision.startswith("int8") else 0.0  # int8 (dynamic) and int8-static
    # The optimised graph is what is dispatched, when the manifest has it.
    placement = source.get("placement")
    nodes = float(graph["node_count"])
    if isinstance(placement, Mapping):
        if "nodes_after" in placement:  # a bare placement report
            rep: Mapping[str, Any] = placement
        elif profile is not None:
            rep = placement.get(profile) or {}
        else:
            rep = next((v for v in placement.values() if isinstance(v, Mapping)), {})
        nodes = float(rep.get("nodes_after", nodes))
    return {
        "macs_per_token": macs,
        **macs_by_precision(macs, precision),
        "heads": heads,
        "layers": layers,
        "nodes": nodes,
        "weight_mbytes": float(graph.get("initializer_bytes", 0)) / 1e6,
        "int8": int8,
    }


class LatencyPredictor:
    """Predicts one profile's latency from candidate features; fitted on its own measurements.

    Call :meth:`add` with every measurement the profile gets during a search, and
    :meth:`predict` once it :attr:`is_ready`; the fit is redone lazily when new measurements
    came in. :meth:`to_dict` / :meth:`from_dict` keep it in a run directory as JSON.

    Args:
        profile: The profile's name (or the ``HardwareProfile``).
        features: Names of the features used; default :data:`FEATURES`.
        min_samples: Measurements needed before predicting.

    Example:
        >>> p = LatencyPredictor("edge-arm", min_samples=2)
        >>> p.add({"layers": 1.0}, 1.0)
        >>> p.add({"layers": 2.0}, 1.5)
        >>> round(p.predict({"layers": 3.0})[0], 3)
        2.0
    """

    def __init__(
        self,
        profile: Any,
        *,
        features: Sequence[str] = FEATURES,
        min_samples: int = 8,
    ) -> None:
        self.profile = str(getattr(profile, "name", profile))
        if not features or len(set(features)) != len(features):
            raise MeasurementError(
                f"features must be distinct names, got {list(features)}; default: {FEATURES}"
            )
        if min_samples < 2:
            raise MeasurementError(f"min_samples must be >= 2, got {min_samples}")
        self.features = tuple(features)
        self.min_samples = min_samples
        self._x: list[list[float]] = []
        self._y: list[float] = []
        self.intercept_ = 0.0
        self.coef_: dict[str, float] = {}
        self._fitted_on = 0

    # -- data -------------------------------------------------------------------------------

    def _row(self, features: Mapping[str, float]) -> list[float]:
        row = []
        for name in self.features:
            v = float(features.get(name, 0.0))
            if not math.isfinite(v) or v < 0:
                raise MeasurementError(
                    f"Feature {name!r} = {v!r} for profile {self.profile!r}; features are "
                    f"finite counts >= 0 (see features_from)"
                )
            row.append(v)
        return row

    @staticmethod
    def _check_latency(latency: float) -> float:
        y = float(latency)
        if not math.isfinite(y) or y <= 0:
            raise MeasurementError(f"Latency {latency!r} must be a finite time > 0 (ms)")
        return y

    def add(self, features: Mapping[str, float], latency_ms: float) -> None:
        """Record one measurement of this profile (the fit is redone on the next predict)."""
        self._x.append(self._row(features))
        self._y.append(self._check_latency(latency_ms))

    @property
    def n_samples(self) -> int:
        return len(self._y)

    @property
    def is_ready(self) -> bool:
        """Whether enough measurements came in to predict."""
        return self.n_samples >= self.min_samples

    # -- fit / predict ----------------------------------------------------------------------

    def fit(
        self, features: Iterable[Mapping[str, float]], latencies: Iterable[float]
    ) -> LatencyPredictor:
        """Replace the measurements with ``(features, latencies)`` and fit; returns ``self``.

        Raises:
            MeasurementError: lengths differ, a value is invalid, or too few measurements.
        """
        feats, lats = list(features), list(latencies)
        if len(feats) != len(lats):
            raise MeasurementError(
                f"fit got {len(feats)} feature rows and {len(lats)} latencies; pass one "
                f"latency per row"
            )
        self._x = [self._row(f) for f in feats]
        self._y = [self._check_latency(v) for v in lats]
        self._fit()
        return self

    def _fit(self) -> None:
        import numpy as np
        from sklearn.linear_model import LinearRegression

        if not self.is_ready:
            raise MeasurementError(
                f"Latency predictor for profile {self.profile!r} has {self.n_samples} "
                f"measurement(s); it needs {self.min_samples} before predicting"
            )
        x = np.asarray(self._x, dtype=np.float64)
        y = np.asarray(self._y, dtype=np.float64)
        scale = x.max(axis=0)
        scale[scale == 0] = 1.0  # a feature that never varies from 0 gets coefficient 0
        # Relative least squares: residual / y. positive=True keeps every cost non-negative.
        reg = LinearRegression(positive=True).fit(x / scale, y, sample_weight=1.0 / y**2)
        coef = reg.coef_ / scale
        self.intercept_ = max(float(reg.intercept_), 0.0)
        self.coef_ = {n: float(c) for n, c in zip(self.features, coef, strict=True)}
        self._fitted_on = self.n_samples

    def predict(self, features: Mapping[str, float]) -> tuple[float, bool]:
        """Predicted latency (ms) of one candidate, and ``True`` (it is predicted).

        Raises:
            MeasurementError: fewer than ``min_samples`` measurements so far.
        """
        if self._fitted_on != self.n_samples or not self.coef_:
            self._fit()
        row = self._row(features)
        value = self.intercept_ + sum(
            self.coef_[n] * v for n, v in zip(self.features, row, strict=True)
        )
        # A candidate with fewer of everything than any measured one still costs a call.
        return max(value, 1e-6), True

    def predict_measurement(self, features: Mapping[str, float], batch_size: int = 1) -> Any:
        """A :class:`~paretoforge.evaluators.latency.Measurement` labelled predicted."""
        from paretoforge.evaluators.latency import Measurement

        value, _ = self.predict(features)
        report = self.error_report_train()
        return Measurement(
            profile=self.profile, batch_size=batch_size, p50_ms=value, p90_ms=value,
            p99_ms=value, mean_ms=value, std_ms=0.0, min_ms=value, runs=0, warmup=0,
            ci95_rel=report["mape"], converged=False, stop_reason="predicted", predicted=True,
            env={"predictor": {"n_samples": self.n_samples, "train_mape": report["mape"],
                               "features": dict(features)}},
        )

    # -- accuracy ---------------------------------------------------------------------------

    def error_report(
        self, held_out: Iterable[tuple[Mapping[str, float], float]]
    ) -> dict[str, float]:
        """Accuracy on measurements the predictor was not fitted on.

        Args:
            held_out: ``(features, measured latency ms)`` pairs.

        Returns:
            ``{"n", "mape", "within_10pct", "max_ape"}``: mean absolute percentage error and
            the share of predictions within +-10% of the measurement, as fractions.

        Example:
            >>> p = LatencyPredictor("cpu-1t", min_samples=2).fit(
            ...     [{"layers": 1.0}, {"layers": 2.0}], [1.0, 2.0])
            >>> p.error_report([({"layers": 3.0}, 3.3)])["within_10pct"]
            1.0
        """
        errors = []
        for feats, measured in held_out:
            y = self._check_latency(measured)
            errors.append(abs(self.predict(feats)[0] - y) / y)
        if not errors:
            raise MeasurementError("error_report needs at least one held-out measurement")
        return {
            "n": float(len(errors)),
            "mape": sum(errors) / len(errors),
            "within_10pct": sum(e <= 0.10 for e in errors) / len(errors),
            "max_ape": max(errors),
        }

    def error_report_train(self) -> dict[str, float]:
        """:meth:`error_report` on the measurements it was fitted on (optimistic)."""
        rows = [
            (dict(zip(self.features, x, strict=True)), y)
            for x, y in zip(self._x, self._y, strict=True)
        ]
        return self.error_report(rows)

    # -- from runs --------------------------------------------------------------------------

    def add_manifest(self, manifest: Mapping[str, Any], *, metric: str = "p50_ms") -> bool:
        """Record a built candidate's measurement of this profile, if it has a real one.

        Returns:
            Whether the manifest held a measured (not predicted) value for this profile.
        """
        m = (manifest.get("measurements") or {}).get(self.profile)
        if not isinstance(m, Mapping) or m.get("predicted") or not m.get(metric):
            return False
        self.add(features_from(manifest, profile=self.profile), float(m[metric]))
        return True

    @classmethod
    def from_run_dirs(
        cls, run_dirs: Iterable[Any], profile: Any, *, metric: str = "p50_ms", **kwargs: Any
    ) -> LatencyPredictor:
        """A predictor fed with every measurement of ``profile`` in earlier run directories.

        Reads ``<run>/artifacts/*/manifest.json``; candidates measured on other profiles only
        are skipped. Fitted lazily on the first :meth:`predict`.

        Example:
            >>> p = LatencyPredictor.from_run_dirs(["runs/edge"], "edge-arm")  # doctest: +SKIP
            >>> p.n_samples, p.is_ready  # doctest: +SKIP
            (40, True)
        """
        from pathlib import Path

        from paretoforge.manifest import read_manifest

        p = cls(profile, **kwargs)
        for run in run_dirs:
            for f in sorted(Path(run).glob("artifacts/*/manifest.json")):
                manifest = read_manifest(f)
                if manifest is None:
                    raise MeasurementError(
                        f"Cannot read manifest {str(f)!r}: unreadable, or not a paretoforge "
                        "build's manifest; remove the broken artifact"
                    )
                p.add_manifest(manifest.model_dump(mode="json"), metric=metric)
        return p

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: the measurements and the fitted coefficients (refitted first when
        measurements came in since the last fit)."""
        if self.is_ready and self._fitted_on != self.n_samples:
            self._fit()
        return {
            "format": "paretoforge-latency-predictor/1",
            "profile": self.profile,
            "features": list(self.features),
            "min_samples": self.min_samples,
            "x": self._x,
            "y": self._y,
            "intercept_ms": self.intercept_,
            "coef": self.coef_,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyPredictor:
        """Inverse of :meth:`to_dict`; refits from the stored measurements."""
        if data.get("format") != "paretoforge-latency-predictor/1":
            raise MeasurementError(
                f"Not a latency predictor state (format {data.get('format')!r}); expected "
                f"'paretoforge-latency-predictor/1'"
            )
        p = cls(data["profile"], features=data["features"], min_samples=data["min_samples"])
        for x, y in zip(data["x"], data["y"], strict=True):
            p.add(dict(zip(p.features, x, strict=True)), y)
        if p.is_ready:
            p._fit()
        return p


def cross_validated_error(predictor: LatencyPredictor, folds: int = 5) -> dict[str, float]:
    """Held-out error of ``predictor``'s model by k-fold cross-validation on its measurements.

    Each measurement is predicted by a model fitted on the other folds only; the returned
    dict is :meth:`LatencyPredictor.error_report`'s (plus ``folds``).

    Raises:
        MeasurementError: fewer than 3 measurements.

    Example:
        >>> p = LatencyPredictor("cpu-1t", min_samples=2).fit(
        ...     [{"layers": float(k)} for k in range(1, 7)], [0.5 * k for k in range(1, 7)])
        >>> cross_validated_error(p)["mape"] < 1e-6
        True
    """
    n = predictor.n_samples
    if n < 3:
        raise MeasurementError(
            f"cross-validation of the {predictor.profile!r} predictor needs >= 3 measurements, "
            f"it has {n}"
        )
    k = max(2, min(folds, n))
    rows = [dict(zip(predictor.features, x, strict=True)) for x in predictor._x]
    errors: list[tuple[float, float]] = []
    for fold in range(k):
        test = [i for i in range(n) if i % k == fold]
        train = [i for i in range(n) if i % k != fold]
        p = LatencyPredictor(predictor.profile, features=predictor.features, min_samples=2)
        p.fit([rows[i] for i in train], [predictor._y[i] for i in train])
        errors += [(p.predict(rows[i])[0], predictor._y[i]) for i in test]
    apes = [abs(pred - y) / y for pred, y in errors]
    return {"n": float(n), "folds": float(k), "mape": sum(apes) / n,
            "within_10pct": sum(e <= 0.10 for e in apes) / n, "max_ape": max(apes)}


def load_predictor(
    source: Any, profile: str, *, source_profile: str | None = None, min_samples: int = 8
) -> LatencyPredictor:
    """The predictor of ``profile`` fitted on measurements kept in ``source``.

    Args:
        source: A run directory (its ``artifacts/*/manifest.json`` measurements, else its
            ``predictors.json``), a ``predictors.json`` file, or one predictor's JSON
            (:meth:`LatencyPredictor.to_dict`).
        profile: The profile the predictor will serve (its name in the returned predictor).
        source_profile: The profile the measurements are stored under in ``source`` (default:
            ``profile``; a single predictor's JSON: whichever it holds).
        min_samples: Measurements needed; fewer raise.

    Raises:
        MeasurementError: the source is missing, unreadable, holds no measurements of the
            profile, or fewer than ``min_samples``; the message names the path and the fix.

    Example:
        >>> p = load_predictor("runs/arm-board", "edge-arm")  # doctest: +SKIP
        >>> p.is_ready  # doctest: +SKIP
        True
    """
    import json
    from pathlib import Path

    path = Path(source).expanduser()
    wanted = source_profile or profile
    state: Mapping[str, Any] | None = None
    count = 0
    if path.is_dir():
        p = LatencyPredictor.from_run_dirs([path], wanted, min_samples=min_samples)
        count = p.n_samples
        if count == 0 and (path / "predictors.json").is_file():
            path = path / "predictors.json"
        elif count == 0:
            raise MeasurementError(
                f"{str(path)!r} holds no measurements of profile {wanted!r} (no "
                f"artifacts/*/manifest.json measured on it, no predictors.json); point to the "
                f"run directory of a search that measured {wanted!r}"
            )
        else:
            state = p.to_dict()
    if state is None:
        if not path.is_file():
            raise MeasurementError(
                f"prediction source {str(path)!r} does not exist; give a run directory, its "
                f"predictors.json, or a latency predictor JSON file"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise MeasurementError(f"cannot read {str(path)!r} as JSON: {err}") from None
        if isinstance(data, Mapping) and data.get("format") == PREDICTORS_FORMAT:
            entry = (data.get("profiles") or {}).get(wanted)
            if not isinstance(entry, Mapping) or not entry.get("model"):
                have = sorted(data.get("profiles") or {})
                raise MeasurementError(
                    f"{str(path)!r} has no predictor of profile {wanted!r} (it has {have}); "
                    f"set source_profile to one of them"
                )
            state = entry["model"]
        elif isinstance(data, Mapping) and source_profile and data.get("profile") not in (
                None, source_profile):
            raise MeasurementError(
                f"{str(path)!r} is the predictor of profile {data.get('profile')!r}, not "
                f"{source_profile!r}"
            )
        else:
            state = data if isinstance(data, Mapping) else {}
    try:
        p = LatencyPredictor.from_dict({**state, "profile": profile, "min_samples": 2})
    except MeasurementError as err:
        raise MeasurementError(f"{str(path)!r}: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise MeasurementError(f"{str(path)!r} is not a valid latency predictor state "
                               f"({type(err).__name__}: {err})") from None
    p.min_samples = min_samples
    if not p.is_ready:
        raise MeasurementError(
            f"{str(path)!r} holds {p.n_samples} measurement(s) of profile {wanted!r}; the "
            f"predictor needs {min_samples} (prediction.min_samples): measure more candidates "
            f"there, or lower prediction.min_samples"
        )
    return p
