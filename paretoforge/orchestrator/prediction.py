"""Latency predictors inside a search: fitted as it goes, scored on what they had not seen.

Every measured profile has a :class:`~paretoforge.evaluators.predictor.LatencyPredictor` fed
with that profile's own measurements, one built candidate at a time. Before a candidate's
measurement is added, the predictor predicts it from the candidate's config alone (features
estimated by :class:`~paretoforge.evaluators.config_features.ConfigFeatureEstimator`, exactly
what a pre-screen would have seen): the absolute percentage error of that prediction is a
*prequential* held-out error, so the reported MAPE is never measured on training data.

A profile listed under ``prediction.profiles`` in the spec is not measured at all: its
predictor is fitted on measurements taken earlier on that hardware (a run directory or a
predictor file), its held-out error is a 5-fold cross-validation on those measurements, and
each built candidate gets ``latency_p50_ms@<profile>`` predicted from its graph.

With ``search.prescreen`` on, :meth:`SearchPredictors.screen` decides, before a sampled
candidate is built, whether it is predicted to violate a latency constraint, or to be
dominated by a trial already measured, by more than a safety margin of
``max(10%, 2 x held-out MAPE)``.

``<run>/predictors.json`` holds, per profile, the number of measurements, the held-out error
and the fitted model (:meth:`LatencyPredictor.to_dict`); it is rewritten atomically after
every built candidate and rebuilt from the manifests when a search resumes.

Example:
    >>> preds = SearchPredictors(spec, run_dir)  # doctest: +SKIP
    >>> preds.observe(manifest)  # doctest: +SKIP
    >>> preds.screen(cfg, done)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paretoforge._io import atomic_write_json
from paretoforge.evaluators.config_features import ConfigFeatureEstimator
from paretoforge.evaluators.predictor import (
    PREDICTORS_FORMAT,
    LatencyPredictor,
    cross_validated_error,
    features_from,
    load_predictor,
)
from paretoforge.exceptions import MeasurementError, SpecError
from paretoforge.names import TrialAttr
from paretoforge.spec import Spec, parse_metric
from paretoforge.tasks import task_metrics

__all__ = ["PREDICTED_METRIC", "Screen", "SearchPredictors", "predictor_lines",
           "read_predictors"]

# The latency a predictor serves (the median: the latency objectives' usual choice).
PREDICTED_METRIC = "latency_p50_ms"
# Held-out errors needed before a predictor's margin is trusted for pre-screening.
MIN_HELD_OUT = 3
MIN_MARGIN = 0.10


@dataclass(frozen=True)
class Screen:
    """Why a candidate is skipped before it is built, and what was predicted for it."""

    reason: str
    predicted: dict[str, float]


def read_predictors(run_dir: str | Path) -> dict[str, Any]:
    """``<run>/predictors.json`` as a dict (``{}`` when the run has none)."""
    import json

    path = Path(run_dir) / "predictors.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == PREDICTORS_FORMAT else {}


def predictor_lines(predictors: Mapping[str, Any]) -> list[str]:
    """One line per profile of ``predictors.json``: what its predictor serves, on how many
    measurements, and its held-out error.

    Example:
        >>> predictor_lines({"cpu-1t": {"kind": "measured", "n_samples": 12, "held_out": {
        ...     "method": "prequential: ...", "n": 8, "mape": 0.031, "within_10pct": 0.875}}})
        ['latency predictor cpu-1t: measured; 12 measurement(s); held-out MAPE 3.1%, 88% within +-10% (n=8, prequential)']
    """  # noqa: E501
    lines = []
    for name, p in sorted(predictors.items()):
        ho = p.get("held_out") or {}
        kind = "measured"
        if p.get("kind") == "predicted":
            kind = f"predicted from {p.get('source')}"
            if p.get("source_profile") not in (None, name):
                kind += f" (its profile {p['source_profile']})"
        if ho.get("mape") is None:
            err = "no held-out measurement yet"
        else:
            method = str(ho.get("method", "")).split(":")[0].split(" on ")[0]
            err = (f"held-out MAPE {100 * ho['mape']:.1f}%, {100 * ho['within_10pct']:.0f}% "
                   f"within +-10% (n={ho['n']}, {method})")
        lines.append(f"latency predictor {name}: {kind}; {p.get('n_samples', 0)} "
                     f"measurement(s); {err}")
    return lines


class SearchPredictors:
    """The per-profile latency predictors of one search; see the module docstring.

    Args:
        spec: The search spec (measured profiles, ``prediction`` section, constraints).
        run_dir: Where ``predictors.json`` is written.

    Raises:
        SpecError: a ``prediction.profiles`` source cannot serve its profile.
    """

    def __init__(self, spec: Spec, run_dir: str | Path) -> None:
        self.spec = spec
        self.run_dir = Path(run_dir)
        n = spec.prediction.min_samples
        self.measured = {p: LatencyPredictor(p, min_samples=n) for p in spec.measured_profiles}
        self.errors: dict[str, list[float]] = {p: [] for p in self.measured}
        self.predicted: dict[str, LatencyPredictor] = {}
        self.source_error: dict[str, dict[str, float]] = {}
        for name, entry in spec.prediction.profiles.items():
            try:
                pred = load_predictor(entry.source, name, source_profile=entry.source_profile,
                                      min_samples=n)
            except MeasurementError as e:
                raise SpecError(f"prediction.profiles.{name}.source: {e}") from None
            self.predicted[name] = pred
            if pred.n_samples >= MIN_HELD_OUT:  # else no held-out error: never pre-screened
                self.source_error[name] = cross_validated_error(pred)
        self.estimator = ConfigFeatureEstimator()
        self._seen: set[str] = set()

    # -- learning ----------------------------------------------------------------------------

    def observe(self, manifest: Mapping[str, Any]) -> dict[str, float]:
        """Learn from one built candidate (each config once); returns its prequential errors.

        Each measured profile's predictor first predicts the measurement from the config
        alone (when it is ready), then adds it. Manifests without a graph (stand-in workers)
        are ignored.
        """
        key = str(manifest.get("key"))
        if key in self._seen or not isinstance(manifest.get("graph"), Mapping):
            return {}
        self._seen.add(key)
        cfg = manifest.get("config") or {}
        out: dict[str, float] = {}
        for name, pred in self.measured.items():
            m = (manifest.get("measurements") or {}).get(name)
            if not isinstance(m, Mapping) or m.get("predicted") or not m.get("p50_ms"):
                continue
            if pred.is_ready:
                feats = self.estimator.features(cfg, profile=name)
                if feats is not None:
                    y = float(m["p50_ms"])
                    out[name] = abs(pred.predict(feats)[0] - y) / y
                    self.errors[name].append(out[name])
            pred.add_manifest(manifest)
        self.estimator.add_manifest(manifest)
        return out

    # -- predicting --------------------------------------------------------------------------

    def _placement_key(self, name: str) -> str | None:
        """Whose optimised node count stands for a predicted profile's: the source profile's
        when this search measures it too, else the first measured profile's."""
        entry = self.spec.prediction.profiles.get(name)
        source = (entry.source_profile if entry is not None else None) or name
        return source if source in self.measured else None

    def predicted_metrics(self, manifest: Mapping[str, Any]) -> dict[str, float]:
        """``latency_p50_ms@<profile>`` of every predicted profile, from the built graph.

        Raises:
            MeasurementError: the manifest has no graph to predict from.
        """
        out = {}
        for name, pred in self.predicted.items():
            if not isinstance(manifest.get("graph"), Mapping):
                raise MeasurementError(
                    f"profile {name!r} is predicted from the candidate's graph, and its "
                    f"manifest has none (a worker that writes no manifest cannot serve "
                    f"prediction.profiles)"
                )
            feats = features_from(manifest, profile=self._placement_key(name))
            out[f"{PREDICTED_METRIC}@{name}"] = pred.predict(feats)[0]
        return out

    def predict_config(self, config: Any, profile: str) -> float | None:
        """``profile``'s median latency predicted from the config alone, or None (the
        predictor is not ready, or nothing is built yet)."""
        pred = self.measured.get(profile) or self.predicted.get(profile)
        if pred is None or not pred.is_ready:
            return None
        key = profile if profile in self.measured else self._placement_key(profile)
        feats = self.estimator.features(config, profile=key)
        return None if feats is None else pred.predict(feats)[0]

    def held_out(self, profile: str) -> dict[str, Any] | None:
        """The held-out error of ``profile``'s predictor: ``{method, n, mape, within_10pct,
        max_ape}``; mape etc. are None while there is no held-out measurement."""
        if profile in self.predicted and profile not in self.source_error:
            return {"method": "none: too few source measurements to hold any out", "n": 0,
                    "mape": None, "within_10pct": None, "max_ape": None}
        if profile in self.source_error:
            e = self.source_error[profile]
            return {"method": f"{int(e['folds'])}-fold cross-validation on the source's "
                              f"measurements", "n": int(e["n"]), "mape": e["mape"],
                    "within_10pct": e["within_10pct"], "max_ape": e["max_ape"]}
        if profile not in self.errors:
            return None
        errs = self.errors[profile]
        n = len(errs)
        return {"method": "prequential: predicted from the config before it was built, then "
                          "measured",
                "n": n, "mape": sum(errs) / n if n else None,
                "within_10pct": sum(e <= 0.10 for e in errs) / n if n else None,
                "max_ape": max(errs) if n else None}

    def margin(self, profile: str) -> float | None:
        """The pre-screen's safety margin for ``profile``: max(10%, 2 x held-out MAPE), or
        None while fewer than 3 held-out errors are known."""
        ho = self.held_out(profile)
        if ho is None or ho["n"] < MIN_HELD_OUT or ho["mape"] is None:
            return None
        return max(MIN_MARGIN, 2.0 * float(ho["mape"]))

    # -- pre-screening -----------------------------------------------------------------------

    def screen(self, config: Any, done: Iterable[Any]) -> Screen | None:
        """A :class:`Screen` when ``config`` should not be built, else None.

        Skipped when, by more than :meth:`margin`, its predicted median latency on a profile
        (a) violates a constraint on ``latency_p50_ms@<profile>``, or (b) is slower than that
        of a completed feasible trial in ``done`` (FrozenTrials) with the same precision and
        at least as many layers, heads and FFN neurons -- a model at least as large, so
        expected at least as good in quality -- on every latency objective, when the other
        objectives are quality metrics to maximize (for sizes, the larger model is worse, so
        no such trial dominates).
        """
        cfg = dict(config.model_dump(mode="json") if hasattr(config, "model_dump") else config)
        predicted: dict[str, float] = {}
        margins: dict[str, float] = {}

        def predict(metric: str) -> bool:
            base, profile = parse_metric(metric)
            if base != PREDICTED_METRIC or profile is None:
                return False
            if metric not in predicted:
                value, margin = self.predict_config(cfg, profile), self.margin(profile)
                if value is None or margin is None:
                    return False
                predicted[metric], margins[metric] = value, margin
            return True

        for c in self.spec.constraints:
            if not predict(c.metric):
                continue
            v, m = predicted[c.metric], margins[c.metric]
            if c.max is not None and v > c.max * (1 + m):
                return Screen(f"predicted {c.metric} = {v:.4g} ms violates the constraint "
                              f"<= {c.max:g} by more than the margin {m:.0%}", predicted)
            if c.min is not None and v < c.min * (1 - m):
                return Screen(f"predicted {c.metric} = {v:.4g} ms violates the constraint "
                              f">= {c.min:g} by more than the margin {m:.0%}", predicted)

        latency = []
        for o in self.spec.objectives:
            if o.metric in task_metrics() and o.direction == "maximize":
                continue
            if o.direction == "minimize" and predict(o.metric):
                latency.append(o.metric)
                continue
            return None  # an objective no prediction speaks for: rule (b) does not apply
        if not latency:
            return None
        for t in done:
            other = t.user_attrs.get(TrialAttr.CONFIG) or {}
            metrics = t.user_attrs.get(TrialAttr.METRICS) or {}
            if not _at_least_as_large(other, cfg) or other == cfg:
                continue
            if any(c > 0 for c in (t.user_attrs.get(TrialAttr.CONSTRAINTS) or [])):
                continue
            if all(m in metrics and metrics[m] < predicted[m] * (1 - margins[m])
                   for m in latency):
                faster = "; ".join(f"{m}: {metrics[m]:.4g} ms vs predicted {predicted[m]:.4g}"
                                   f" ms" for m in latency)
                return Screen(f"predicted dominated by trial {t.number} (same precision, at "
                              f"least as large: {_short(other)}), faster by more than the "
                              f"margin {max(margins[m] for m in latency):.0%} ({faster})",
                              predicted)
        return None

    # -- persistence -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        profiles: dict[str, Any] = {}
        for name, pred in self.measured.items():
            profiles[name] = {"kind": "measured", "metric": PREDICTED_METRIC,
                              "n_samples": pred.n_samples, "min_samples": pred.min_samples,
                              "held_out": self.held_out(name), "model": pred.to_dict()}
        for name, pred in self.predicted.items():
            entry = self.spec.prediction.profiles[name]
            profiles[name] = {"kind": "predicted", "metric": PREDICTED_METRIC,
                              "source": entry.source,
                              "source_profile": entry.source_profile or name,
                              "n_samples": pred.n_samples, "min_samples": pred.min_samples,
                              "held_out": self.held_out(name), "model": pred.to_dict()}
        return {"format": PREDICTORS_FORMAT, "profiles": profiles,
                "config_features": {"built_candidates": self.estimator.n_manifests}}

    def save(self) -> None:
        """Write ``<run>/predictors.json`` atomically."""
        atomic_write_json(self.run_dir / "predictors.json", self.to_json())


def _at_least_as_large(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether config ``a`` keeps at least as much as ``b`` everywhere, at the same precision."""
    try:
        return (a.get("precision") == b.get("precision")
                and all(float(a[k]) >= float(b[k])
                        for k in ("layers_kept", "heads_kept", "ffn_kept")))
    except (KeyError, TypeError, ValueError):
        return False


def _short(cfg: Mapping[str, Any]) -> str:
    return (f"layers={cfg.get('layers_kept')} heads={cfg.get('heads_kept')} "
            f"ffn={cfg.get('ffn_kept')} {cfg.get('precision')}")
