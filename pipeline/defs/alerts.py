"""Alerts and freshness: a webhook on every failed run, and warnings when the data gets old.

* ``failure_alert`` (a run-failure sensor, running by default) POSTs a short JSON message to
  ``TI_ALERT_WEBHOOK_URL``: ``{"text", "run_id", "job", "step", "error"}`` with the first failed
  step and the first line of its error. Nothing is sent when the variable is unset.
* Freshness policies (Dagster's ``FreshnessPolicy.time_window``, evaluated by the daemon when the
  instance has ``freshness: enabled: true``, as deploy/dagster.yaml does): the ``publish`` assets
  turn WARN when their last materialization (the published release) is older than
  ``TI_RELEASE_MAX_AGE_DAYS`` (8) and FAIL at twice that; the ``sources`` assets when they were
  last fetched (checked for changes) longer ago than ``TI_SOURCES_MAX_AGE_HOURS`` (26), FAIL at
  twice that. The state shows on each asset in the UI; a change of state is an event in the log.
"""

from __future__ import annotations

import datetime as dt

from dagster import DefaultSensorStatus, FreshnessPolicy, RunFailureSensorContext, SkipReason, run_failure_sensor

from ..settings import Settings, lenient_from_env

ALERT_SENSOR_NAME = "failure_alert"
RELEASE_GROUP, SOURCES_GROUP = "publish", "sources"


def failure_message(context: RunFailureSensorContext) -> dict[str, str]:
    """Run id, job, the first failed step and the first line of its error (else the run's own)."""
    run = context.dagster_run
    steps = context.get_step_failure_events()
    if steps:
        step = steps[0].step_key or ""
        error = steps[0].step_failure_data.error
        text = error.message if error else steps[0].message or ""
    else:
        step = ""
        text = context.failure_event.message or ""
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    where = f" at step {step}" if step else ""
    return {"text": f"territoires-industrie: run {run.run_id} of {run.job_name} failed{where}: {first_line}",
            "run_id": run.run_id, "job": run.job_name, "step": step, "error": first_line}


def webhook_url() -> str | None:
    """TI_ALERT_WEBHOOK_URL, validated; kept when another TI_* value is wrong (lenient reading), so
    that the runs this wrong value makes fail are still reported."""
    return lenient_from_env()[0].alert_webhook_url


def post_alert(url: str, message: dict[str, str], timeout: float = 10.0) -> None:
    import requests  # on a failure only: the code location loads without an HTTP client

    response = requests.post(url, json=message, timeout=timeout)
    response.raise_for_status()


@run_failure_sensor(name=ALERT_SENSOR_NAME, default_status=DefaultSensorStatus.RUNNING,
                    description="POSTs a JSON message (run id, failed step, first line of the error) to "
                                "TI_ALERT_WEBHOOK_URL for each failed run; nothing when it is unset.")
def failure_alert(context: RunFailureSensorContext):
    url = webhook_url()
    if not url:
        return SkipReason("TI_ALERT_WEBHOOK_URL is not set")
    message = failure_message(context)
    post_alert(url, message)
    context.log.info(f"alert sent for run {message['run_id']}")
    return None


def freshness_policy(group: str | None, settings: Settings) -> FreshnessPolicy | None:
    """The policy of an asset of ``group``: warn past the configured age, fail past twice it."""
    if group == RELEASE_GROUP:
        age = dt.timedelta(days=settings.release_max_age_days)
    elif group == SOURCES_GROUP:
        age = dt.timedelta(hours=settings.sources_max_age_hours)
    else:
        return None
    return FreshnessPolicy.time_window(fail_window=2 * age, warn_window=age)
