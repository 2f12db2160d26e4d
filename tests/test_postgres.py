"""The production set-up of docs/PRODUCTION.md, run verbatim on a real PostgreSQL server.

The bash blocks of the doc's section "The production instance, step by step" are extracted (as
.ci/run extracts the README's commands) and run in order, non-interactively, each after step 0 (the
settings), from the project's folder, with this test's own folders, free loopback ports and password
in the environment: from a stopped server (step 1 creates and starts it, with Debian's ``initdb``
and ``pg_ctl`` run as ``postgres``) to ``dg launch`` of the whole graph (the runs, materializations,
check results and the core's ``pipeline.*`` log records read back from PostgreSQL), then the two
services in the background and the schedule turned on, set to fire every minute, until the run the
daemon launched is recorded as succeeded. The services are stopped, the server stopped and its
folder deleted at the end. Skipped, with the reason, where PostgreSQL or root is missing (failed
instead in CI, which sets CI_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from http_server import shared_data_dir

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOC = ROOT / "docs" / "PRODUCTION.md"
SECTION = "### The production instance, step by step"
INSTALL = "apt-get install -y postgresql (README, Tests and CI)"
PASSWORD = "ti-test-password"
_BLOCK = re.compile(r"^ *```bash\n(.*?)^ *```", re.S | re.M)


def doc_steps() -> list[str]:
    """The bash blocks of the doc's step-by-step section, in order (step 0 first)."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    section = section[:section.index("\n### ", 1)]
    return [textwrap.dedent(block) for block in _BLOCK.findall(section)]


def _unavailable(reason: str):
    """Skip where PostgreSQL cannot run; fail instead in CI (.ci/run sets CI_REQUIRE_POSTGRES=1)."""
    if os.environ.get("CI_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"CI_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _step(number: int, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run step ``number`` of the doc after step 0 (its settings), verbatim, from the project's folder."""
    steps = doc_steps()
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", f"{steps[0]}\n{steps[number]}"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"docs/PRODUCTION.md step {number}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


def test_the_doc_has_the_six_steps_and_nothing_interactive():
    steps = doc_steps()
    assert len(steps) == 6 and steps[3].strip() == "dg launch --assets '*' -m pipeline.definitions"
    for step in steps:
        assert "--pwprompt" not in step and "dagster dev" not in step and "..." not in step


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    """Steps 0 to 3 of the doc run: the server started, DAGSTER_HOME made, the first build launched.
    Yields the environment of every process and step 3's output; stops services and server after."""
    try:
        import dagster_postgres  # noqa: F401
    except ImportError:
        _unavailable("the [postgres] extra is not installed: pip install -e '.[postgres]'")
    # the newest server, as step 1 takes it (Debian keeps the programs out of PATH)
    pg_ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not pg_ctl:
        _unavailable(f"PostgreSQL server programs (initdb, pg_ctl) not found: {INSTALL}")
    if os.geteuid() != 0:
        _unavailable("docs/PRODUCTION.md's steps run as root (the server as `postgres`, with runuser)")
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        _unavailable(f"no `postgres` user to run the server as: {INSTALL}")
    data = shared_data_dir()
    if not data.is_dir():
        pytest.skip("shared data not found (set TI_MIRROR_DIR)")
    # The server's folder outside pytest's (mode 700, root's): `postgres` must reach it.
    pg_root = Path(tempfile.mkdtemp(prefix="ti-pg-"))
    os.chown(pg_root, account.pw_uid, account.pw_gid)
    base = tmp_path_factory.mktemp("dagster_prod")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "DAGSTER_HOME": str(base / "home"), "PGDATA": str(pg_root / "data"),
           "TI_OUTPUT_DIR": str(base / "out"), "TI_RAW_DIR": str(base / "raw"), "TI_MIRROR_DIR": str(data),
           "DAGSTER_PG_PORT": str(_free_port()), "DAGSTER_PG_PASSWORD": PASSWORD,
           "DAGSTER_WEBSERVER_HOST": "127.0.0.1", "DAGSTER_WEBSERVER_PORT": str(_free_port())}
    env.pop("TI_PLANS_PATH", None)
    services: list[int] = []
    try:
        _step(1, env, timeout=180)
        _step(2, env)
        launched = _step(3, env)
        yield {"env": env, "launched": launched, "services": services}
    finally:
        for group in services:
            _stop_group(group)
        subprocess.run(["runuser", "-u", "postgres", "--", pg_ctl[-1], "-D", env["PGDATA"], "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(pg_root, ignore_errors=True)


def _stop_group(group: int) -> None:
    """SIGTERM to every process of the group, SIGKILL to those left after a minute."""
    with contextlib.suppress(ProcessLookupError):   # raised once no process of the group is left
        os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            os.killpg(group, 0)
            time.sleep(1)
        os.killpg(group, signal.SIGKILL)


def _instance(env, monkeypatch):
    """The instance of DAGSTER_HOME, as the services load it (its YAML reads DAGSTER_PG_*)."""
    from dagster import DagsterInstance

    for key in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(key, _doc_value(env, key))
    return DagsterInstance.from_config(env["DAGSTER_HOME"])


def _doc_value(env, key: str) -> str:
    """A variable as step 0 sets it (the doc fixes some, e.g. DAGSTER_PG_HOST)."""
    out = subprocess.run(["bash", "-e", "-c", f'{doc_steps()[0]}\nprintf %s "${key}"'], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def _sql(env, query: str):
    """One query straight on the server: what Dagster recorded is really in PostgreSQL."""
    import psycopg2

    with psycopg2.connect(host=_doc_value(env, "DAGSTER_PG_HOST"), port=env["DAGSTER_PG_PORT"],
                          dbname=_doc_value(env, "DAGSTER_PG_DB"), user=_doc_value(env, "DAGSTER_PG_USER"),
                          password=PASSWORD) as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def test_materialize_everything_into_postgres(production, monkeypatch):
    from dagster import AssetCheckKey, AssetKey, DagsterRunStatus

    env = production["env"]
    assert "SupersessionWarning" not in production["launched"].stderr
    with _instance(env, monkeypatch) as instance:
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

    assert _sql(env, "select status from runs") == [("SUCCESS",)]
    (count,), = _sql(env, "select count(*) from event_logs where dagster_event_type = 'ASSET_CHECK_EVALUATION'")
    assert count == 12                               # six blocking checks on each phase
    assert (Path(env["TI_OUTPUT_DIR"]) / "manifest.json").is_file()


def test_services_and_schedule_launch_a_run_recorded_in_postgres(production, monkeypatch):
    """Steps 4 and 5 with the schedule set to every minute (TI_SCHEDULE_CRON): the webserver answers,
    the daemon launches the scheduled run and evaluates the freshness policies (deploy/dagster.yaml)."""
    from dagster import AssetKey, DagsterRunStatus, RunsFilter

    env = {**production["env"], "TI_SCHEDULE_CRON": "* * * * *", "TI_SCHEDULE_TIMEZONE": "UTC"}
    steps = doc_steps()
    # Step 4 starts the services in the background and returns; they stay in its process group.
    starter = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", f"{steps[0]}\n{steps[4]}"], cwd=ROOT, env=env,
                               start_new_session=True)
    production["services"].append(starter.pid)
    assert starter.wait(timeout=60) == 0
    _step(5, env, timeout=300)
    home = Path(env["DAGSTER_HOME"])

    def logs() -> str:
        return "\n".join((home / n).read_text()[-2000:] for n in ("daemon.log", "webserver.log")
                         if (home / n).is_file())

    url = f"http://127.0.0.1:{env['DAGSTER_WEBSERVER_PORT']}/server_info"
    deadline, info = time.monotonic() + 120, None
    while info is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                info = json.load(response)
        except OSError:
            time.sleep(2)
    assert info is not None, f"the webserver did not answer at {url}:\n{logs()}"

    source = AssetKey.from_user_string("sources/ti2023_communes")
    scheduled = RunsFilter(tags={"dagster/schedule_name": "weekly_build"})
    with _instance(env, monkeypatch) as instance:
        # Bounded: the next minute boundary, then a whole build_all run queued behind any other.
        deadline, runs = time.monotonic() + 360, []
        while time.monotonic() < deadline:
            runs = instance.get_runs(filters=scheduled)
            if runs and runs[-1].is_finished:
                break
            time.sleep(3)
        assert runs and runs[-1].is_finished, f"no finished scheduled run within 360 s:\n{logs()}"
        first = runs[-1]
        assert first.status == DagsterRunStatus.SUCCESS, logs()
        assert first.tags["ti/trigger"] == "weekly_build"
        state = None
        # The daemon's freshness evaluation (every 30 s) records the policy's state.
        while time.monotonic() < deadline + 60 and state is None:
            record = instance.get_freshness_state_records([source]).get(source)
            state = record.freshness_state.value if record else None
            time.sleep(2)
        assert state == "PASS", f"freshness of {source.to_user_string()}: {state}"
    assert _sql(env, f"select status from runs where run_id = '{first.run_id}'") == [("SUCCESS",)]
