"""The ``paretoforge`` command line: search, resume, front, export, refine, report, pull,
submit, status, logs, profiles, doctor, spaces.

Every command turns a :class:`ParetoforgeError` into one line on stderr and exit code 2;
``--debug`` shows the traceback instead. Heavy imports happen inside commands.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from paretoforge.exceptions import ParetoforgeError
from paretoforge.names import StopReason, TrialAttr
from paretoforge.samplers import SAMPLERS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find the Pareto-optimal deployable versions of a transformer for your hardware.",
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])
_state = {"debug": False}


def _errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ParetoforgeError as e:
            if _state["debug"]:
                raise
            msg = " ".join(str(e).split("\n")[0].split())
            typer.echo(f"error: {msg}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; continue with `paretoforge resume RUN_DIR`", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    _state["debug"] = debug


@app.command()
@_errors
def search(
    spec: Annotated[Path, typer.Argument(help="Search spec (YAML or JSON).")],
    run_dir: Annotated[str | None, typer.Option(
        "--run-dir", help="Run directory: a path, or a storage URI (s3://bucket/run).")] = None,
    trials: Annotated[int | None, typer.Option(
        "--trials", help="Completed trials to reach.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker actors.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Search seed.")] = None,
    sampler: Annotated[str | None, typer.Option(
        "--sampler", help="Optuna sampler: " + ", ".join(SAMPLERS.names()) + ".")] = None,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
) -> None:
    """Run a search and print its Pareto front."""
    from paretoforge.spec import Spec

    s = Spec.from_file(spec).with_overrides(**{
        "search.trials": trials, "cluster.workers": workers, "search.seed": seed,
        "search.sampler": sampler,
    })
    _run(s, run_dir or s.run_dir or f"runs/{s.name}", address=address, quiet=quiet)


@app.command()
@_errors
def resume(
    run_dir: Annotated[str, typer.Argument(
        help="Run directory (or storage URI) of an interrupted search.")],
    trials: Annotated[int | None, typer.Option(
        "--trials", help="Completed trials to reach.")] = None,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
) -> None:
    """Continue a search until it has its completed trials; nothing finished is run again.

    Trials a stopped driver left running are completed from their artifact when it is on disk
    with valid checksums, answered from the cache when their config completed, else re-run.
    """
    from paretoforge.orchestrator.runstore import RunStore
    from paretoforge.spec import Spec

    store = RunStore.open(run_dir)
    store.pull()
    spec_path = store.local / "spec.yaml"
    if not spec_path.is_file():
        raise ParetoforgeError(f"{run_dir!r} is not a run directory (no spec.yaml)")
    s = Spec.from_file(spec_path).with_overrides(**{"search.trials": trials})
    _run(s, run_dir, address=address, quiet=quiet, store=store)


def _run(spec: Any, run_dir: str, *, address: str | None, quiet: bool,
         store: Any = None) -> None:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.orchestrator.runstore import RunStore

    store = store or RunStore.open(run_dir)
    progress = Progress(spec.search.trials, quiet=quiet)
    summary = run_search(spec, store, address=address, progress=progress,
                         debug=_state["debug"])
    typer.echo(f"\n{summary.completed} trials completed ({summary.cached} cached), "
               f"{summary.failed} failed, in {summary.wall_s:.0f}s. Run directory: {run_dir}")
    base_s, threads = summary.timings.get("base_s", 0.0), summary.timings.get("base_threads")
    if threads and base_s > 0:  # the base was trained by this run: the one-shot yardstick
        typer.echo(f"The whole search took {summary.wall_s / base_s:.2f}x the base model's "
                   f"training ({base_s:.1f}s on {threads:.0f} thread(s))")
    if summary.stopped:
        typer.echo(f"Stopped early: {summary.stopped}. Continue with: paretoforge resume "
                   f"{run_dir}")
    from paretoforge.orchestrator.results import load_run

    _print_front(summary.front, [o.metric for o in spec.objectives],
                 load_run(store.local).predictor_errors())
    typer.echo(f"Export a member: paretoforge export {run_dir} --trial N --out DIR; "
               f"plots and tables: paretoforge report {run_dir}")
    if summary.stop_reason is StopReason.MAX_FAILURES:
        # Not a finished search: scripts and CI must see it (exit 1; 2 is for bad input).
        first = next((str(t.user_attrs.get(TrialAttr.FAIL_REASON, "")).splitlines()[0]
                      for t in load_run(store.local).trials(states=("FAIL",))
                      if t.user_attrs.get(TrialAttr.FAIL_REASON)), "")
        typer.echo(f"error: the search stopped after {summary.failed} failed trials; first "
                   f"reason: {first[:300]}", err=True)
        raise typer.Exit(1)


@app.command()
@_errors
def front(
    run_dir: Annotated[str, typer.Argument(help="Run directory or storage URI.")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a JSON list; a member's `metrics` hold validation quality (the "
        "search's), `test_metrics` and `quality.test` the test split's (quote it); "
        "`predicted` names the metrics a latency predictor gave, `prediction_error` that "
        "predictor's held-out error.")] = False,
) -> None:
    """Print the Pareto front of a run: quality on validation (what the search chose on) and
    on test (never seen by the search; quote it), and its latency predictors' error."""
    from paretoforge.orchestrator.results import load_run

    run = load_run(run_dir)
    members = run.front()
    if as_json:
        typer.echo(json.dumps([m.to_json() for m in members], indent=2))
        return
    _print_front(members, run.objective_names, run.predictor_errors())


def _print_front(members: list[Any], objectives: list[str],
                 predictors: dict[str, Any] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Pareto front ({len(members)} members)")
    quality = next((m.quality_metric for m in members if getattr(m, "quality_metric", "")), "")
    table.add_column("trial", justify="right")
    table.add_column("config")
    for o in objectives:
        table.add_column(f"{o} (validation)" if o == quality else o, justify="right")
    if quality:
        table.add_column(f"{quality} (test)", justify="right")
    # a decoder run quotes its decode-per-token speed-up, and the prefill's beside it
    basis = getattr(members[0] if members else None, "speedup_metric",
                    "speedup_latency_p50_ms@cpu-1t")
    speed_cols = [basis] + (["speedup_latency_p50_ms@" + basis.partition("@")[2]]
                            if basis.startswith("speedup_decode_") else [])
    for key in speed_cols:
        kind = ("decode/token" if key.startswith("speedup_decode_")
                else "prefill p50" if len(speed_cols) > 1 else "p50")
        table.add_column(f"speed-up ({key.partition('@')[2]} {kind})", justify="right")
    table.add_column("size", justify="right")
    one_shot = any(getattr(m, "phase", None) for m in members)
    if one_shot:
        table.add_column(f"one-shot {quality or objectives[0]}", justify="right")
    for m in members:
        cfg = m.config
        desc = (f"L{cfg.get('layers_kept')} H{_compact(cfg.get('heads_kept'))} "
                f"FFN{_compact(cfg.get('ffn_kept'))} {cfg.get('precision')}")
        speeds = [m.relative.get(key) for key in speed_cols]
        predicted = set(getattr(m, "predicted", []) or [])
        test = m.test_metrics.get(quality) if quality else None
        table.add_row(str(m.trial), desc,
                      *(("~" if o in predicted else "")  # latencies: as re-timed, if so
                        + f"{m.metrics.get(o, m.objectives[o]):.4g}" for o in objectives),
                      *(([f"{test:.4g}" if test is not None else "-"]) if quality else []),
                      *(f"{speed:.2f}x" if speed else "-" for speed in speeds),
                      f"{m.metrics.get('onnx_bytes', 0) / 1024:.0f} KiB",
                      *([_one_shot_cell(m, quality or objectives[0])] if one_shot else []))
    Console(width=max(100, Console().width)).print(table)
    if one_shot:
        typer.echo("one-shot: the member's values as cut from the supernet, before finishing; "
                   "'(trial N, +E ep)': recovered for E epochs in all from that one-shot "
                   "trial (with one_shot.finish_resume, a promoted member continues its "
                   "previous rung's weights); "
                   "'as built': not recovered (the base at a precision)")
    if quality:
        typer.echo(f"{quality} (validation): the split every search decision used, an optimistic"
                   f" estimate; {quality} (test): never seen by the search, scored once per "
                   "member after it -- quote the test number")
    retimed = {p: r.get("rounds") for m in members for p, r in (getattr(m, "latency", None)
                                                                or {}).items()}
    if retimed:
        typer.echo("latency: " + ", ".join(f"{p} re-timed after the search, each member beside "
                                           f"the base in {n} interleaved rounds"
                                           for p, n in retimed.items())
                   + " (their range: `front --json`, `latency`); the search's own figures: "
                   "`metrics_in_search`")
    if any(getattr(m, "predicted", None) for m in members):
        typer.echo("~ predicted by a latency predictor (prediction.profiles), not measured")
    from paretoforge.orchestrator.prediction import predictor_lines

    for line in predictor_lines(predictors or {}):
        typer.echo(line)



def _compact(v: Any) -> str:
    """A per-layer list as ``[4,1,2]``; a single value as is."""
    return "[" + ",".join(f"{x:g}" for x in v) + "]" if isinstance(v, (list, tuple)) else str(v)


def _one_shot_cell(m: Any, metric: str) -> str:
    src = getattr(m, "one_shot", None)
    if not src:
        return "as built"
    v = src.get("metrics", {}).get(metric, src.get("objectives", {}).get(metric))
    value = f"{v:.4g}" if isinstance(v, (int, float)) else "-"
    return f"{value} (trial {src['trial']}, +{m.recovery_epochs} ep)"


@app.command()
@_errors
def export(
    run_dir: Annotated[str, typer.Argument(help="Run directory or storage URI.")],
    trial: Annotated[int, typer.Option("--trial", help="Trial number (see `front`).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the checkpoint to.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an earlier export in --out (nothing else is removed).")] = False,
) -> None:
    """Export a trial's checkpoint: model.onnx, model.safetensors + config.json, manifest.json."""
    from paretoforge.orchestrator.results import export_trial, load_run

    path = export_trial(load_run(run_dir), trial, out, force=force)
    typer.echo(f"exported trial {trial} to {path}")
    from paretoforge.manifest import load_manifest

    q = load_manifest(path).quality or {}
    if q:
        test = q.get("test")
        typer.echo(f"{q.get('metric')}: validation {q.get('validation'):.4g}, test "
                   + (f"{test:.4g}" if test is not None else "not scored (not a front member)"))


@app.command()
@_errors
def retime(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of a finished search.")],
    rounds: Annotated[int | None, typer.Option(
        "--rounds", min=1, help="Interleaved rounds (default: the spec's search.retime_rounds)."
    )] = None,
) -> None:
    """Time the front's members and the base again, together, on this machine, now.

    The stage a search ends with (search.retime_rounds): every member beside the base, in
    interleaved rounds; the front then quotes these latencies and their range.
    """
    from paretoforge.orchestrator.retime import retime_run

    got = retime_run(run_dir, rounds=rounds, log=typer.echo)
    for trial, by_profile in sorted(got.items(), key=lambda kv: int(kv[0])):
        for profile, rec in by_profile.items():
            if rec.get("rel_p50") is not None:
                typer.echo(f"trial {trial:>5} {profile}: {rec['rel_p50']:.4f} x the base "
                           f"[{rec['rel_low']:.4f}, {rec['rel_high']:.4f}] over "
                           f"{rec['rounds']} rounds")


@app.command()
@_errors
def refine(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of a finished search.")],
    epochs: Annotated[int | None, typer.Option(
        "--epochs", min=1, help="Distillation epochs (default: 3x the search's).")] = None,
    lr: Annotated[float | None, typer.Option(
        "--lr", min=0.0, help="Learning rate (default: the search's).")] = None,
    trial: Annotated[list[int] | None, typer.Option(
        "--trial", help="Refine only this trial (repeatable; default: the whole front).")] = None,
) -> None:
    """Distil the front's pruned members again with a larger budget, recorded apart.

    The search's numbers stay as they are; the refined checkpoints and refined.json go to
    RUN_DIR/refined/epochs<E>-lr<LR>/.
    """
    from rich.console import Console
    from rich.table import Table

    from paretoforge.orchestrator.refine import refine_front

    rows = refine_front(run_dir, epochs=epochs, lr=lr, trials=trial or None, log=typer.echo)
    if not rows:
        typer.echo("nothing to refine: no pruned member among the trials asked for")
        return
    from paretoforge.orchestrator.results import load_run

    metric = load_run(run_dir).spec.task.metric
    table = Table(title=f"Refined members ({Path(rows[0]['artifact_dir']).parents[1].name})")
    for col in ("trial", f"{metric} validation (search)", f"{metric} validation (refined)",
                f"{metric} test (search -> refined)",
                "latency_p50_ms@cpu-1t (search -> refined)", "checkpoint"):
        table.add_column(col)
    lat = "latency_p50_ms@cpu-1t"
    for r in rows:
        table.add_row(str(r["trial"]), f"{r['search'][metric]:.4f}", f"{r['refined'][metric]:.4f}",
                      f"{r['search_test'][metric]:.4f} -> {r['refined_test'][metric]:.4f}",
                      f"{r['search'].get(lat, float('nan')):.4g} -> "
                      f"{r['refined'].get(lat, float('nan')):.4g}", r["artifact_dir"])
    Console(width=max(120, Console().width)).print(table)


@app.command()
@_errors
def report(
    run_dir: Annotated[str, typer.Argument(help="Run directory or storage URI.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Directory for report.html and pareto.png (default: the run's).")] = None,
) -> None:
    """Write report.html (self-contained) and pareto.png: fronts, hypervolume, failures."""
    from paretoforge.orchestrator.prediction import predictor_lines
    from paretoforge.orchestrator.report import write_report
    from paretoforge.orchestrator.results import load_run

    html_path, png_path = write_report(run_dir, out)
    typer.echo(f"wrote {html_path} and {png_path}")
    if out is None:
        from paretoforge.orchestrator.runstore import RunStore

        RunStore.open(run_dir).push_meta()  # a URI run: the report goes there too
    for line in predictor_lines(load_run(run_dir).predictors()):
        typer.echo(line)


@app.command()
@_errors
def pull(
    run: Annotated[str, typer.Argument(help="The run: a storage URI (s3://bucket/run) or a "
                                       "directory.")],
    to: Annotated[Path, typer.Option("--to", help="Local directory to write (new, empty, or "
                                     "an earlier pull, which is replaced).")],
    trials: Annotated[list[str] | None, typer.Option(
        "--trials", help="Checkpoints to bring: front (default), all, or trial numbers "
        "(repeatable).")] = None,
) -> None:
    """Bring a run's study, front and chosen checkpoints here: `front`, `report` and
    `load_run` then work on DIR."""
    from paretoforge.orchestrator.runstore import pull_run

    out, numbers = pull_run(run, to, trials or ["front"])
    typer.echo(f"pulled {run} to {out}: study, front, {len(numbers)} checkpoint(s) "
               f"(trials {', '.join(map(str, numbers)) or '-'})")


_ADDRESS_HELP = ("The Ray dashboard's HTTP address (default $RAY_API_SERVER_ADDRESS, else "
                 "http://127.0.0.1:8265).")


@app.command()
@_errors
def submit(
    spec: Annotated[Path, typer.Argument(help="Search spec (YAML or JSON).")],
    address: Annotated[str | None, typer.Option("--address", help=_ADDRESS_HELP)] = None,
    run_dir: Annotated[str | None, typer.Option(
        "--run-dir", help="Where the run goes: a storage URI, or an absolute path on the head "
        "node (default: the spec's run_dir).")] = None,
    trials: Annotated[int | None, typer.Option(
        "--trials", help="Completed trials to reach.")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow/--no-follow", help="Print the job's output until it ends.")] = True,
) -> None:
    """Send a search to a Ray cluster as a Ray Job; print its id and follow it."""
    from paretoforge.orchestrator.jobs import follow_job, submit_search

    extra = ["--trials", str(trials)] if trials is not None else []
    job = submit_search(spec, address=address, run_dir=run_dir, extra_args=extra)
    typer.echo(f"submitted job {job}; later: paretoforge status {job} / paretoforge logs {job}")
    if not follow:
        return
    try:
        status = follow_job(job, address=address, echo=typer.echo)
    except KeyboardInterrupt:
        typer.echo(f"stopped following; job {job} keeps running (paretoforge status {job})",
                   err=True)
        raise typer.Exit(130) from None
    typer.echo(f"job {job}: {status}")
    if status != "SUCCEEDED":
        raise typer.Exit(1)


@app.command()
@_errors
def status(
    job: Annotated[str, typer.Argument(help="Job id (from `submit`).")],
    address: Annotated[str | None, typer.Option("--address", help=_ADDRESS_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A submitted search's status."""
    from paretoforge.orchestrator.jobs import job_status

    info = job_status(job, address=address)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    typer.echo(f"job {job}: {info['status']}" + (f" ({info['message']})" if info["message"]
                                                 else ""))
    if info.get("run_dir"):
        typer.echo(f"run: {info['run_dir']} (paretoforge pull {info['run_dir']} --to DIR)")


@app.command()
@_errors
def logs(
    job: Annotated[str, typer.Argument(help="Job id (from `submit`).")],
    address: Annotated[str | None, typer.Option("--address", help=_ADDRESS_HELP)] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing until it ends.")
                      ] = False,
) -> None:
    """What a submitted search printed."""
    from paretoforge.orchestrator.jobs import follow_job, job_logs

    if follow:
        follow_job(job, address=address, echo=typer.echo)
    else:
        typer.echo(job_logs(job, address=address).rstrip("\n"))


@app.command()
@_errors
def profiles(
    address: Annotated[str | None, typer.Option("--address", help="Also check which profiles "
                                                "this Ray cluster can serve, and show each "
                                                "node's CPU features and calibration.")] = None,
) -> None:
    """List the hardware profiles."""
    from rich.console import Console
    from rich.table import Table

    from paretoforge.hw_profiles import PROFILES

    served: set[str] | None = None
    machines: dict[str, Any] = {}
    if address:
        import ray

        from paretoforge._ray_auth import connect_cluster
        from paretoforge.hw_profiles.doctor import node_machines

        connect_cluster(address)
        try:
            res = ray.cluster_resources()
            machines = node_machines()
        finally:
            ray.shutdown()
        from paretoforge.hw_profiles import served_profiles

        served = {n for n, ok in served_profiles(res).items() if ok}
    table = Table(title="Hardware profiles")
    for col in ("name", "device", "runtime", "provider", "threads", "batch", "resource",
                "requires", "description") + (("served",) if served is not None else ()):
        table.add_column(col)
    for n in PROFILES.names():
        p = PROFILES.get(n)
        row = [n, p.device, p.runtime, p.provider,
               "all" if p.intra_op_threads is None else str(p.intra_op_threads),
               str(p.batch_size), p.resource or "any node", " ".join(p.requires) or "-",
               p.description]
        if served is not None:
            row.append("yes" if n in served else "no")
        table.add_row(*row)
    Console(width=max(120, Console().width)).print(table)
    if machines:
        from paretoforge.hw_profiles.doctor import format_machine

        for nid, ident in machines.items():
            typer.echo(f"node {nid[:12]}: {format_machine(ident)}")


@app.command()
@_errors
def doctor(
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster to probe; "
                                                "unset starts and probes a local one of its "
                                                "own.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Probe the cluster: nodes, their CPU features and calibration, resources, runtime
    providers, and which profiles it serves."""
    from paretoforge.hw_profiles.doctor import doctor_report, format_doctor

    report = doctor_report(address)
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else format_doctor(report))


@app.command()
@_errors
def spaces() -> None:
    """List the search-space presets, their dimensions and sizes, and custom dimensions."""
    from paretoforge.search_spaces import DIMENSIONS, SPACES, SearchSpace

    for name in SPACES.names():
        p = SPACES.get(name)
        typer.echo(f"{name}: {p.description}")
        for dim, choices in p.dimensions.items():
            typer.echo(f"  {dim}: {list(choices)}{' per layer' if dim in p.per_layer else ''}")
        typer.echo(f"  size: {SearchSpace.from_preset(name).size():,} configurations")
    for name in DIMENSIONS.names():
        d = DIMENSIONS.get(name)
        typer.echo(f"custom {name} ({d.module}, {d.stage}): {list(d.choices)}, default "
                   f"{d.default!r}. {d.description}")


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except ParetoforgeError as e:  # raised outside a command (should not happen)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
