"""Contracts every registered component keeps, as checks a test suite runs over a registry.

A suite parametrises over the registry's names when it is collected, so an entry registered
later (a model family, a hardware profile, a search-space preset) is checked with no test of
its own::

    @pytest.mark.parametrize("name", PROFILES.names())
    def test_profile_contract(name):
        check_profile(PROFILES.get(name))

Each ``check_*`` function raises :class:`ContractError` (an ``AssertionError``, so pytest
reports it as a failed check) whose message names the entry and the broken rule; the checks do
not use ``assert``, which ``python -O`` strips.

* Family adapters (:data:`paretoforge.models.adapters.ADAPTERS`): a tiny random model of the
  family (:meth:`~paretoforge.models.families.FamilyAdapter.tiny_config`) builds; pruning
  nothing changes nothing; pruning a head, half the FFN neurons and a layer shrinks the shapes,
  runs, and saves and loads exactly; the ONNX export equals PyTorch within ``1e-4``.
* Hardware profiles (:data:`paretoforge.hw_profiles.PROFILES`): frozen, JSON round-trip, its
  registered name, Ray options Ray accepts, precisions the kernels build, sane threads and
  batch; :func:`measure_tiny` runs the latency protocol on a tiny ONNX model.
* Search-space presets (:data:`paretoforge.search_spaces.SPACES`): dimensions validate, a
  suggested config has a stable key, the unpruned base is in the space.

Example:
    >>> from paretoforge.hw_profiles import PROFILES
    >>> from paretoforge.testing.contracts import check_profile
    >>> for name in PROFILES.names():
    ...     check_profile(PROFILES.get(name), registered_as=name)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from paretoforge.evaluators.latency import Measurement
    from paretoforge.hw_profiles import HardwareProfile

__all__ = [
    "ContractError",
    "check_family_builds",
    "check_family_exports",
    "check_family_identity_prune",
    "check_family_prune",
    "check_profile",
    "check_space_base_in_space",
    "check_space_preset",
    "check_space_suggest",
    "check_task",
    "check_task_data",
    "measure_tiny",
    "tiny_inputs",
    "tiny_model",
]

#: Tolerance of ONNX fp32 against PyTorch on the same inputs.
ONNX_ATOL = 1e-4
_TINY_SEQ = 12  # tokens per sample of tiny text inputs


class ContractError(AssertionError):
    """A registered component breaks a rule every component of its kind keeps."""


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise ContractError(message)


# -- model family adapters ------------------------------------------------------------------------


def tiny_model(family: str, *, seed: int = 0) -> nn.Module:
    """A tiny random model of the registered ``family`` (its adapter's tiny config), in eval mode.

    The architecture is the config's, else the adapter's first (the bare encoder or decoder,
    or the image classifier).
    """
    import torch

    from paretoforge.models.adapters import ADAPTERS

    adapter = ADAPTERS.get(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = adapter.build(adapter.tiny_config())
    return model.eval()


def tiny_inputs(model: nn.Module, batch: int, *, seed: int) -> dict[str, torch.Tensor]:
    """Inputs for ``model`` in its adapter's input order: random images, or token ids with
    right padding of varied length (the first row full) and their attention mask."""
    import torch

    from paretoforge.models.adapters import adapter_for

    adapter, config = adapter_for(model), model.config
    g = torch.Generator().manual_seed(seed)
    if "pixel_values" in adapter.input_names:
        size = int(config.image_size)
        return {"pixel_values": torch.rand(batch, int(config.num_channels), size, size,
                                           generator=g)}  # fmt: skip
    pad = int(getattr(config, "pad_token_id", None) or 0)
    ids = torch.randint(3, int(config.vocab_size), (batch, _TINY_SEQ), generator=g)
    lengths = torch.randint(3, _TINY_SEQ + 1, (batch,), generator=g)
    lengths[0] = _TINY_SEQ
    mask = (torch.arange(_TINY_SEQ)[None, :] < lengths[:, None]).long()  # (B, T)
    feeds = {"input_ids": ids.masked_fill(mask == 0, pad), "attention_mask": mask}
    unknown = sorted(set(adapter.input_names) - set(feeds))
    _expect(not unknown, f"{type(adapter).__name__}: the contract suite cannot make inputs "
                         f"{unknown}; teach paretoforge.testing.contracts.tiny_inputs them")
    return {name: feeds[name] for name in adapter.input_names}


def _forward(model: nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
    import torch

    from paretoforge.kernels.export import default_output_fn

    with torch.no_grad():
        return default_output_fn(model.eval()(**inputs)).numpy()


def _shapes(model: nn.Module) -> tuple[list[int], list[int]]:
    from paretoforge.models.adapters import adapter_for

    adapter = adapter_for(model)
    hd = adapter.head_dim(model)
    layers = adapter.layers(model)
    return ([adapter.num_heads(layer, hd) for layer in layers],
            [adapter.ffn_width(layer) for layer in layers])  # fmt: skip


def check_family_builds(family: str) -> nn.Module:
    """The tiny model builds, the adapter finds its parts, and a forward pass runs.

    Returns:
        The tiny model.
    """
    from paretoforge.models.adapters import ADAPTERS, adapter_for, in_features, out_features

    model = tiny_model(family)
    adapter = ADAPTERS.get(family)
    _expect(model.config.model_type == family,
            f"family {family!r}: its tiny config has model_type {model.config.model_type!r}")
    _expect(adapter_for(model) is adapter, f"family {family!r}: adapter_for(tiny model) is not "
                                           f"the registered {type(adapter).__name__}")
    hd = adapter.head_dim(model)
    layers = adapter.layers(model)
    _expect(len(layers) >= 2, f"family {family!r}: the tiny model needs >= 2 layers to drop one")
    for i, layer in enumerate(layers):
        heads = adapter.num_heads(layer, hd)
        _expect(heads >= 2, f"family {family!r}: layer {i} of the tiny model has {heads} head(s); "
                            "it needs >= 2 to drop one")
        per = adapter.unit_heads(layer, hd)  # heads per unit (a GQA group: q_per_kv in q)
        for proj, k in zip(adapter.head_projections(layer), per, strict=True):
            _expect(out_features(proj) == adapter.head_sections * heads * k * hd,
                    f"family {family!r}: head projection of layer {i} has {out_features(proj)} "
                    f"outputs, not head_sections * heads * unit_heads * head_dim")
        _expect(in_features(adapter.out_projection(layer)) == heads * per[0] * hd,
                f"family {family!r}: the output projection of layer {i} does not take "
                f"heads * unit_heads * head_dim inputs")
        up, down = adapter.ffn(layer)
        _expect(all(out_features(p) == adapter.ffn_width(layer)
                    for p in adapter.ffn_inputs(layer)) and in_features(down) == out_features(up),
                f"family {family!r}: FFN up (gate) and down of layer {i} disagree on the width")
    out = _forward(model, tiny_inputs(model, 2, seed=0))
    _expect(out.shape[0] == 2, f"family {family!r}: output batch axis is {out.shape}")
    return model


def check_family_identity_prune(family: str) -> None:
    """Pruning with the plan that keeps everything changes neither shapes nor outputs."""
    import numpy as np

    from paretoforge.models.surgery import identity_plan, prune

    model = tiny_model(family)
    same = prune(model, identity_plan(model))
    _expect(_shapes(same) == _shapes(model), f"family {family!r}: the identity plan changed "
                                             f"shapes {_shapes(model)} -> {_shapes(same)}")
    x = tiny_inputs(model, 3, seed=1)
    diff = float(np.abs(_forward(same, x) - _forward(model, x)).max())
    _expect(diff <= 1e-6, f"family {family!r}: the identity plan changed outputs by {diff:.2e}")


def _shrink_plan(model: nn.Module) -> Any:
    """Keep layer 0 only (drop the others), drop its head 1, keep every other FFN neuron."""
    from paretoforge.models.surgery import PrunePlan

    heads, widths = _shapes(model)
    return PrunePlan(
        layers=(0,),
        heads=(tuple(h for h in range(heads[0]) if h != 1),),
        neurons=(tuple(range(0, widths[0], 2)),),
    )


def check_family_prune(family: str, directory: str | os.PathLike[str]) -> nn.Module:
    """Pruning a head, half the FFN neurons and a layer shrinks the model; it runs, and it
    saves and loads exactly through :mod:`paretoforge.models.io`.

    Args:
        family: Registered family name.
        directory: An empty directory for the checkpoint.

    Returns:
        The pruned model.
    """
    import numpy as np

    from paretoforge.models.io import load_pretrained, save_pretrained
    from paretoforge.models.surgery import prune

    model = tiny_model(family)
    heads, widths = _shapes(model)
    plan = _shrink_plan(model)
    pruned = prune(model, plan)
    want = ([heads[0] - 1], [len(plan.neurons[0])])
    _expect(_shapes(pruned) == want,
            f"family {family!r}: pruned shapes {_shapes(pruned)}, expected {want}")
    _expect(_shapes(model) == (heads, widths), f"family {family!r}: pruning changed the original")
    _expect(pruned.config.num_hidden_layers == 1,
            f"family {family!r}: config.num_hidden_layers is {pruned.config.num_hidden_layers}")
    x = tiny_inputs(model, 3, seed=2)
    out = _forward(pruned, x)
    _expect(out.shape == _forward(model, x).shape,
            f"family {family!r}: pruning changed the output shape")
    _expect(bool(np.isfinite(out).all()), f"family {family!r}: pruned outputs are not finite")
    save_pretrained(pruned, directory)
    loaded = load_pretrained(directory)
    _expect(type(loaded) is type(pruned), f"family {family!r}: reloaded as {type(loaded)}")
    _expect(_shapes(loaded) == want, f"family {family!r}: reloaded shapes {_shapes(loaded)}")
    ref, got = pruned.state_dict(), loaded.state_dict()
    _expect(ref.keys() == got.keys(), f"family {family!r}: reloaded state dict keys differ")
    _expect(all(bool((ref[k] == got[k]).all()) for k in ref),
            f"family {family!r}: reloaded weights differ")
    _expect(bool((_forward(loaded, x) == out).all()),
            f"family {family!r}: the reloaded model computes other outputs")
    return pruned


def check_family_exports(family: str, directory: str | os.PathLike[str]) -> None:
    """The pruned tiny model exports to ONNX, and ONNX Runtime equals PyTorch within
    :data:`ONNX_ATOL` on other inputs (batch size and padding) than the export's."""
    import numpy as np
    import onnxruntime as ort

    from paretoforge.kernels import export_onnx
    from paretoforge.models.surgery import prune

    model = tiny_model(family)
    pruned = prune(model, _shrink_plan(model))
    path = export_onnx(pruned, tiny_inputs(pruned, 2, seed=3), Path(directory) / "model.onnx",
                       output_names=("output",))  # fmt: skip
    x = tiny_inputs(pruned, 5, seed=4)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _expect([i.name for i in sess.get_inputs()] == list(x),
            f"family {family!r}: ONNX inputs {[i.name for i in sess.get_inputs()]} are not the "
            f"adapter's input_names {list(x)}")
    got = sess.run(None, {k: v.numpy() for k, v in x.items()})[0]
    ref = _forward(pruned, x)
    _expect(got.shape == ref.shape, f"family {family!r}: ONNX shape {got.shape} != {ref.shape}")
    diff = float(np.abs(got - ref).max())
    _expect(diff <= ONNX_ATOL,
            f"family {family!r}: ONNX differs from PyTorch by {diff:.2e} > {ONNX_ATOL}")


# -- hardware profiles ----------------------------------------------------------------------------

_RAY_KEYS = {"num_cpus", "num_gpus", "resources"}


def check_profile(profile: HardwareProfile, *, registered_as: str | None = None) -> None:
    """A profile is frozen data that round-trips through JSON, places with options Ray accepts,
    lists precisions the kernels build, and has sane threads and batch.

    Args:
        profile: The profile.
        registered_as: The name it is registered under, which must be its own.
    """
    import pydantic

    from paretoforge.exceptions import PlacementError
    from paretoforge.hw_profiles import HardwareProfile, parse_profile
    from paretoforge.kernels import PRECISIONS

    name = profile.name
    unknown = [p for p in profile.precisions if p not in PRECISIONS]
    _expect(not unknown, f"profile {name!r} lists precisions {unknown} the kernels cannot build "
                         f"(they build {', '.join(PRECISIONS)})")
    if registered_as is not None:
        _expect(name == registered_as,
                f"profile {name!r} is registered under another name, {registered_as!r}")
    try:
        profile.batch_size = profile.batch_size  # type: ignore[misc]
    except (pydantic.ValidationError, TypeError, AttributeError):
        pass
    else:
        raise ContractError(f"profile {name!r} is not frozen: a field could be assigned")
    _expect(HardwareProfile.model_validate_json(profile.model_dump_json()) == profile,
            f"profile {name!r} does not round-trip through JSON")
    _expect(parse_profile(profile.model_dump(mode="json"), where="contract") == profile,
            f"profile {name!r} does not round-trip through parse_profile (YAML, specs)")

    opts = profile.ray_options()
    _expect(set(opts) <= _RAY_KEYS,
            f"profile {name!r}: ray_options() keys {sorted(opts)} are not among {_RAY_KEYS}")
    _expect((opts.get("num_gpus", 0) >= 1) == profile.on_gpu,
            f"profile {name!r}: ray_options() asks for GPUs {opts.get('num_gpus', 0)} but the "
            f"device is {profile.device!r}")
    resources = opts.get("resources", {})
    _expect(all(isinstance(k, str) and v > 0 for k, v in resources.items()),
            f"profile {name!r}: ray_options() resources {resources} are not name -> amount > 0")
    if profile.resource not in (None, "GPU", "CPU"):
        _expect(resources.get(profile.resource, 0) >= 1,
                f"profile {name!r}: ray_options() does not ask for its resource "
                f"{profile.resource!r}")
    import ray

    try:
        ray.remote(num_cpus=1)(_noop).options(**opts)
    except (TypeError, ValueError) as e:
        raise ContractError(f"profile {name!r}: Ray refuses ray_options() {opts}: {e}") from None

    _expect("fp32" in profile.precisions, f"profile {name!r} must run fp32: trial 0 is the "
                                          "unpruned fp32 base model")
    _expect(all(profile.supports(p) for p in profile.precisions),
            f"profile {name!r}: supports() refuses a precision it lists")

    _expect(profile.batch_size >= 1 and profile.inter_op_threads >= 1,
            f"profile {name!r}: batch_size and inter_op_threads must be >= 1")
    threads = profile.intra_op_threads
    _expect(profile.threads_for(max(threads or 1, 4)) <= max(threads or 1, 4),
            f"profile {name!r}: threads_for(n) exceeds n")
    if threads is None:
        _expect(profile.threads_for(3) == 3, f"profile {name!r} takes every core, but "
                                             "threads_for(3) != 3")
    else:
        _expect(threads >= 1 and profile.threads_for(threads) == threads,
                f"profile {name!r}: threads_for({threads}) != {threads}")
        if threads > 1:
            try:
                profile.threads_for(threads - 1)
            except PlacementError:
                pass
            else:
                raise ContractError(f"profile {name!r}: {threads} threads ran on "
                                    f"{threads - 1} cores without a PlacementError")


def _noop() -> int:
    return 0


def measure_tiny(profile: HardwareProfile, directory: str | os.PathLike[str]) -> Measurement:
    """Measure a tiny ONNX model (one MatMul) on ``profile`` with the latency protocol, as few
    runs as it allows (1 warm-up, 3 timed), and check the measurement describes the profile.

    Only for profiles that run here: ONNX Runtime on the CPU, no resource to carry.

    Returns:
        The :class:`~paretoforge.evaluators.latency.Measurement`.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from paretoforge.evaluators.latency import measure_latency

    _expect(profile.device == "cpu" and profile.runtime == "onnxruntime",
            f"measure_tiny measures ONNX Runtime CPU profiles, not {profile.name!r}")
    w = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = Path(directory) / "tiny.onnx"
    onnx.save(model, str(path))
    samples = {"x": np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)}
    m = measure_latency(path, profile, samples, warmup=1, min_runs=3, max_runs=3,
                        max_seconds=0.5, rounds=1, max_rounds=1)  # fmt: skip
    _expect(m.profile == profile.name and m.batch_size == profile.batch_size,
            f"profile {profile.name!r}: the measurement describes {m.profile!r}, "
            f"batch {m.batch_size}")
    _expect(m.runs == 3 and 0 < m.min_ms <= m.p50_ms <= m.p90_ms <= m.p99_ms,
            f"profile {profile.name!r}: implausible measurement {m.runs} runs, "
            f"p50 {m.p50_ms} ms")
    return m


# -- search-space presets -------------------------------------------------------------------------


def check_space_preset(name: str) -> None:
    """The preset's dimensions are :class:`CandidateConfig` fields whose choices validate, and
    its precisions are ones the kernels build."""
    from paretoforge.exceptions import SpecError
    from paretoforge.kernels import PRECISIONS
    from paretoforge.search_spaces import SPACES, CandidateConfig, SearchSpace

    preset = SPACES.get(name)
    _expect(bool(preset.description.strip()), f"preset {name!r} has no description")
    unknown = sorted(set(preset.dimensions) - set(CandidateConfig.model_fields))
    _expect(not unknown, f"preset {name!r}: dimensions {unknown} are not CandidateConfig fields")
    fit = sorted(set(preset.fit_to_model) - {"layers_kept", "heads_kept"})
    _expect(not fit, f"preset {name!r}: fit_to_model {fit} (only layers_kept, heads_kept fit)")
    try:
        space = SearchSpace.from_preset(name)
    except SpecError as e:
        raise ContractError(f"preset {name!r} does not validate: {e}") from None
    bad = [p for p in space.dimensions["precision"] if p not in PRECISIONS]
    _expect(not bad, f"preset {name!r}: precisions {bad} are not built by the kernels")
    _expect(space.size() >= 2, f"preset {name!r} has a single candidate; nothing to search")


def check_space_suggest(name: str, *, trials: int = 3) -> None:
    """``suggest()`` on Optuna trials gives configs from the choices, with a stable key: the
    same params (again, or through JSON) give the same key, other params another."""
    import optuna

    from paretoforge.search_spaces import CandidateConfig, SearchSpace

    space = SearchSpace.from_preset(name)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))  # fmt: skip
    keys: dict[str, str] = {}
    for _ in range(trials):
        trial = study.ask()
        cfg = space.suggest(trial)
        for dim, choices in space.dimensions.items():
            value = getattr(cfg, dim)
            values = value if dim in space.per_layer and isinstance(value, tuple) else (value,)
            _expect(all(v in choices for v in values),
                    f"preset {name!r}: suggested {dim}={value!r} not in {choices}")
        _expect(re.fullmatch(r"[0-9a-f]{16}", cfg.key) is not None,
                f"preset {name!r}: key {cfg.key!r} is not 16 hex digits")
        again = space.suggest(optuna.trial.FixedTrial(dict(trial.params)))
        _expect(again.key == cfg.key, f"preset {name!r}: the same params gave another key")
        _expect(CandidateConfig.model_validate_json(cfg.canonical_json()).key == cfg.key,
                f"preset {name!r}: the key changes through canonical JSON")
        previous = keys.setdefault(cfg.canonical_json(), cfg.key)
        _expect(previous == cfg.key, f"preset {name!r}: equal configs with different keys")
        study.tell(trial, [0.0, 0.0])
    _expect(len(set(keys.values())) == len(keys),
            f"preset {name!r}: different configs share a key")


def _fit_shapes(space: Any) -> Iterable[tuple[int, int]]:
    layers, heads = max(space.dimensions["layers_kept"]), max(space.dimensions["heads_kept"])
    yield layers, heads
    if space.fit_to_model:  # a count the choices lack is fitted in
        yield (layers + 1 if "layers_kept" in space.fit_to_model else layers,
               heads + 1 if "heads_kept" in space.fit_to_model else heads)


def check_space_base_in_space(name: str) -> None:
    """The unpruned fp32 base (trial 0) is in the space of a model as large as its largest
    choices, and, for fitted dimensions, of a model with counts the choices lack."""
    from paretoforge.exceptions import SpecError
    from paretoforge.search_spaces import SearchSpace

    for layers, heads in _fit_shapes(SearchSpace.from_preset(name)):
        space = SearchSpace.from_preset(name)
        try:
            space.check_model(layers, heads)
        except SpecError as e:
            raise ContractError(f"preset {name!r} on a {layers}-layer, {heads}-head model: "
                                f"{e}") from None
        base = space.base_params(layers, heads)
        params = space.param_choices()
        for dim, value in base.items():
            _expect(value in params[dim], f"preset {name!r}: base {dim}={value!r} is "
                                          f"not in {params[dim]}")
        cfg = space.config_from_params(base)
        _expect(cfg.is_unpruned(layers, heads) and cfg.precision == "fp32",
                f"preset {name!r}: base params {base} are not the unpruned fp32 model")


# -- tasks ---------------------------------------------------------------------------------------


def check_task(task: Any) -> None:
    """A registered :class:`~paretoforge.tasks.Task` states what the rest relies on: metrics
    with directions that clash with no size or latency metric, sources, families that have
    an adapter, a loader taking ``seed`` and its split parameters, and the methods the
    pipeline calls."""
    from paretoforge.models.families import ADAPTERS
    from paretoforge.spec import DECODE_METRICS, LATENCY_METRICS, SIZE_METRICS
    from paretoforge.tasks import TASKS, Task, task_metrics

    _expect(isinstance(task, Task), f"{task!r} is not a Task")
    _expect(TASKS.get(task.name) is task, f"task {task.name!r} is not registered as itself")
    _expect(task.quality_metric in task.metrics, f"{task.name}: no quality metric")
    for m, d in task.metrics.items():
        _expect(d in ("maximize", "minimize"), f"{task.name}: metric {m!r} direction {d!r}")
        _expect(m not in SIZE_METRICS and m not in LATENCY_METRICS + DECODE_METRICS
                and "@" not in m,
                f"{task.name}: metric {m!r} clashes with a size or latency metric")
        _expect(task_metrics()[m] == d,
                f"{task.name}: metric {m!r} means {d} here and otherwise elsewhere")
    _expect(bool(task.sources) and set(task.sources) <= {"recipe", "checkpoint"},
            f"{task.name}: sources {task.sources!r}")
    _expect(("checkpoint" in task.sources) == bool(task.families),
            f"{task.name}: a task takes checkpoints exactly when it names their families")
    for f in task.families:
        _expect(f in ADAPTERS, f"{task.name}: family {f!r} has no adapter "
                f"(registered: {ADAPTERS.names()})")
    params = task.load_params()
    _expect("seed" in params, f"{task.name}: load() takes no seed")
    for p in task.split_params:
        # an older task's loader takes no test_fraction: TaskData halves its held-out part
        _expect(p in params or p == "test_fraction",
                f"{task.name}: load() takes no split parameter {p!r}")
    if "checkpoint" in task.sources:
        _expect("checkpoint" in params, f"{task.name}: load() takes no checkpoint")
    if task.data is not None:
        _expect("path" in params, f"{task.name}: reads task.data but load() takes no path")
    _expect(set(task.distill_losses) <= {"logits", "pooled"},
            f"{task.name}: distill_losses {task.distill_losses!r}")


def check_task_data(task: Any, data: Any) -> None:
    """What :meth:`Task.load` returned: the task's name and quality metric, one label per
    example on each of train, validation and test, the same inputs on all three, a JSON-able
    split record whose sizes are the arrays', and the task's score of constant outputs is a
    finite number on validation and on test."""
    import json
    import math

    import numpy as np

    _expect(data.name == task.name, f"{task.name}: data is named {data.name!r}")
    _expect(data.metric == task.quality_metric,
            f"{task.name}: data scored by {data.metric!r}, not {task.quality_metric!r}")
    _expect(data.has_test, f"{task.name}: no test split")
    feeds = {s: data.feeds(s) for s in ("train", "validation", "test")}
    train = feeds["train"]
    _expect(data.input_name in train, f"{task.name}: no input {data.input_name!r}")
    for split, x in feeds.items():
        _expect(set(x) == set(train), f"{task.name}: inputs {sorted(train)} vs {sorted(x)}")
        n = len(data.labels(split))
        _expect(n > 0, f"{task.name}: empty {split} split")
        for k in x:
            _expect(len(x[k]) == n, f"{task.name}: {split} input {k!r} and labels differ")
            _expect(x[k].shape[1:] == train[k].shape[1:], f"{task.name}: {k!r} shapes differ")
    for split in ("validation", "test"):
        key = f"n_{split}"
        _expect(data.split.get(key) == len(data.labels(split)),
                f"{task.name}: split[{key!r}] is {data.split.get(key)!r}, not "
                f"{len(data.labels(split))}")
        _expect(isinstance(data.split.get(f"{split}_indices_sha256"), str),
                f"{task.name}: split has no {split}_indices_sha256")
    json.dumps(data.split)
    width = max(1, int(data.num_classes))
    for split in ("validation", "test"):
        view = data.scoring(split)
        value = task.score(np.zeros((len(view.y_scored), width), np.float32), view, {})
        _expect(isinstance(value, float) and math.isfinite(value),
                f"{task.name}: score of constant outputs on {split} is {value!r}")
