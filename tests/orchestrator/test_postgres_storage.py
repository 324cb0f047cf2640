"""The study in PostgreSQL (Optuna's RDBStorage) on a real server this module starts on
loopback: clear errors before any work, no password in the run's records, and a search that a
second driver process resumes after the first is SIGKILLed."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from paretoforge import testing

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pf-s3cret-Zq81"  # the superuser's: no record of a run may hold it


def _pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql."""
    dirs = [*os.environ.get("PATH", "").split(os.pathsep),
            *sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                    key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit()
                    else 0, reverse=True)]
    for d in dirs:
        if d and all(os.access(Path(d) / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return Path(d)
    return None


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of this test module: superuser ``pf`` with :data:`PASSWORD`
    (scram-sha-256 on 127.0.0.1), its unix socket in a temporary directory."""

    port: int
    user: str = "pf"

    def url(self, database: str, *, password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql+psycopg2://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                password=PASSWORD, dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """initdb a temporary cluster and run it on 127.0.0.1 at a free port; stopped after.

    PostgreSQL refuses to run as root, so under root (CI) the cluster belongs to the
    ``postgres`` user (Debian's package makes it), else ``nobody``.
    """
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in "
                    "/usr/lib/postgresql/*/bin; `.ci/run` installs Debian's postgresql")
    root = Path(tempfile.mkdtemp(prefix="pf-pg-"))  # not under pytest's root-only tmp dirs
    run_as: dict[str, object] = {}
    if os.geteuid() == 0:
        try:
            who = pwd.getpwnam("postgres")
        except KeyError:
            who = pwd.getpwnam("nobody")
        os.chown(root, who.pw_uid, who.pw_gid)
        run_as = {"user": who.pw_uid, "group": who.pw_gid, "extra_groups": []}
    (root / "pw").write_text(PASSWORD + "\n")
    (root / "sock").mkdir()
    if run_as:
        for p in (root / "pw", root / "sock"):
            os.chown(p, run_as["user"], run_as["group"])  # type: ignore[arg-type]
    env = dict(os.environ, LC_ALL="C", LANG="C")

    def pg(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120,
                              **run_as)  # type: ignore[call-overload]

    port = _port()
    data = root / "data"
    try:
        res = pg("initdb", "-D", str(data), "-U", "pf", "--pwfile", str(root / "pw"),
                 "--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-sync")
        assert res.returncode == 0, res.stdout + res.stderr
        opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root / 'sock'} -c fsync=off "
                "-c max_connections=50 -c shared_buffers=16MB")
        res = pg("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
                 "-o", opts, "start")
        assert res.returncode == 0, res.stdout + res.stderr + _log(root)
        yield PostgresServer(port=port)
    finally:
        if data.is_dir():
            pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _log(root: Path) -> str:
    p = root / "server.log"
    return p.read_text()[-3000:] if p.is_file() else ""


def _spec_file(tmp_path: Path, storage: str, **search: object) -> Path:
    d = testing.tiny_spec_dict(search={"strategy": "per-candidate", **search}, storage=storage)
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _cli_in_process(*args: str) -> object:
    from paretoforge.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(("url", "kept", "shown"), [
    ("postgresql://pf:secret@db:5432/studies", "postgresql://pf@db:5432/studies",
     "postgresql://pf:***@db:5432/studies"),
    ("postgresql+psycopg2://pf:s%40t@db/s?password=x&sslmode=require",
     "postgresql+psycopg2://pf@db/s?sslmode=require",
     "postgresql+psycopg2://pf:***@db/s?sslmode=require"),
    ("postgresql://pf@db/studies", "postgresql://pf@db/studies", "postgresql://pf@db/studies"),
    ("sqlite:////tmp/a@b.db", "sqlite:////tmp/a@b.db", "sqlite:////tmp/a@b.db"),
])
def test_url_without_password(url: str, kept: str, shown: str) -> None:
    from paretoforge.orchestrator.storage import url_without_password

    assert url_without_password(url) == kept
    assert url_without_password(url, mask=True) == shown


def test_a_run_records_no_password_and_accepts_its_spec_again(tmp_path: Path) -> None:
    """spec.yaml holds the URL without the password; the spec with it is the same search."""
    from paretoforge.orchestrator.driver import _check_run_dir, _recorded

    spec = testing.tiny_spec(storage=f"postgresql://pf:{PASSWORD}@db:5432/studies")
    (tmp_path / "spec.yaml").write_text(_recorded(spec).to_yaml())
    assert PASSWORD not in (tmp_path / "spec.yaml").read_text()
    assert "postgresql://pf@db:5432/studies" in (tmp_path / "spec.yaml").read_text()
    _check_run_dir(spec, tmp_path)  # resuming with the password-bearing spec: no refusal
    from paretoforge.exceptions import SpecError

    with pytest.raises(SpecError, match="storage"):  # another database is another search
        _check_run_dir(spec.model_copy(update={"storage": "postgresql://pf@db/other"}),
                       tmp_path)


def test_missing_driver_is_one_line_before_any_work(tmp_path: Path) -> None:
    """psycopg 3 is not what the test extra installs: its dialect names the package."""
    pytest.importorskip("psycopg2")
    try:
        import psycopg  # noqa: F401

        pytest.skip("psycopg 3 is installed here; no missing driver to show")
    except ImportError:
        pass
    url = f"postgresql+psycopg://pf:{PASSWORD}@127.0.0.1:{_port()}/db"
    run_dir = tmp_path / "run"
    res = _cli_in_process("search", str(_spec_file(tmp_path, url)), "--run-dir", str(run_dir))
    assert res.exit_code == 2, res.output
    assert "storage" in res.output and "'psycopg'" in res.output
    assert "pip install psycopg[binary]" in res.output
    assert PASSWORD not in res.output
    assert not run_dir.exists(), "nothing is written before the storage is reached"


def test_unreachable_server_is_one_line_before_any_work(tmp_path: Path) -> None:
    pytest.importorskip("psycopg2")
    url = f"postgresql+psycopg2://pf:{PASSWORD}@127.0.0.1:{_port()}/db"  # nothing listens
    run_dir = tmp_path / "run"
    res = _cli_in_process("search", str(_spec_file(tmp_path, url)), "--run-dir", str(run_dir))
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: storage 'postgresql+psycopg2://pf:***@127.0.0.1:")
    assert "cannot open the database" in res.output and "server runs" in res.output
    assert PASSWORD not in res.output
    assert not run_dir.exists()


def test_wrong_password_names_where_the_password_goes(postgres, tmp_path: Path) -> None:
    from paretoforge.exceptions import SpecError
    from paretoforge.orchestrator.storage import open_rdb

    db = postgres.create_database("pf_wrong_pw")
    with pytest.raises(SpecError, match="PGPASSWORD") as err:
        open_rdb(postgres.url(db).replace(PASSWORD, "not-it"))
    assert "not-it" not in str(err.value)
    storage = open_rdb(postgres.url(db))  # the right one: Optuna's tables are made
    assert storage.get_all_studies() == []


def _count(storage: object, name: str) -> int:
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return 0
    return sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))


@pytest.mark.slow
def test_search_in_postgres_resumes_from_another_driver(postgres, tmp_path: Path,
                                                        monkeypatch) -> None:
    """The first driver holds the password in its spec and is SIGKILLed after two trials; a
    second process resumes from the run's spec.yaml (no password) with PGPASSWORD."""
    from paretoforge._io import sha256_file
    from paretoforge._ray_auth import ensure_ray_auth
    from paretoforge.names import TrialAttr
    from paretoforge.orchestrator.results import load_run
    from paretoforge.orchestrator.storage import open_rdb

    db = postgres.create_database("pf_resume")
    url = postgres.url(db)
    watch = open_rdb(url)  # one connection pool for the test's own polling
    target = 5
    spec = _spec_file(tmp_path, url, trials=target)
    name = yaml.safe_load(spec.read_text())["name"]
    run_dir = tmp_path / "run"
    ensure_ray_auth()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               PARETOFORGE_CACHE=str(tmp_path / "cache"))
    for k in ("RAY_ADDRESS", "PGPASSWORD", "PGPASSFILE"):
        env.pop(k, None)
    out = tmp_path / "first-driver.log"  # a file, not a pipe nobody reads while it runs
    with out.open("w") as sink:
        driver = subprocess.Popen(
            [sys.executable, "-m", "paretoforge.cli", "search", str(spec), "--run-dir",
             str(run_dir)], env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and driver.poll() is None:
            if _count(watch, name) >= 2:
                break
            time.sleep(0.5)
        assert driver.poll() is None, out.read_text()[-3000:]
        assert _count(watch, name) >= 2, "the search made progress before the kill"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        try:  # the driver's own Ray cluster (same session) goes with it
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    first_out = out.read_text()
    recorded = yaml.safe_load((run_dir / "spec.yaml").read_text())["storage"]
    assert recorded == postgres.url(db, password=False)
    assert not (run_dir / "study.journal").exists(), "the study is in PostgreSQL"

    import optuna

    before = {t.number: t for t in optuna.load_study(study_name=name, storage=watch).get_trials()}
    done_before = {n for n, t in before.items() if t.state.name == "COMPLETE"}
    assert len(done_before) >= 2
    # What a build writes (the manifest alone is rewritten at the end, with test metrics).
    built_files = {n: sorted(p for p in (run_dir / "artifacts" / t.user_attrs[TrialAttr.KEY])
                             .iterdir() if p.name != "manifest.json")
                   for n, t in before.items() if n in done_before
                   and TrialAttr.CACHED_FROM not in t.user_attrs}
    stamps = {n: [p.stat().st_mtime_ns for p in ps] for n, ps in built_files.items()}
    assert all(built_files.values())

    # Another driver process, from the run's record alone: without a password it is told
    # where one goes; with PGPASSWORD it finishes the search.
    resume = [sys.executable, "-m", "paretoforge.cli", "resume", str(run_dir), "--quiet"]
    res = subprocess.run(resume, env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "PGPASSWORD" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = subprocess.run(resume, env=dict(env, PGPASSWORD=PASSWORD), cwd=ROOT,
                         capture_output=True, text=True, timeout=900, start_new_session=True)
    assert res.returncode == 0, res.stdout + res.stderr

    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # load_run reads the recorded URL too
    run = load_run(run_dir)
    trials = run.study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(len(trials))), "each number once"
    assert not [t for t in trials if t.state.name == "RUNNING"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == target
    built = [t.user_attrs[TrialAttr.KEY] for t in complete
             if TrialAttr.CACHED_FROM not in t.user_attrs]
    assert len(built) == len(set(built)), "a configuration was built twice"
    after = {t.number: t for t in complete}
    for n in done_before:  # nothing finished is lost, changed or run again
        assert after[n].values == before[n].values
        assert after[n].user_attrs.get(TrialAttr.ATTEMPTS) == \
            before[n].user_attrs.get(TrialAttr.ATTEMPTS)
    for n, ps in built_files.items():
        assert [p.stat().st_mtime_ns for p in ps] == stamps[n], f"trial {n} was rebuilt"
    for t in complete:
        art = run.artifact_dir(t)
        manifest = json.loads((art / "manifest.json").read_text())
        for fname, digest in manifest["files"].items():
            assert sha256_file(art / fname) == digest
    assert run.front()

    # No record of the run holds the password: not a file of it, not what the drivers said.
    for path in run_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert PASSWORD not in first_out + res.stdout + res.stderr
