"""paretoforge._ray_auth: the local cluster listens on loopback only, a command without an
address never joins another cluster, and an address that does not answer fails in one line.

Each case runs in a subprocess of its own (one Ray per process; the test session has its own
cluster), with Ray's temporary directory (``RAY_TMPDIR``) private to the test, so that a stale
current-cluster file can be planted without touching the machine's.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    # Short: Ray's unix sockets live under it and their paths are limited to 107 bytes.
    d = Path(tempfile.mkdtemp(prefix="pfr", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _env(ray_tmp: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1", **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paretoforge.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


SEARCH_WATCHING_SOCKETS = textwrap.dedent("""
    import json, sys, threading, time
    import psutil
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.testing import FakeWorker, tiny_spec

    seen, nice, stop = set(), {}, threading.Event()

    def watch():  # every Ray process this driver started, all through the search
        me = psutil.Process()
        while not stop.is_set():
            for p in me.children(recursive=True):
                try:
                    if p.name().startswith("ray::"):
                        nice[p.name()] = max(nice.get(p.name(), -99), p.nice())
                    for c in p.net_connections(kind="inet"):
                        if c.status == psutil.CONN_LISTEN:
                            seen.add((p.name(), c.laddr.ip, c.laddr.port))
                except psutil.Error:
                    pass
            time.sleep(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    spec = tiny_spec({"trials": 4, "sampler": "random"})
    summary = run_search(spec, sys.argv[1], worker_cls=FakeWorker,
                         progress=Progress(4, live=False, quiet=True))
    stop.set()
    t.join()
    print(json.dumps({"completed": summary.completed, "listening": sorted(seen),
                      "worker_nice": nice, "driver_nice": psutil.Process().nice()}))
""")


def test_the_local_cluster_of_a_search_listens_on_loopback_only_at_the_drivers_priority(
        ray_tmp: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", SEARCH_WATCHING_SOCKETS, str(tmp_path / "run")],
                         env=_env(ray_tmp), capture_output=True, text=True, timeout=600,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["completed"] == 4
    listening = result["listening"]
    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names, listening  # the watch saw the cluster
    assert any(n.startswith("ray::") for n in names), listening  # and its workers
    exposed = [x for x in listening if not _loopback(x[1])]
    assert exposed == [], f"Ray processes listening beyond loopback: {exposed}"
    # Ray's default would start the workers at niceness 15, where a normal-priority job on the
    # same machine starves the search (issue 13: the quickstart under a CPU hog).
    assert result["worker_nice"], result
    assert set(result["worker_nice"].values()) == {result["driver_nice"]}, result


def test_doctor_without_address_ignores_a_stale_current_cluster(ray_tmp: Path) -> None:
    """`ray start` ended uncleanly: Ray's current-cluster file names a cluster that is gone.
    doctor starts its own local cluster instead of trying to reach it (it hung for > 5 min)."""
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_free_port()}")
    t = time.monotonic()
    out = _cli(["doctor", "--json"], _env(ray_tmp), timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert [n["address"] for n in report["nodes"]] == ["127.0.0.1"]  # its own, loopback node
    assert report["nodes"][0]["probe"]["identity"]["calibration"]["fp32_gflops"] > 0
    print(f"doctor answered in {time.monotonic() - t:.1f}s")


@pytest.mark.parametrize("command", [["doctor"], ["profiles"]])
def test_an_address_nothing_listens_on_is_one_line_exit_2(ray_tmp: Path,
                                                          command: list[str]) -> None:
    addr = f"127.0.0.1:{_free_port()}"
    out = _cli([*command, "--address", addr], _env(ray_tmp), timeout=120)
    assert out.returncode == 2, (out.stdout, out.stderr[-2000:])
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: could not connect to the Ray cluster at '{addr}': nothing answers on"), lines
    assert "Traceback" not in out.stderr


def test_an_address_that_accepts_and_never_answers_fails_in_bounded_time(
        ray_tmp: Path) -> None:
    with socket.socket() as silent:  # accepts TCP connections (the kernel does), says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        addr = f"127.0.0.1:{silent.getsockname()[1]}"
        t = time.monotonic()
        out = _cli(["doctor", "--address", addr],
                   _env(ray_tmp, PARETOFORGE_RAY_CONNECT_TIMEOUT_S="4"), timeout=120)
        took = time.monotonic() - t
    assert out.returncode == 2, (out.stdout, out.stderr[-2000:])
    assert f"could not connect to the Ray cluster at '{addr}'" in out.stderr
    assert "does not answer as a Ray GCS" in out.stderr
    assert took < 100  # the subprocess timeout is the hang guard; this says it was bounded


JOIN_A_REAL_CLUSTER = textwrap.dedent("""
    import json, subprocess, sys
    from paretoforge.testing import multi_node_cluster

    with multi_node_cluster(head={"num_cpus": 1}) as c:  # token auth on, token in the env
        out = subprocess.run([sys.executable, "-m", "paretoforge.cli", "doctor", "--json",
                              "--address", c.address], capture_output=True, text=True,
                             timeout=240)
        print(json.dumps({"address": c.address, "head": c.head.node_id, "rc": out.returncode,
                          "stdout": out.stdout, "stderr": out.stderr[-2000:]}))
""")


def test_doctor_joins_the_cluster_its_address_names(ray_tmp: Path) -> None:
    """The GCS check before ray.init passes a real cluster with token auth."""
    out = subprocess.run([sys.executable, "-c", JOIN_A_REAL_CLUSTER], env=_env(ray_tmp),
                         capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["rc"] == 0, r["stderr"]
    report = json.loads(r["stdout"])
    assert [n["node_id"] for n in report["nodes"]] == [r["head"]]
