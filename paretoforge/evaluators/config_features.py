"""Predictor features of a candidate from its config alone, before it is built.

:func:`~paretoforge.evaluators.predictor.features_from` reads a built candidate's graph: its
multiply-accumulates, weight bytes and the node count ONNX Runtime dispatches. To pre-screen a
candidate the search needs the same numbers *before* building it. They follow from the kept
structure, exactly or nearly so:

* MACs per token are a constant (embeddings, classifier) plus a cost per kept attention head
  and per kept FFN neuron: linear in ``L*h`` and ``L*n`` (L layers, h heads, n neurons per
  layer; for a per-layer config the sums of its layers' heads and neurons), and the same at
  every precision;
* weight bytes are the matmul weights at the precision's width (4 bytes fp32, 2 fp16, 1 int8,
  0.625 int4: half a byte plus a float32 scale per block of 32) plus
  the rest (biases, norms, embeddings), linear in ``L``, ``L*h`` and ``L*n``;
* the dispatched node count grows by a fixed number of nodes per kept layer, a different one
  per precision (quantized matmuls bring their own nodes); heads and neurons shrink tensors,
  not the op count.

:class:`ConfigFeatureEstimator` learns these linear relations from the manifests of candidates
built so far in the same search (they are exact there, so a handful of candidates pins them
down; until one relation is determined for a config, a coarser one is used) and returns the
feature dict :func:`features_from` would return after the build. Its error is part of every
pre-build prediction and so of the prequential error the search reports.

Example:
    >>> est = ConfigFeatureEstimator()
    >>> est.add_manifest(manifest)  # doctest: +SKIP
    >>> est.features({"layers_kept": 2, "heads_kept": 1, "ffn_kept": 0.5,
    ...               "precision": "int8"}, profile="cpu-1t")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from paretoforge.evaluators.predictor import features_from, macs_by_precision

__all__ = ["BYTES_PER_WEIGHT", "ConfigFeatureEstimator"]

# Stored bytes of one matmul weight at each candidate precision.
BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int8-static": 1.0,
                    "int4": 0.5 + 4.0 / 32}


def _config_dict(config: Any) -> dict[str, Any]:
    return dict(config.model_dump(mode="json") if hasattr(config, "model_dump") else config)


def _per_layer(cfg: Mapping[str, Any], name: str) -> list[float]:
    """``cfg[name]`` for each kept layer: a per-layer list as is, a single value repeated."""
    v = cfg[name]
    if isinstance(v, (list, tuple)):
        return [float(x) for x in v]
    return [float(v)] * int(cfg["layers_kept"])


class ConfigFeatureEstimator:
    """Estimates :func:`features_from` of an unbuilt candidate from the built ones' manifests.

    Call :meth:`add_manifest` with each built candidate's manifest (any order; only manifests
    with a ``graph`` count), then :meth:`features` for a config. ``profile`` picks whose
    optimised node count (the manifest's ``placement[profile]``) is estimated; a profile no
    manifest has a placement for gets the first placement's, as :func:`features_from` does.

    Example:
        >>> est = ConfigFeatureEstimator()
        >>> est.features({"layers_kept": 1, "heads_kept": 1, "ffn_kept": 1.0,
        ...               "precision": "fp32"}) is None  # nothing built yet
        True
    """

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []  # one per manifest: config, width, quantities

    @property
    def n_manifests(self) -> int:
        return len(self._rows)

    def add_manifest(self, manifest: Mapping[str, Any]) -> bool:
        """Learn from one built candidate; returns whether the manifest had what is needed."""
        graph = manifest.get("graph")
        config = manifest.get("config")
        if not isinstance(graph, Mapping) or "node_count" not in graph or not config:
            return False
        cfg = _config_dict(config)
        plan = manifest.get("plan") or {}
        placement = manifest.get("placement") if isinstance(manifest.get("placement"),
                                                           Mapping) else {}
        base = features_from(manifest)
        nodes = {p: features_from(manifest, profile=p)["nodes"] for p in placement or {}}
        widths = plan.get("neurons_per_layer") or []
        self._rows.append({
            "config": cfg,
            "neurons": float(widths[0]) if widths else None,
            "ffn_first": _per_layer(cfg, "ffn_kept")[0],  # the fraction that gave widths[0]
            "macs": base["macs_per_token"],
            "bytes": base["weight_mbytes"] * 1e6,
            "nodes": nodes,
            "nodes_default": base["nodes"],
        })
        return True

    # -- structure ----------------------------------------------------------------------------

    def ffn_width(self) -> float | None:
        """The base model's FFN width per layer, from the built plans (None: unknown)."""
        full = [r["neurons"] for r in self._rows if r["neurons"] and r["ffn_first"] == 1.0]
        if full:
            return max(full)
        guesses = [r["neurons"] / r["ffn_first"] for r in self._rows
                   if r["neurons"] and r["ffn_first"] > 0]
        return float(round(max(guesses))) if guesses else None

    def _terms(self, cfg: Mapping[str, Any], width: float | None) -> dict[str, float]:
        layers = float(cfg["layers_kept"])
        # The plan keeps max(1, round(fraction * width)) neurons per layer (surgery.py); a
        # per-layer config sums its layers' heads and neurons.
        neurons = [max(1.0, float(round(f * width))) if width else f
                   for f in _per_layer(cfg, "ffn_kept")]
        int8 = 1.0 if str(cfg["precision"]).startswith("int8") else 0.0
        return {"one": 1.0, "L": layers, "Lh": sum(_per_layer(cfg, "heads_kept")),
                "Ln": sum(neurons), "int8": int8, "int8L": int8 * layers}

    # -- estimate -----------------------------------------------------------------------------

    def features(self, config: Any, profile: str | None = None) -> dict[str, float] | None:
        """The features :func:`features_from` would give once ``config`` is built, or None
        when no candidate has been built yet."""
        if not self._rows:
            return None
        cfg = _config_dict(config)
        width = self.ffn_width()
        q = self._terms(cfg, width)
        rows = [(r, self._terms(r["config"], width)) for r in self._rows]
        precision = str(cfg["precision"])
        same = [(r, t) for r, t in rows if str(r["config"]["precision"]) == precision]

        macs = _first_determined(rows, q, lambda r: r["macs"],
                                 [("one", "Lh", "Ln"), ("one", "Lh"), ("one",)])
        bpw = BYTES_PER_WEIGHT.get(precision, 4.0)
        other = _first_determined(
            rows, q, lambda r: r["bytes"] - BYTES_PER_WEIGHT.get(
                str(r["config"]["precision"]), 4.0) * r["macs"],
            [("one", "L", "Lh", "Ln"), ("one", "L"), ("one",)])

        def nodes_of(r: dict[str, Any]) -> float:
            if profile is not None and profile in r["nodes"]:
                return float(r["nodes"][profile])
            return float(r["nodes_default"])

        nodes = (_first_determined(same, q, nodes_of, [("one", "L")])
                 if same else None)
        if nodes is None:
            nodes = _first_determined(rows, q, nodes_of,
                                      [("one", "L", "int8", "int8L"), ("one", "L"), ("one",)])
        assert macs is not None and other is not None and nodes is not None  # ("one",) always
        int8 = q["int8"]
        macs = max(macs, 0.0)
        return {
            "macs_per_token": macs,
            **macs_by_precision(macs, precision),
            "heads": q["Lh"],
            "layers": q["L"],
            "nodes": max(nodes, 0.0),
            "weight_mbytes": max(other + bpw * macs, 0.0) / 1e6,
            "int8": int8,
        }


def _first_determined(rows: Sequence[tuple[dict[str, Any], dict[str, float]]],
                      query: Mapping[str, float], value: Callable[[dict[str, Any]], float],
                      term_sets: Sequence[Sequence[str]]) -> float | None:
    """The least-squares estimate with the first term set that the rows determine for
    ``query`` (the query lies in the span of the rows' terms), else None."""
    if not rows:
        return None
    ys = [value(r) for r, _ in rows]
    for terms in term_sets:
        x = [[t[name] for name in terms] for _, t in rows]
        out = _solve(x, ys, [query[name] for name in terms])
        if out is not None:
            return out
    return None


def _solve(x: list[list[float]], y: list[float], q: list[float]) -> float | None:
    import numpy as np

    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    v = np.asarray(q, dtype=np.float64)
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    a, v = a / scale, v / scale
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    # Determined: the query is a combination of seen rows, so every exact fit agrees on it.
    proj = v @ np.linalg.pinv(a) @ a
    if np.linalg.norm(proj - v) > 1e-6 * max(1.0, float(np.linalg.norm(v))):
        return None
    return float(v @ coef)
