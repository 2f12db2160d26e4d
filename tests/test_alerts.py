"""The run-failure alert: a real failed run (a source missing from the mirror) posts its JSON message
to a loopback webhook receiver; nothing is sent when TI_ALERT_WEBHOOK_URL is unset. And the
freshness policies set from TI_RELEASE_MAX_AGE_DAYS / TI_SOURCES_MAX_AGE_HOURS."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context

from pipeline.definitions import defs
from pipeline.defs.alerts import failure_alert
from pipeline.defs.assets import ALL_ASSETS
from pipeline.defs.automation import automate
from pipeline.settings import Settings

GRAPH = defs.resolve_asset_graph()
SOURCE = next(k for k in sorted(GRAPH.materializable_asset_keys, key=str) if GRAPH.get(k).group_name == "sources")


class Receiver:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append({"content_type": self.headers["Content-Type"],
                                 "json": json.loads(self.rfile.read(length))})
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def failed_run(tmp_path, monkeypatch):
    """(instance, context of the failure sensor) for a real run whose fetch step failed."""
    (tmp_path / "empty_mirror").mkdir()
    monkeypatch.setenv("TI_MIRROR_DIR", str(tmp_path / "empty_mirror"))
    with DagsterInstance.ephemeral() as instance:
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={SOURCE})
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        (failure,) = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
        context = build_run_status_sensor_context(sensor_name="failure_alert", dagster_event=failure.dagster_event,
                                                  dagster_instance=instance, dagster_run=run).for_run_failure()
        yield run, context


def test_a_failed_run_posts_its_step_and_first_error_line(failed_run, monkeypatch):
    run, context = failed_run
    receiver = Receiver()
    monkeypatch.setenv("TI_ALERT_WEBHOOK_URL", receiver.url)
    try:
        failure_alert(context)
    finally:
        receiver.close()
    (body,) = receiver.bodies
    assert body["content_type"] == "application/json"
    message = body["json"]
    assert message["run_id"] == run.run_id
    assert message["step"] == defs.resolve_assets_def(SOURCE).op.name     # the step that fetches the sources
    assert "mirror file not found" in message["error"] and "\n" not in message["error"]
    assert message["text"].startswith(f"territoires-industrie: run {run.run_id} of {run.job_name} failed at step ")


def test_the_production_doc_shows_the_message_the_code_sends(failed_run):
    """docs/PRODUCTION.md's example: the same keys, step and error's first words as a real failure."""
    from pathlib import Path

    from pipeline.defs.alerts import failure_message

    _, context = failed_run
    sent = failure_message(context)
    doc = (Path(__file__).resolve().parent.parent / "docs" / "PRODUCTION.md").read_text(encoding="utf-8")
    shown = json.loads(doc.split("```json\n", 1)[1].split("```", 1)[0])
    assert list(shown) == list(sent) and shown["step"] == sent["step"]
    assert shown["error"].split(":")[0] == sent["error"].split(":")[0]      # the exception's class first
    assert shown["text"].startswith("territoires-industrie: run ") and f"at step {sent['step']}: " in shown["text"]


def test_nothing_is_sent_without_a_webhook_url(failed_run, monkeypatch):
    _, context = failed_run
    receiver = Receiver()
    monkeypatch.delenv("TI_ALERT_WEBHOOK_URL", raising=False)
    try:
        result = failure_alert(context)
    finally:
        receiver.close()
    assert receiver.bodies == []
    assert "TI_ALERT_WEBHOOK_URL is not set" in result.skip_message


def test_freshness_policies_from_the_environment():
    policies = {s.key: s.freshness_policy for a in automate(ALL_ASSETS, Settings.from_env({
                    "TI_RELEASE_MAX_AGE_DAYS": "3", "TI_SOURCES_MAX_AGE_HOURS": "12"}))
                for s in a.specs}
    published = [k for k in policies if GRAPH.get(k).group_name == "publish"]
    assert published and all(policies[k].warn_window.to_timedelta() == dt.timedelta(days=3) for k in published)
    assert all(policies[k].fail_window.to_timedelta() == dt.timedelta(days=6) for k in published)
    assert policies[SOURCE].warn_window.to_timedelta() == dt.timedelta(hours=12)
    assert all(policies[k] is None for k in policies if GRAPH.get(k).group_name not in ("publish", "sources"))


def test_a_freshness_age_under_a_minute_names_the_variable():
    from pipeline.settings import SettingsError

    with pytest.raises(SettingsError, match=r"TI_SOURCES_MAX_AGE_HOURS='0.001': expected hours, a number >= 0.02"):
        automate(ALL_ASSETS, Settings.from_env({"TI_SOURCES_MAX_AGE_HOURS": "0.001"}))
