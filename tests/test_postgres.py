"""The production set-up of docs/PRODUCTION.md on a real PostgreSQL server.

A throwaway server (Debian's ``postgresql``: ``initdb`` + ``pg_ctl``, as the ``postgres`` user when
run as root) listens on a free loopback port; ``DAGSTER_HOME`` holds ``deploy/dagster.yaml``
verbatim, the connection given by the ``DAGSTER_PG_*`` variables. Then, with the README's commands:
the whole graph materialized by ``dg launch`` (runs, materializations, check results and the core's
``pipeline.*`` log records read back from PostgreSQL), and ``dagster-daemon run`` with the schedule
set to fire every minute, until the run it launched is recorded as succeeded. The server is
stopped and its folder deleted at the end. Skipped, with the reason, where PostgreSQL is missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from http_server import shared_data_dir

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INSTALL = "apt-get install -y postgresql (README, Tests and CI)"
DB, USER, PASSWORD = "dagster", "dagster", "ti-test-password"
LOCATION = ROOT / "tests" / "pg_location.py"


def _postgres_bindir() -> Path | None:
    """Debian keeps the server programs out of PATH, under /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(dirs[-1]).parent if dirs else None


def _unavailable(reason: str):
    """Skip where PostgreSQL cannot run; fail instead in CI (.ci/run sets CI_REQUIRE_POSTGRES=1)."""
    if os.environ.get("CI_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"CI_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A running server with an empty ``dagster`` database; yields the DAGSTER_PG_* variables."""
    try:
        import dagster_postgres  # noqa: F401
    except ImportError:
        _unavailable("the [postgres] extra is not installed: pip install -e '.[postgres]'")
    bindir = _postgres_bindir()
    if bindir is None:
        _unavailable(f"PostgreSQL server programs (initdb, pg_ctl) not found: {INSTALL}")
    # The server refuses to run as root: run it as `postgres` (created by the Debian package).
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable(f"running as root and no `postgres` user to run the server as: {INSTALL}")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="ti-pg-"))
    if as_user:
        os.chown(root, account.pw_uid, account.pw_gid)
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        os.chown(pwfile, account.pw_uid, account.pw_gid)
    port = _free_port()
    data, log = root / "data", root / "server.log"

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "-E", "UTF8", "--locale=C")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off")
    except subprocess.CalledProcessError as err:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {err.stderr or err.stdout}")
    try:
        env = {"PGPASSWORD": PASSWORD}
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DB],
                       check=True, capture_output=True, env={**os.environ, **env}, timeout=60)
        yield {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_DB": DB,
               "DAGSTER_PG_USER": USER, "DAGSTER_PG_PASSWORD": PASSWORD}
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def home(postgres, tmp_path_factory):
    """DAGSTER_HOME with deploy/dagster.yaml copied as is, and the environment of every process."""
    data = shared_data_dir()
    if not data.is_dir():
        pytest.skip("shared data not found (set TI_MIRROR_DIR)")
    base = tmp_path_factory.mktemp("dagster_prod")
    dagster_home = base / "home"
    dagster_home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, **postgres, "DAGSTER_HOME": str(dagster_home), "TI_MIRROR_DIR": str(data),
           "TI_OUTPUT_DIR": str(base / "out"), "TI_RAW_DIR": str(base / "raw")}
    env.pop("TI_PLANS_PATH", None)
    return env


def _instance(env, monkeypatch):
    """The instance of DAGSTER_HOME, as the services load it (its YAML reads DAGSTER_PG_*)."""
    from dagster import DagsterInstance

    for key in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(key, env[key])
    return DagsterInstance.from_config(env["DAGSTER_HOME"])


def _sql(env, query: str):
    """One query straight on the server: what Dagster recorded is really in PostgreSQL."""
    import psycopg2

    with psycopg2.connect(host=env["DAGSTER_PG_HOST"], port=env["DAGSTER_PG_PORT"], dbname=env["DAGSTER_PG_DB"],
                          user=env["DAGSTER_PG_USER"], password=env["DAGSTER_PG_PASSWORD"]) as conn, \
            conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def test_materialize_everything_into_postgres(home, monkeypatch):
    from dagster import AssetCheckKey, AssetKey, DagsterRunStatus

    # The README's first command (Dagster's current CLI), against the PostgreSQL instance.
    proc = subprocess.run([str(BIN / "dg"), "launch", "--assets", "*", "-m", "pipeline.definitions"],
                          cwd=ROOT, env=home, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SupersessionWarning" not in proc.stderr

    with _instance(home, monkeypatch) as instance:
        assert instance.run_storage.__class__.__name__ == "PostgresRunStorage"
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.SUCCESS
        for key in ("sources/ti2023_communes", "territories_2023_2027", "published_2023_2027"):
            event = instance.get_latest_materialization_event(AssetKey.from_user_string(key))
            assert event is not None and event.run_id == run.run_id, key
        check = AssetCheckKey(AssetKey("territories_2023_2027"), "territory_count")
        execution = instance.event_log_storage.get_latest_asset_check_execution_by_key([check])[check]
        assert execution.run_id == run.run_id and execution.status.value == "SUCCEEDED"
        # The core's own logger (pipeline.publish.release) reaches the run logs.
        messages = [e.user_message for e in instance.all_logs(run.run_id)]
        assert any(m.startswith("published release ") for m in messages)

    assert _sql(home, "select status from runs") == [("SUCCESS",)]
    (count,), = _sql(home, "select count(*) from event_logs where dagster_event_type = 'ASSET_CHECK_EVALUATION'")
    assert count == 12                               # six blocking checks on each phase


def test_daemon_runs_the_schedule_and_records_it(home, tmp_path, monkeypatch):
    """The daemon with the schedule set to every minute (TI_SCHEDULE_CRON) on a one-asset location;
    it also evaluates that asset's freshness policy (deploy/dagster.yaml enables it)."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    env = {**home, "TI_SCHEDULE_CRON": "* * * * *", "TI_SCHEDULE_TIMEZONE": "UTC"}
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_file:\n      relative_path: {LOCATION}\n"
                         f"      working_directory: {ROOT}\n")
    start = subprocess.run([str(BIN / "dagster"), "schedule", "start", "weekly_build", "-w", str(workspace)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert start.returncode == 0, start.stderr[-3000:]

    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "daemon.log", "w"),  # noqa: SIM115 - written until the daemon stops
                              start_new_session=True)
    scheduled = RunsFilter(tags={"dagster/schedule_name": "weekly_build"})
    try:
        with _instance(home, monkeypatch) as instance:
            # Bounded: the next minute boundary, then a one-asset run (measured: ~75 s in all).
            deadline = time.monotonic() + 180
            runs = []
            while time.monotonic() < deadline and daemon.poll() is None:
                runs = instance.get_runs(filters=scheduled)
                if runs and runs[0].is_finished:
                    break
                time.sleep(2)
            assert runs, "no scheduled run within 180 s:\n" + (tmp_path / "daemon.log").read_text()[-3000:]
            assert runs[0].status == DagsterRunStatus.SUCCESS, (tmp_path / "daemon.log").read_text()[-3000:]
            assert runs[0].tags["ti/trigger"] == "weekly_build"
            (materialized,) = instance.all_logs(runs[0].run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
            source = materialized.dagster_event.asset_key
            state = None
            # The daemon's freshness evaluation (every 30 s) records the policy's state.
            while time.monotonic() < deadline + 40 and state is None:
                record = instance.get_freshness_state_records([source]).get(source)
                state = record.freshness_state.value if record else None
                time.sleep(2)
            assert state == "PASS", f"freshness of {source.to_user_string()}: {state}"
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
    rows = _sql(home, f"select status from runs where run_id = '{runs[0].run_id}'")
    assert rows == [("SUCCESS",)]
