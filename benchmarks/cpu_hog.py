"""The quickstart on an idle machine and under a CPU hog: what the load costs, and that nothing
is lost or run twice.

Runs ``paretoforge search examples/quickstart.yaml`` in a fresh run directory twice: once idle,
once while busy-loop processes at normal priority (one per core, ``--hogs``) keep every core
busy for the whole run. Beforehand a one-trial search in the same cache trains (or finds) the
base model and the supernet, so both timed runs find both cached and do the same work. Each
run must exit 0 and be intact: every trial COMPLETE, or FAIL with a reason; none left RUNNING;
no content key built twice; every artifact's files match its manifest's checksums.

Usage:
    flock /work/notes/heavy.lock .venv/bin/python benchmarks/cpu_hog.py \
        [--out benchmarks/results/cpu_hog.json] [--hogs 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples/quickstart.yaml"


def _spin() -> None:  # a CPU hog: one core, normal priority, until killed
    while True:
        pass


def _search(run_dir: Path, env: dict[str, str], *extra: str) -> tuple[float, int, str]:
    exe = Path(sys.executable).parent / "paretoforge"
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), "search", str(SPEC), "--run-dir", str(run_dir), *extra],
                          env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, proc.returncode, proc.stdout[-2000:] + proc.stderr[-2000:]


def intact(run_dir: Path) -> dict[str, Any]:
    """What the run holds, and whether anything was lost or built twice."""
    from paretoforge._io import sha256_file
    from paretoforge.names import TrialAttr
    from paretoforge.orchestrator.results import load_run

    run = load_run(run_dir)
    trials = run.study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    failed = [t for t in trials if t.state.name == "FAIL"]
    built = [t.user_attrs.get(TrialAttr.KEY) for t in complete
             if TrialAttr.CACHED_FROM not in t.user_attrs and t.user_attrs.get(TrialAttr.KEY)]
    bad_files = []
    artifacts = 0
    for t in complete:
        art = run.artifact_dir(t)
        if not (art / "manifest.json").is_file():
            continue
        artifacts += 1
        manifest = json.loads((art / "manifest.json").read_text())
        bad_files += [f"{t.number}:{n}" for n, d in manifest["files"].items()
                      if sha256_file(art / n) != d]
    problems = []
    if len(built) != len(set(built)):
        problems.append("a content key was built twice")
    if states.get("RUNNING") or states.get("WAITING"):
        problems.append(f"trials left unfinished: {states}")
    unexplained = [t.number for t in failed if not t.user_attrs.get(TrialAttr.FAIL_REASON)]
    if unexplained:
        problems.append(f"FAIL without a reason: trials {unexplained}")
    if bad_files:
        problems.append(f"checksum mismatch: {bad_files[:5]}")
    if not complete:
        problems.append("no trial completed")
    return {"trials": len(trials), "states": states, "built_keys": len(built),
            "artifacts_verified": artifacts, "front_size": len(run.front()),
            "fail_reasons": sorted({str(t.user_attrs.get(TrialAttr.FAIL_REASON))[:120]
                                    for t in failed}),
            "intact": not problems, "problems": problems}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/cpu_hog.json"))
    ap.add_argument("--hogs", type=int, default=os.cpu_count() or 2,
                    help="busy-loop processes during the loaded run (default: one per core)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pf-cpuhog-"))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.pop("RAY_ADDRESS", None)
    # Warm the cache (base model and supernet) so both timed runs do the same work.
    warm_s, rc, tail = _search(work / "warm", env, "--trials", "1", "--quiet")
    if rc != 0:
        print("warm-up failed:", tail, file=sys.stderr)
        return 1
    runs: dict[str, Any] = {}
    for load in ("idle", "loaded"):
        hogs: list[mp.Process] = []
        if load == "loaded":
            hogs = [mp.Process(target=_spin, daemon=True) for _ in range(args.hogs)]
            for h in hogs:
                h.start()
            time.sleep(2)
        loadavg = os.getloadavg()[0]
        try:
            wall, rc, tail = _search(work / load, env, "--quiet")
        finally:
            alive = all(h.is_alive() for h in hogs)  # busy for the whole run
            for h in hogs:
                h.kill()
                h.join()
        runs[load] = {"wall_s": round(wall, 1), "exit_code": rc, "loadavg_at_start":
                      round(loadavg, 2), "hogs": len(hogs), "hogs_alive_at_end": alive,
                      **(intact(work / load) if (work / load / "run.json").is_file() else
                         {"intact": False, "problems": ["no run.json"]})}
        if rc != 0:
            runs[load]["output_tail"] = tail
        print(load, json.dumps(runs[load]), flush=True)
    idle, loaded = runs["idle"], runs["loaded"]
    result = {
        "command": "flock /work/notes/heavy.lock .venv/bin/python benchmarks/cpu_hog.py",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "search": "paretoforge search examples/quickstart.yaml --run-dir RUN --quiet",
        "cache": "base model and supernet warm (a --trials 1 search first, "
                 f"{warm_s:.0f} s)",
        "idle": idle, "loaded": loaded,
        "wall_ratio_loaded_over_idle": round(loaded["wall_s"] / idle["wall_s"], 2),
        "ok": bool(idle["exit_code"] == 0 and loaded["exit_code"] == 0 and idle["intact"]
                   and loaded["intact"]),
        "machine": machine("ray", "torch", "onnxruntime", "optuna"),
    }
    write_result(Path(args.out), result)
    print(json.dumps({k: result[k] for k in ("wall_ratio_loaded_over_idle", "ok")}))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
