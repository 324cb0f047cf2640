"""Measurement fidelity: an independent re-measurement of a run's front, relative to its base.

Issue 12's check: does the latency a front reports hold when someone else measures it, later?
At least an hour after the search finished (the script records the run's age and flags a
younger run), every front member's ``model.onnx`` and the run's base artifact (the reference
every candidate was timed against, ``<run>/reference/<key>/model.onnx``) are timed again by
this script alone -- nothing of paretoforge's latency protocol or runtime layer
(``measure_latency``, ``load_runtime``) is used:

* a plain ``onnxruntime.InferenceSession`` per member and per base, CPU provider, with the
  intra-/inter-op threads, graph optimisation level and spinning the manifest's measurement
  environment records (else the profile's), sequential execution;
* the process pinned to one core (``os.sched_setaffinity``);
* the inputs the run's latency protocol cycled through: the same seeded 64 real samples of the
  task's split (checked against the manifest's ``latency_inputs.indices_sha256``), in the
  profile's batch and sequence shape;
* ``--rounds`` interleaved rounds: in each round the members in a shuffled order, and for each
  member fresh sessions of it and of the base, ``--warmup`` untimed calls of each, then
  ``--calls`` timed calls of each, alternately (ABBA order), on the same inputs.

Per member, the re-measured **ratio to the base** is the median over rounds of the round's
median ratio (member median / base median), with its spread (half the range of the round
ratios over their median). Compared with what the front reports:

* Kendall's tau-b between the front's ``latency_p50_ms@<profile>`` (which is the drift-free
  figure ``rel_p50 x base_p50_ms``; checked per member) and the re-measured ratio. Target
  >= 0.9.
* coverage: the fraction of members whose reported interval ``[rel_low, rel_high]`` (the range
  of the search's round ratios, widened by nothing) contains the re-measured ratio. Target
  >= 90%.

Usage:
    python benchmarks/measurement_fidelity.py --run /tmp/pf-oneshot-711kfm50/one-shot \
        --example quickstart-one-shot
    python benchmarks/measurement_fidelity.py --run /tmp/minilm --example minilm \
        --base-trial 0 --rounds 7 --calls 30

Results go to ``benchmarks/results/measurement_fidelity_<example>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine, wait_quiet, write_result  # noqa: E402

LATENCY_SAMPLES = 64  # what the run's protocol cycles through (pipeline/stages.py)
MIN_AGE_S = 3600.0


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b of two equally long sequences (ties in either one count as ties).

    Example:
        >>> kendall_tau_b([1, 2, 3], [1, 3, 2])
        0.3333333333333333
    """
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two sequences of the same length >= 2, got {len(x)}, {len(y)}")
    concordant = discordant = ties_x = ties_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    denom = np.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return float((concordant - discordant) / denom) if denom else 0.0


def _spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (no ties expected: timings in ns).

    Example:
        >>> _spearman([1, 2, 3], [3, 2, 1])
        -1.0
    """
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1]) if len(x) > 2 else 0.0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _finished_at(run: Path) -> tuple[float, str]:
    """When the run finished: the last trial's ``datetime_complete`` in the study journal,
    else the modification time of ``front.json``; ``(unix seconds, source)``."""
    last: float | None = None
    journal = run / "study.journal"
    if journal.exists():
        for line in journal.read_text().splitlines():
            if '"datetime_complete"' not in line:
                continue
            try:
                stamp = json.loads(line).get("datetime_complete")
            except json.JSONDecodeError:
                continue
            if stamp:
                t = datetime.fromisoformat(stamp).timestamp()
                last = t if last is None else max(last, t)
    if last is not None:
        return last, "study.journal: last datetime_complete"
    return (run / "front.json").stat().st_mtime, "front.json mtime"


def _session(path: Path, env: dict[str, Any]) -> Any:
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(env["intra_op_threads"])
    opts.inter_op_num_threads = int(env["inter_op_threads"])
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = levels[env["graph_optimization"]]
    spin = "1" if env["allow_spinning"] else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _latency_samples(run: Path, record: dict[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
    """The seeded real samples the run timed every candidate on, and whether their indices
    hash to the manifest's ``latency_inputs.indices_sha256``."""
    from paretoforge.pipeline.prepare import load_spec_task
    from paretoforge.spec import Spec

    task = load_spec_task(Spec.from_file(run / "spec.yaml"))
    data = task.feeds(record.get("split", "train"))
    n = len(next(iter(data.values())))
    rng = np.random.default_rng(int(record.get("seed", 0)))
    idx = np.sort(rng.choice(n, size=min(int(record.get("n", LATENCY_SAMPLES)), n),
                             replace=False))
    sha = hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest()
    return {k: v[idx] for k, v in data.items()}, sha == record.get("indices_sha256")


def _feeds(samples: dict[str, np.ndarray], names: list[dict[str, Any]], batch: int,
           seq_len: int | None, seq_mode: str, seed: int) -> list[dict[str, np.ndarray]]:
    """Batches of ``batch`` samples in the profile's sequence shape (real tokens only: a row
    shorter than a fixed length repeats its own tokens; ``task`` mode cuts each batch to its
    longest real sample)."""
    n = min(len(a) for a in samples.values())
    seq = sorted(k for k, a in samples.items() if a.ndim == 2 and a.dtype.kind in "iub")
    lengths = (samples["attention_mask"].astype(bool).sum(axis=1) if "attention_mask" in seq
               else np.full(n, samples[seq[0]].shape[1]) if seq else None)
    order = (np.random.default_rng(seed).permutation(n) if seq and seq_mode == "task"
             else np.arange(n))
    out = []
    for k in range(max(1, min(LATENCY_SAMPLES, -(-n // batch)))):
        idx = order[np.arange(k * batch, (k + 1) * batch) % n]
        feed = {s["name"]: samples[s["name"]][idx] for s in names}
        if seq and lengths is not None:
            lens = np.maximum(lengths[idx], 1)
            if seq_mode == "task":
                width = int(lens.max()) if seq_len is None else min(int(lens.max()), seq_len)
                feed = {k2: (v[:, :width] if k2 in seq else v) for k2, v in feed.items()}
            elif seq_len is not None:
                feed = {k2: (np.stack([np.resize(r[: int(ln)], seq_len)
                                       for r, ln in zip(v, lens, strict=True)]).astype(v.dtype)
                             if k2 in seq else v) for k2, v in feed.items()}
        out.append({s["name"]: np.ascontiguousarray(feed[s["name"]].astype(s["dtype"]))
                    for s in names})
    return out


def _round(cand: Path, base: Path, env: dict[str, Any], feeds: list[dict[str, np.ndarray]],
           warmup: int, calls: int) -> tuple[float, float]:
    """One round: fresh sessions of ``cand`` and ``base``, warm-up, then ``calls`` timed calls
    of each, alternately; returns the two medians in ms."""
    import gc

    sessions = [_session(cand, env), _session(base, env)]
    for i in range(warmup):
        for s in sessions:
            s.run(None, feeds[i % len(feeds)])
    times: list[list[int]] = [[], []]
    gc_on = gc.isenabled()
    gc.disable()
    try:
        for i in range(calls):
            f = feeds[i % len(feeds)]
            for j in ((0, 1) if i % 2 == 0 else (1, 0)):
                t = time.perf_counter_ns()
                sessions[j].run(None, f)
                times[j].append(time.perf_counter_ns() - t)
    finally:
        if gc_on:
            gc.enable()
    del sessions
    return float(np.median(times[0])) / 1e6, float(np.median(times[1])) / 1e6


def _members(run: Path, metric: str, profile: str) -> list[dict[str, Any]]:
    members = []
    for m in json.loads((run / "front.json").read_text()):
        mdir = Path(m["artifacts"]["model.onnx"]).parent
        if not mdir.is_dir():  # front.json written on another machine: relative to the run
            mdir = run / "artifacts" / mdir.name
        manifest = json.loads((mdir / "manifest.json").read_text())
        onnx = mdir / "model.onnx"
        if _sha256(onnx) != manifest["files"]["model.onnx"]:
            raise SystemExit(f"trial {m['trial']}: {onnx} does not match its manifest's sha256")
        meas = manifest["measurements"].get(profile, {})
        # The front's latencies as reported: its re-time after the search where it has one
        # (search.retime_rounds), else the member's own measurement in the search.
        if meas.get("front_retime"):
            meas = {**meas["front_retime"], "source": "front re-time",
                    "batch_size": meas.get("batch_size")}
        else:
            meas = {**meas, "source": "search"}
        members.append({"trial": m["trial"], "phase": m.get("phase"), "config": m["config"],
                        "onnx": onnx, "manifest": manifest, "measurement": meas,
                        "reported_ms": float(m["metrics"][metric])})
    return members


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished run directory")
    ap.add_argument("--example", required=True, help="name of the result (which example)")
    ap.add_argument("--profile", default="cpu-1t")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=400, help="timed calls of each per round")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--base-trial", type=int, default=None,
                    help="a front member to use as the base when the run has no reference/")
    ap.add_argument("--core", type=int, default=None, help="core to pin to (default: the last)")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="wait up to this many seconds for the 1-minute load average < 0.6")
    ap.add_argument("--seed", type=int, default=0, help="the shuffle of the member order")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from paretoforge.hw_profiles import get_profile

    run = args.run.resolve()
    metric = f"latency_p50_ms@{args.profile}"
    members = _members(run, metric, args.profile)
    if len(members) < 2:
        raise SystemExit(f"{run}: the front has {len(members)} member(s); need >= 2 to rank")
    refs = sorted((run / "reference").glob("*/model.onnx"))
    if args.base_trial is not None:
        base_onnx = next(m["onnx"] for m in members if m["trial"] == args.base_trial)
        base_source = f"front member trial {args.base_trial}"
    elif len(refs) == 1:
        base_onnx, base_source = refs[0], f"reference/{refs[0].parent.name}"
    else:
        raise SystemExit(f"{run}: {len(refs)} reference artifacts; pass --base-trial N")

    finished, finished_source = _finished_at(run)
    retimed_at = [m["measurement"]["measured_at"] for m in members
                  if m["measurement"].get("measured_at")]
    if retimed_at and max(retimed_at) > finished:
        finished, finished_source = max(retimed_at), "the front's re-time (manifests)"
    age_s = time.time() - finished
    age_ok = age_s >= MIN_AGE_S
    if not age_ok:
        print(f"WARNING: the run finished {age_s / 60:.0f} min ago; the check wants >= 60 min",
              file=sys.stderr)

    prof = get_profile(args.profile)
    first = members[0]
    rec_env = first["measurement"].get("env", {})
    env = {"intra_op_threads": rec_env.get("intra_op_threads", prof.intra_op_threads or 1),
           "inter_op_threads": rec_env.get("inter_op_threads", prof.inter_op_threads),
           "graph_optimization": rec_env.get("graph_optimization", prof.graph_optimization),
           "allow_spinning": rec_env.get("allow_spinning", prof.allow_spinning)}
    batch = int(first["measurement"].get("batch_size", prof.batch_size))
    samples, inputs_match = _latency_samples(run, first["manifest"].get("latency_inputs", {}))
    if not inputs_match:
        print("WARNING: the latency samples' indices do not hash to the manifest's record",
              file=sys.stderr)
    feeds = _feeds(samples, first["manifest"]["inputs"], batch, prof.sequence_length,
                   prof.sequence_lengths, seed=0)

    wait_quiet(args.wait_quiet)
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    load_before = os.getloadavg()[0]
    t0 = time.time()
    per: dict[int, list[tuple[float, float]]] = {m["trial"]: [] for m in members}
    order = [m["trial"] for m in members]
    onnx = {m["trial"]: m["onnx"] for m in members}
    rng = random.Random(args.seed)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for t in order:
            per[t].append(_round(onnx[t], base_onnx, env, feeds, args.warmup, args.calls))
    wall = time.time() - t0
    load_after = os.getloadavg()[0]

    rows = []
    for m in sorted(members, key=lambda m: m["reported_ms"]):
        meas = m["measurement"]
        cand = [c for c, _ in per[m["trial"]]]
        base = [b for _, b in per[m["trial"]]]
        ratios = [c / b for c, b in per[m["trial"]]]
        ratio = float(np.median(ratios))
        low, high = meas.get("rel_low"), meas.get("rel_high")
        rel, base_ms = meas.get("rel_p50"), meas.get("base_p50_ms")
        row: dict[str, Any] = {
            "trial": m["trial"], "phase": m["phase"], "config": m["config"],
            "reported_ms": m["reported_ms"],
            "reported_abs_p50_ms": meas.get("p50_ms"),
            "reported_rel_p50": rel, "reported_rel_low": low, "reported_rel_high": high,
            "reported_rel_rounds": meas.get("rel_rounds"), "reported_source": meas["source"],
            "reported_rounds": meas.get("rounds"), "reported_stop": meas.get("stop_reason"),
            "reported_spread_rel": meas.get("spread_rel"),
            "reported_is_rel_x_base": (None if rel is None or base_ms is None else
                                       bool(abs(rel * base_ms - m["reported_ms"])
                                            <= 1e-9 * m["reported_ms"])),
            "remeasured_ratio": round(ratio, 5),
            "remeasured_ratio_rounds": [round(r, 5) for r in ratios],
            "remeasured_spread_rel": round((max(ratios) - min(ratios)) / 2 / ratio, 5),
            "remeasured_p50_ms": round(float(np.median(cand)), 5),
            "remeasured_round_p50_ms": [round(c, 5) for c in cand],
            "remeasured_base_round_p50_ms": [round(b, 5) for b in base],
            # Does the ratio follow the machine's speed (the base's round latency)? Drift-free
            # ratios do not: Spearman's rho across rounds, near 0 when they do not.
            "rho_ratio_vs_base_speed": round(_spearman(base, ratios), 3),
            "remeasured_base_p50_ms": round(float(np.median(base)), 5),
            "covered": (None if low is None or high is None else bool(low <= ratio <= high)),
        }
        if rel is not None:
            row["ratio_vs_reported_rel"] = round(ratio / rel, 4)
        if low is not None and high is not None and not row["covered"]:
            edge = low if ratio < low else high
            row["miss_rel"] = round(ratio / edge - 1, 4)  # how far outside, relative
        rows.append(row)

    reported = [r["reported_ms"] for r in rows]
    remeasured = [r["remeasured_ratio"] for r in rows]
    tau = kendall_tau_b(reported, remeasured)
    discordant = [(a["trial"], b["trial"]) for a, b in combinations(rows, 2)
                  if np.sign(a["reported_ms"] - b["reported_ms"])
                  * np.sign(a["remeasured_ratio"] - b["remeasured_ratio"]) < 0]
    abs_tau = None
    if all(r["reported_abs_p50_ms"] is not None for r in rows):
        abs_tau = kendall_tau_b([r["reported_abs_p50_ms"] for r in rows], remeasured)
    covered = [r["covered"] for r in rows if r["covered"] is not None]
    coverage = sum(covered) / len(covered) if covered else None
    base_ms_all = {r["trial"]: m["measurement"].get("base_p50_ms")
                   for r, m in zip(rows, sorted(members, key=lambda m: m["reported_ms"]),
                                   strict=True)}
    result = {
        "example": args.example,
        "run": str(run),
        "profile": args.profile,
        "members": len(rows),
        "kendall_tau_b": round(tau, 4),
        "tau_target_met": tau >= 0.9,
        "discordant_pairs": discordant,
        "kendall_tau_b_vs_reported_absolute_p50": None if abs_tau is None else round(abs_tau, 4),
        "coverage": None if coverage is None else round(coverage, 4),
        "coverage_members": len(covered),
        "coverage_target_met": None if coverage is None else coverage >= 0.9,
        "run_finished_utc": datetime.fromtimestamp(finished, UTC).strftime(
            "%Y-%m-%d %H:%M:%S"),
        "run_finished_source": finished_source,
        "age_s": round(age_s),
        "age_ok": age_ok,
        "base": {"source": base_source, "onnx": str(base_onnx),
                 "reported_base_p50_ms": sorted({v for v in base_ms_all.values()
                                                 if v is not None})},
        "inputs": {"samples": len(next(iter(samples.values()))), "batches": len(feeds),
                   "batch_size": batch, "match_manifest_sha256": inputs_match,
                   "shapes": {k: list(v.shape) for k, v in feeds[0].items()}},
        "protocol": (f"plain onnxruntime InferenceSession, CPU EP, {env}, sequential, pinned "
                     f"to core {core}; {args.rounds} rounds, each: members in shuffled order, "
                     f"per member fresh sessions of member and base, {args.warmup} warm-up "
                     f"calls each, {args.calls} timed calls each alternately (ABBA); ratio = "
                     f"median over rounds of (member round median / base round median)"),
        "wall_s": round(wall, 1),
        "machine": machine("onnxruntime"),
        "loadavg_1m": [round(load_before, 2), round(load_after, 2)],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "rows": rows,
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"measurement_fidelity_{args.example}.json"
    write_result(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    for r in rows:
        interval = ("n/a" if r["reported_rel_low"] is None else
                    f"[{r['reported_rel_low']:.4f}, {r['reported_rel_high']:.4f}]")
        print(f"trial {r['trial']:>4}  reported {r['reported_ms']:.5f} ms  rel "
              f"{r['reported_rel_p50'] or float('nan'):.4f} {interval}  re-measured "
              f"{r['remeasured_ratio']:.4f} (spread {r['remeasured_spread_rel']:.3f})  "
              f"covered {r['covered']}")


if __name__ == "__main__":
    main()
