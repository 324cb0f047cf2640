"""Measurement isolation: how steady is a cpu-1t latency while builders train next to it?

One artifact (the quickstart ViT, unpruned, fp32 ONNX) is measured ``--repeats`` times on
``cpu-1t`` with the worker's protocol under each condition, and the coefficient of variation
(std / mean) of the repeated p50s is reported:

* ``quiet``: no builder; the measurement pinned to its core (the floor).
* ``isolated``: the worker's scheme -- the measurement pinned to its own core, one builder
  process per other core, each pinned to its core with one torch thread.
* ``floating-1t``: the same builders with one torch thread each, but nothing pinned.
* ``floating-default``: nothing pinned and each builder with torch's default thread count
  (every core), as a search without the worker's pinning would run them.

A builder runs knowledge-distillation steps of the default ViT (teacher and student of the
quickstart recipe, batch 64 of digits, KL + cross-entropy, AdamW) until it is stopped.

Usage:
    python benchmarks/measurement_isolation.py                    # all conditions
    python benchmarks/measurement_isolation.py --batch 32         # ~3 ms calls
    python benchmarks/measurement_isolation.py --wait-quiet 600   # wait for a quiet machine

Results go to ``benchmarks/results/measurement_isolation_b<batch>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import wait_quiet  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONDITIONS = ("quiet", "isolated", "floating-1t", "floating-default")


def builder(threads: int, core: int | None) -> None:
    """Distillation steps of the default ViT until killed (run as a separate process)."""
    import torch

    from paretoforge.models.vit import DEFAULT_DIGITS_RECIPE, build_vit
    from paretoforge.tasks import load_task

    if core is not None:
        os.sched_setaffinity(0, {core})
    if threads > 0:
        torch.set_num_threads(threads)
    task = load_task("digits")
    torch.manual_seed(0)
    teacher, student = build_vit(DEFAULT_DIGITS_RECIPE).eval(), build_vit(DEFAULT_DIGITS_RECIPE)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    x, y = torch.from_numpy(task.x_train), torch.from_numpy(task.y_train)
    g = torch.Generator().manual_seed(0)
    step = 0
    while True:
        idx = torch.randint(0, len(x), (64,), generator=g)
        with torch.no_grad():
            t = teacher(pixel_values=x[idx]).logits
        s = student(pixel_values=x[idx]).logits
        loss = torch.nn.functional.kl_div(
            torch.log_softmax(s / 2, -1), torch.softmax(t / 2, -1), reduction="batchmean"
        ) + torch.nn.functional.cross_entropy(s, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step == 1:
            print("ready", flush=True)


def start_builders(n: int, threads: int, pin: bool, cores: list[int]) -> list[Any]:
    procs = []
    for i in range(n):
        cmd = [sys.executable, __file__, "--builder", "--threads", str(threads)]
        if pin:
            cmd += ["--core", str(cores[i])]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    for p in procs:  # wait until each has done a step (imports and model build are done)
        line = p.stdout.readline() if p.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"builder {p.pid} failed to start")
    time.sleep(1.0)
    return procs


def stop(procs: list[Any]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=30)


def artifact(d: Path) -> tuple[Path, np.ndarray]:
    import torch

    from paretoforge.kernels.export import export_onnx
    from paretoforge.models.vit import DEFAULT_DIGITS_RECIPE, build_vit
    from paretoforge.tasks import load_task

    task = load_task("digits")
    torch.manual_seed(0)
    model = build_vit(DEFAULT_DIGITS_RECIPE).eval()
    path = export_onnx(model, {"pixel_values": torch.from_numpy(task.x_train[:1])},
                       d / "vit.onnx", output_names=("logits",))
    idx = np.random.default_rng(0).choice(len(task.x_train), 64, replace=False)
    return path, task.x_train[idx]


def run_condition(
    name: str, path: Path, x: np.ndarray, repeats: int, batch: int
) -> dict[str, Any]:
    from paretoforge.evaluators.latency import measure_latency
    from paretoforge.hw_profiles import get_profile

    cores = sorted(os.sched_getaffinity(0))
    bench_core, others = cores[-1], cores[:-1]
    n_builders = len(others)
    procs = []
    if name == "isolated":
        procs = start_builders(n_builders, 1, True, others)
    elif name == "floating-1t":
        procs = start_builders(n_builders, 1, False, cores)
    elif name == "floating-default":
        procs = start_builders(n_builders, 0, False, cores)
    pin = [bench_core] if name in ("quiet", "isolated") else None
    ms, loads, switches = [], [], []
    try:
        for _ in range(repeats):
            loads.append(os.getloadavg()[0])
            profile = get_profile("cpu-1t").model_copy(update={"batch_size": batch})
            # Involuntary context switches of this thread (ORT's one thread is the caller):
            # many means the measurement was preempted; few with a slower p50 means the
            # slowdown came through shared hardware (caches, memory, SMT siblings on the host).
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
            m = measure_latency(path, profile, {"pixel_values": x}, cores=pin)
            switches.append(resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw - before)
            ms.append(m)
    finally:
        stop(procs)

    def cv(values: list[float]) -> float:
        a = np.asarray(values)
        return float(a.std(ddof=1) / a.mean())

    p50s = [m.p50_ms for m in ms]
    return {
        "condition": name,
        "builders": len(procs),
        "measurement_pinned": pin is not None,
        "p50_ms": [round(v, 5) for v in p50s],
        "p50_mean_ms": float(np.mean(p50s)),
        "cv_p50": cv(p50s),
        "max_over_min_p50": float(max(p50s) / min(p50s)),
        "p90_mean_ms": float(np.mean([m.p90_ms for m in ms])),
        "p99_mean_ms": float(np.mean([m.p99_ms for m in ms])),
        "cv_p99": cv([m.p99_ms for m in ms]),
        "ci95_rel_mean": float(np.mean([m.ci95_rel for m in ms])),
        "runs_mean": float(np.mean([m.runs for m in ms])),
        "preemptions_per_100_runs": float(100 * np.sum(switches) / np.sum([m.runs for m in ms])),
        "loadavg_1m": [round(v, 2) for v in loads],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--builder", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--core", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1, help="batch size (32: ~3 ms calls)")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="first wait up to this long for the 1-min load average to drop")
    ap.add_argument("--quiet-threshold", type=float, default=0.5)
    args = ap.parse_args()
    if args.builder:
        builder(args.threads, args.core)
        return

    import torch

    torch.set_num_threads(1)
    load_start = wait_quiet(args.wait_quiet, args.quiet_threshold) if args.wait_quiet else \
        os.getloadavg()[0]
    from importlib import metadata

    from paretoforge._sysinfo import cpu_model as _cpu_model

    with tempfile.TemporaryDirectory(prefix="pf-iso-") as d:
        path, x = artifact(Path(d))
        results = [run_condition(c, path, x, args.repeats, args.batch)
                   for c in args.conditions]
    report = {
        "meta": {
            "cpu_model": _cpu_model(),
            "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "profile": "cpu-1t",
            "protocol": "measure_latency defaults (warmup 20, 50..2000 runs, 3 s, CI 2%)",
            "artifact": "quickstart ViT (4 layers, hidden 64, FFN 256), fp32 ONNX",
            "batch_size": args.batch,
            "repeats": args.repeats,
            "loadavg_1m_at_start": round(load_start, 2),
            "machine_quiet_at_start": load_start <= args.quiet_threshold,
            "versions": {"python": platform.python_version(),
                         **{k: metadata.version(k) for k in ("onnxruntime", "torch")}},
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "results": results,
    }
    out = RESULTS / f"measurement_isolation_b{args.batch}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
