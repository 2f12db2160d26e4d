"""The one settings object: ranges, one-line messages naming the variable, unknown variables,
the Dagster resource's coverage, and a code location that loads with a bad value."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.settings import Settings, SettingsError, env_names
from pipeline.sources.catalog import load_catalog

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("var, value", [
    ("TI_HTTP_TIMEOUT", "1m"), ("TI_HTTP_TIMEOUT", "0"), ("TI_HTTP_TIMEOUT", "nan"), ("TI_HTTP_TIMEOUT", "-5"),
    ("TI_HTTP_RETRIES", "2.5"), ("TI_HTTP_RETRIES", "99"), ("TI_HTTP_BACKOFF", "-1"),
    ("TI_HTTP_BACKOFF", "inf"), ("TI_HTTP_MAX_RETRY_AFTER", "inf"), ("TI_HTTP_MAX_RETRY_AFTER", "1e9"),
    ("TI_KEEP_RELEASES", "0"), ("TI_KEEP_RELEASES", "-1"), ("TI_KEEP_RELEASES", "five"),
])
def test_bad_value_names_variable_value_and_expected_form(var, value):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({var: value})
    message = str(err.value)
    assert message.startswith(f"{var}={value!r}: expected ")
    assert "\n" not in message and isinstance(err.value, PipelineError)


def test_values_in_range_are_parsed_and_paths_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({"TI_HTTP_TIMEOUT": " 2.5 ", "TI_HTTP_RETRIES": "0", "TI_KEEP_RELEASES": "1",
                           "TI_MIRROR_DIR": "mirror", "TI_PLANS_PATH": "", "TI_URL_TI2023_COMMUNES": "https://x/y.csv"})
    assert (s.http_timeout, s.http_retries, s.keep_releases) == (2.5, 0, 1)
    assert s.mirror_dir == tmp_path / "mirror" and s.offline
    assert s.plans_path is None                          # empty means unset
    assert s.url_overrides == {"ti2023_communes": "https://x/y.csv"}
    # The defaults of data_raw/ and data_out/ are in the working directory, not the package.
    assert Settings.from_env({}).raw_dir == tmp_path / "data_raw"
    assert Settings.from_env({}).output_dir == tmp_path / "data_out"


def test_direct_construction_and_replace_are_validated():
    with pytest.raises(ValueError, match="keep_releases"):
        Settings(keep_releases=0)
    s = Settings()
    assert s.replace(http_retries=1).http_retries == 1
    with pytest.raises(SettingsError, match=r"^TI_HTTP_TIMEOUT="):
        s.replace(http_timeout=float("nan"))


def test_unknown_variable_is_warned_with_the_closest_name(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.settings"):
        Settings.from_env({"TI_OUTPT_DIR": "x", "TI_OUTPUT_DIR": ""})
    assert "unknown setting TI_OUTPT_DIR ignored (did you mean TI_OUTPUT_DIR?)" in caplog.text


def test_url_override_must_be_http_and_name_a_catalog_source():
    with pytest.raises(SettingsError, match=r"^TI_URL_TI2023_COMMUNES is not an http\(s\) URL"):
        Settings.from_env({"TI_URL_TI2023_COMMUNES": "file:///etc/passwd"})
    misspelt = Settings.from_env({"TI_URL_TI2023_COMUNES": "https://example.org/x.csv"})
    with pytest.raises(SettingsError, match=r"^TI_URL_TI2023_COMUNES: no source named 'ti2023_comunes'"):
        load_catalog(misspelt)


def test_dagster_resource_has_one_field_per_variable():
    from pipeline.defs.resources import PipelineSettings

    fields = set(PipelineSettings.model_fields)
    assert fields == set(env_names().values())
    resource = PipelineSettings(http_retries="1", output_dir="/tmp/ti-out")
    s = resource.settings()
    assert s.http_retries == 1 and s.output_dir == Path("/tmp/ti-out")
    with pytest.raises(SettingsError, match=r"^TI_HTTP_RETRIES='lots'"):
        PipelineSettings(http_retries="lots").settings()


def test_code_location_loads_with_a_bad_value_and_runs_fail_with_one_line():
    env = {**os.environ, "TI_HTTP_TIMEOUT": "1m"}
    code = ("from pipeline.definitions import defs\n"
            "from pipeline.defs.resources import PipelineSettings\n"
            "assert defs.resolve_asset_graph().get_all_asset_keys()\n"
            "try:\n    PipelineSettings().settings()\nexcept Exception as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ERR TI_HTTP_TIMEOUT='1m': expected seconds" in out.stdout
    assert "TI_HTTP_TIMEOUT='1m'" in out.stderr        # logged once while loading


def test_code_location_loads_with_a_misspelt_url_override():
    env = {**os.environ, "TI_URL_NOT_A_SOURCE": "https://example.org/x.csv"}
    code = "from pipeline.definitions import defs\nassert defs.resolve_asset_graph().get_all_asset_keys()\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
