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

A predictor is transferred only between machines that agree: before a search starts,
:func:`check_transfers` compares the machine each ``prediction.profiles`` source was measured
on (``env.machine`` of its measurements: instruction-set features and calibration) with every
node of the cluster that is that profile's hardware (any node for ``resource: null``, the
nodes carrying its resource otherwise), and refuses when they differ
(:func:`paretoforge._sysinfo.machine_differences`, within the entry's ``transfer_tolerance``)
unless the entry says ``allow_transfer: true``. What was compared, and the verdict, is
recorded as the profile's ``transfer`` in ``predictors.json``: a transferred prediction says
where it came from.

``<run>/predictors.json`` holds, per profile, the number of measurements, the held-out error,
the fitted model (:meth:`LatencyPredictor.to_dict`), the machines a measured profile's
measurements came from (``machines``) and a predicted profile's ``transfer``; it is rewritten
atomically after every built candidate and rebuilt from the manifests when a search resumes.

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
from paretoforge._sysinfo import machine_differences
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

__all__ = ["PREDICTED_METRIC", "Screen", "SearchPredictors", "check_transfers",
           "cluster_machines", "predictor_lines", "read_predictors", "source_machines",
           "transfer_record"]

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
            verdict = (p.get("transfer") or {}).get("verdict")
            if verdict:
                kind += f", {verdict}"
        if ho.get("mape") is None:
            err = "no held-out measurement yet"
        else:
            method = str(ho.get("method", "")).split(":")[0].split(" on ")[0]
            err = (f"held-out MAPE {100 * ho['mape']:.1f}%, {100 * ho['within_10pct']:.0f}% "
                   f"within +-10% (n={ho['n']}, {method})")
        lines.append(f"latency predictor {name}: {kind}; {p.get('n_samples', 0)} "
                     f"measurement(s); {err}")
    return lines

# -- machines --------------------------------------------------------------------------------

_MACHINE_KEYS = ("cpu_model", "arch", "isa", "physical_cores", "logical_cores", "fingerprint",
                 "calibration")


def _machine_of(measurement: Any) -> dict[str, Any] | None:
    env = measurement.get("env") if isinstance(measurement, Mapping) else None
    m = env.get("machine") if isinstance(env, Mapping) else None
    if not isinstance(m, Mapping) or not m.get("fingerprint"):
        return None
    return {k: m[k] for k in _MACHINE_KEYS if k in m}


def _add_machine(machines: dict[str, dict[str, Any]], m: dict[str, Any] | None) -> None:
    """Keep one record per kind of CPU, the first one with a calibration."""
    if m is None:
        return
    have = machines.get(m["fingerprint"])
    if have is None or (not have.get("calibration") and m.get("calibration")):
        machines[m["fingerprint"]] = m


def source_machines(source: str | Path, profile: str) -> list[dict[str, Any]]:
    """The machines the measurements of ``profile`` in ``source`` came from (one per kind of
    CPU); empty where the source does not say (a single predictor file, an old run).

    Args:
        source: A run directory, its ``predictors.json``, or a predictor JSON file.
        profile: The profile the measurements are stored under there.
    """
    import json

    path = Path(source).expanduser()
    machines: dict[str, dict[str, Any]] = {}
    if path.is_dir():
        for f in sorted(path.glob("artifacts/*/manifest.json")):
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            _add_machine(machines, _machine_of((data.get("measurements") or {}).get(profile)))
        if machines:
            return list(machines.values())
        path = path / "predictors.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    entry = (data.get("profiles") or {}).get(profile) if isinstance(data, Mapping) else None
    listed = (entry or {}).get("machines") if isinstance(entry, Mapping) else None
    if listed is None and isinstance(data, Mapping):
        listed = data.get("machines")
    return [dict(m) for m in listed or [] if isinstance(m, Mapping) and m.get("fingerprint")]


def _target_nodes(profile: Any, resources: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The nodes that are ``profile``'s hardware: every node for ``resource: null``, else the
    nodes carrying its resource."""
    if profile.resource is None or profile.resource == "CPU":
        return sorted(resources)
    return sorted(n for n, r in resources.items() if float(r.get(profile.resource, 0)) > 0)


def transfer_record(name: str, entry: Any, machines: Mapping[str, Mapping[str, Any]],
                    resources: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Compare where predicted profile ``name``'s source was measured with the cluster.

    Args:
        name: The predicted profile.
        entry: Its :class:`~paretoforge.spec.PredictedProfileSpec`.
        machines: Node id -> :func:`~paretoforge._sysinfo.machine_identity` of the node.
        resources: Node id -> the node's Ray resources.

    Returns:
        ``{"source", "source_profile", "source_machines", "nodes", "differences", "refused",
        "verdict"}``: ``differences`` maps each node of the profile's hardware that differs to
        how (and ``"requires"`` to the required features the source machine lacks);
        ``refused`` is True when some differ and ``allow_transfer`` is off.
    """
    from paretoforge.hw_profiles import get_profile

    profile = get_profile(name)
    wanted = entry.source_profile or name
    sources = source_machines(entry.source, wanted)
    nodes = [n for n in _target_nodes(profile, resources)
             if n in machines and "error" not in machines[n]]
    differences: dict[str, list[str]] = {}
    if sources:
        for nid in nodes:
            # the closest source machine speaks for the node
            diffs = min((machine_differences(m, machines[nid],
                                             tolerance=entry.transfer_tolerance)
                         for m in sources), key=len)
            if diffs:
                differences[nid] = diffs
        lacking = sorted({f for m in sources for f in profile.missing_features(m.get("isa"))})
        if profile.requires and lacking:
            differences["requires"] = [f"the source machine lacks {', '.join(lacking)}, which "
                                       f"profile {name!r} requires"]
    src = ", ".join(f"{m.get('fingerprint')} ({m.get('cpu_model')})" for m in sources)
    if not sources:
        verdict = "source machine not recorded: not compared"
    elif differences:
        verdict = (f"measured on {src}, transferred to differing machines (allow_transfer)"
                   if entry.allow_transfer else f"measured on {src}: refused")
    elif nodes:
        verdict = f"measured on {src}, the same machine as {len(nodes)} node(s) here"
    else:
        verdict = f"measured on {src}; no node here is that hardware, not compared"
    return {"source": entry.source, "source_profile": wanted, "source_machines": sources,
            "nodes": {n: machines[n].get("fingerprint") for n in nodes},
            "differences": differences, "allowed": entry.allow_transfer,
            "refused": bool(differences) and not entry.allow_transfer, "verdict": verdict}


def check_transfers(spec: Spec, machines: Mapping[str, Mapping[str, Any]],
                    resources: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """:func:`transfer_record` of every ``prediction.profiles`` entry; raise on a refusal.

    Raises:
        SpecError: a source was measured on a machine that differs from the nodes that are
            its profile's hardware, and the entry does not set ``allow_transfer: true``; one
            line naming the profile, the node, the differences and both fixes.
    """
    out = {}
    for name, entry in spec.prediction.profiles.items():
        rec = transfer_record(name, entry, machines, resources)
        if rec["refused"]:
            where, diffs = next(iter(rec["differences"].items()))
            whom = "" if where == "requires" else f" than node {where[:12]} ("
            what = "; ".join(diffs)
            raise SpecError(
                f"prediction.profiles.{name}: the source {entry.source!r} was measured on a "
                f"different machine{whom}{what}{')' if whom else ''}; its latencies do not "
                f"carry over. Measure {name!r} here instead (drop it from prediction.profiles), "
                f"point to a run measured on this hardware, or set prediction.profiles.{name}."
                f"allow_transfer: true (or a larger transfer_tolerance than "
                f"{entry.transfer_tolerance:g})"
            )
        out[name] = rec
    return out


def cluster_machines() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """Each alive node's machine identity and Ray resources (Ray must be initialised)."""
    import ray

    from paretoforge.hw_profiles.doctor import node_machines

    resources = {n["NodeID"]: dict(n.get("Resources", {})) for n in ray.nodes()
                 if n.get("Alive")}
    return node_machines(), resources


class SearchPredictors:
    """The per-profile latency predictors of one search; see the module docstring.

    Args:
        spec: The search spec (measured profiles, ``prediction`` section, constraints).
        run_dir: Where ``predictors.json`` is written.
        machines: ``(node id -> machine identity, node id -> Ray resources)`` of the cluster
            the search runs on, for :func:`check_transfers`; default: asked of Ray when it is
            initialised and a profile is predicted, else nothing is compared.

    Raises:
        SpecError: a ``prediction.profiles`` source cannot serve its profile, or was measured
            on a machine that differs from this cluster's (:func:`check_transfers`).
    """

    def __init__(self, spec: Spec, run_dir: str | Path, *,
                 machines: tuple[Mapping[str, Mapping[str, Any]],
                                 Mapping[str, Mapping[str, float]]] | None = None) -> None:
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
        if machines is None and spec.prediction.profiles:
            import sys

            ray = sys.modules.get("ray")
            if ray is not None and ray.is_initialized():
                machines = cluster_machines()
        self.transfers = check_transfers(spec, *(machines or ({}, {})))
        self.machines: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in self.measured}
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
            _add_machine(self.machines[name], _machine_of(m))
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
                              "held_out": self.held_out(name), "model": pred.to_dict(),
                              "machines": list(self.machines[name].values())}
        for name, pred in self.predicted.items():
            entry = self.spec.prediction.profiles[name]
            profiles[name] = {"kind": "predicted", "metric": PREDICTED_METRIC,
                              "source": entry.source,
                              "source_profile": entry.source_profile or name,
                              "n_samples": pred.n_samples, "min_samples": pred.min_samples,
                              "held_out": self.held_out(name), "model": pred.to_dict(),
                              "transfer": self.transfers.get(name)}
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
