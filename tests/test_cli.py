"""The command line, run in process (``main([...])``) on the real shared data into temporary folders."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.cli import main
from pipeline.settings import Settings
from pipeline.steps import since_published
from pipeline.steps.since_published import changes_since_manifest

ROOT = Path(__file__).resolve().parent.parent


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".publish.lock"}


@pytest.fixture(scope="module")
def built(mirror, tmp_path_factory):
    """One real build and publish of 2023-2027 with the CLI (shared by the tests of this module)."""
    out = tmp_path_factory.mktemp("cli") / "out"
    args = ["build", "--offline", "--mirror", str(mirror), "--output", str(out)]
    code, _stdout, stderr = run(args)
    return {"args": args, "out": out, "code": code, "stderr": stderr}


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_build_publishes_and_exits_0(built):
    assert built["code"] == 0, built["stderr"]
    out = built["out"]
    m = manifest(out)
    assert m["phase"] == "2023-2027" and all(c["passed"] for c in m["checks"])
    for entry in m["outputs"]:
        assert (out / entry["path"]).is_file()
    log = built["stderr"]
    assert "building (reconcile, scan, repair and dissolve, attributes, checks) ..." in log   # progress lines
    assert f"published build {m['build_id']}" in log and "Traceback" not in log


def test_unchanged_second_run_exits_3_and_touches_nothing(built):
    before = snapshot(built["out"])
    code, _, stderr = run(built["args"])
    assert code == 3, stderr
    assert "nothing changed" in stderr
    assert snapshot(built["out"]) == before


# The data stack a build needs; a run that finds nothing changed only fetches (or probes) and
# compares hashes, and their import was most of its time and memory (bench/RESULTS.md, "Nothing changed").
DATA_STACK = ("pandas", "numpy", "pyarrow", "geopandas", "shapely", "pyogrio", "pyproj", "matplotlib")


def test_unchanged_run_imports_no_data_stack(built):
    script = ("import sys\nfrom pipeline.cli import main\ncode = main(sys.argv[1:])\n"
              f"print(code, sorted(m for m in {DATA_STACK!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script, *built["args"]], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip() == "3 []", proc.stdout + proc.stderr
    assert "nothing changed" in proc.stderr


def test_force_rebuilds_and_exits_0(built):
    old = manifest(built["out"])["build_id"]
    code, _, stderr = run([*built["args"], "--force"])
    assert code == 0, stderr
    assert "rebuilding: --force" in stderr
    new = manifest(built["out"])["build_id"]
    assert new != old
    assert {d.name for d in (built["out"] / "releases").iterdir()} >= {old, new}


def test_what_counts_as_a_change(built, tmp_path, monkeypatch):
    out = built["out"]
    settings = Settings(mirror_dir=Path(built["args"][3]), output_dir=out)
    shas = {i["source"]: i["sha256"] for i in manifest(out)["inputs"]}
    assert changes_since_manifest(settings, "2023-2027", shas) == []
    assert changes_since_manifest(settings, "2023-2027", {**shas, "ti2023_communes": "0" * 64}) == [
        f"input ti2023_communes: {shas['ti2023_communes'][:12]} -> {'0' * 12}"]
    plans = tmp_path / "plans.csv"
    plans.write_text("id_ti,axe_innovation\nti-8418,true\n", encoding="utf-8")
    with_plans = Settings(mirror_dir=settings.mirror_dir, output_dir=out, plans_path=plans)
    assert changes_since_manifest(with_plans, "2023-2027", shas)[0].startswith("plan table: none -> ")
    monkeypatch.setattr(since_published, "__version__", "99.0")
    assert changes_since_manifest(settings, "2023-2027", shas) == [
        f"pipeline_version {manifest(out)['pipeline_version']} -> 99.0"]
    assert changes_since_manifest(settings, "2018-2022", shas)[0].startswith("no published manifest")
    monkeypatch.undo()
    # a code change without a version bump is seen through the manifest's code version
    monkeypatch.setattr(since_published, "build_code_version", lambda: "f" * 64)
    assert changes_since_manifest(settings, "2023-2027", shas) == [
        f"code changed: {manifest(out)['extra']['code_fingerprint'][:12]} -> {'f' * 12}"]


def test_bad_plan_file_exits_2_with_one_line_and_keeps_files(built, tmp_path):
    before = snapshot(built["out"])
    bad = tmp_path / "plans.csv"
    bad.write_text("id_ti,axe_innovation\nti-8418,maybe\n", encoding="utf-8")
    code, _, stderr = run([*built["args"], "--plans", str(bad)])
    assert code == 2
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and f"{bad}:2: column axe_innovation" in lines[-1]
    assert "Traceback" not in stderr and "building" not in stderr      # refused before the long build
    assert snapshot(built["out"]) == before

    code, _, stderr = run([*built["args"], "--plans", str(tmp_path / "missing.csv")])
    assert code == 2 and stderr.strip() == f"error: plan table not found: {tmp_path / 'missing.csv'} (TI_PLANS_PATH / --plans)"


def test_bad_mirror_path_exits_2_with_one_line(tmp_path):
    code, _, stderr = run(["build", "--offline", "--mirror", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")])
    assert code == 2
    assert stderr.strip() == f"error: mirror folder not found: {tmp_path / 'nowhere'} (TI_MIRROR_DIR / --mirror)"
    assert not (tmp_path / "o").exists()


def test_mirror_missing_a_file_exits_2_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, stderr = run(["build", "--offline", "--mirror", str(tmp_path / "empty"), "--output", str(tmp_path / "o")])
    assert code == 2
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: source communes_boundaries: mirror file not found: ")
    assert "Traceback" not in stderr


def test_offline_needs_a_mirror(monkeypatch, tmp_path):
    monkeypatch.delenv("TI_MIRROR_DIR", raising=False)
    code, _, stderr = run(["build", "--offline", "--output", str(tmp_path)])
    assert code == 2 and stderr.strip() == "error: --offline needs the mirror folder: set TI_MIRROR_DIR or pass --mirror DIR"


def test_unexpected_error_exits_1_with_traceback(monkeypatch, mirror, tmp_path):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli, "build_phase", boom)
    code, _, stderr = run(["build", "--offline", "--mirror", str(mirror), "--output", str(tmp_path)])
    assert code == 1
    assert "Traceback" in stderr and stderr.strip().splitlines()[-1] == "unexpected error: RuntimeError: disk on fire"


def test_check_sources_prints_each_probe(mirror, tmp_path):
    from pipeline.sources.catalog import load_catalog

    names = list(load_catalog(Settings()).sources)
    code, stdout, _ = run(["check-sources", "--offline", "--mirror", str(mirror)])
    assert code == 0
    rows = [line.split("\t") for line in stdout.strip().splitlines()]
    assert [r[0] for r in rows] == [*names, "plan_table"]
    assert all(r[1] == "mirror" and r[2].startswith("sha256:") and len(r[2]) == 71 for r in rows[:-1])
    assert rows[-1][2] == "none"

    (tmp_path / "empty").mkdir()
    code, stdout, stderr = run(["check-sources", "--offline", "--mirror", str(tmp_path / "empty")])
    assert code == 2 and stdout.count("\tERROR\t") == len(names)
    assert stderr.strip() == f"error: {len(names)} of {len(names)} sources could not be probed (see above)"


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "build", "--offline", "--mirror", str(tmp_path / "no")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: mirror folder not found: {tmp_path / 'no'} (TI_MIRROR_DIR / --mirror)"


def test_all_phases_fetch_each_source_once(mirror, monkeypatch):
    """`build --phase all` fetches the union of the phases' sources once, then builds each phase from it."""
    from pipeline.sources import resolve
    from pipeline.sources.catalog import load_catalog
    from pipeline.steps import sequence as steps

    settings = Settings(mirror_dir=mirror)
    catalog = load_catalog(settings)
    calls = []
    real = resolve.fetch_one
    monkeypatch.setattr(resolve, "fetch_one", lambda s, c, name, *a: calls.append(name) or real(s, c, name, *a))
    fetched = cli.fetch_for(settings, catalog, list(catalog.phases), cli.Progress(io.StringIO()))
    assert sorted(calls) == sorted(set(calls)) == sorted(fetched)
    files = {phase: steps.phase_files(catalog, phase, fetched) for phase in catalog.phases}
    assert set(fetched) == set(files["2023-2027"]) | set(files["2018-2022"])
    # the 2018-2022 phase reads no 2023-2027 list; the 2023-2027 one reads the 2018-2022 list (is_new)
    assert "ti2023_communes" not in files["2018-2022"] and "ti2018_groupements" in files["2023-2027"]


def test_failed_checks_name_the_check_and_its_first_items():
    """The one-line error of a failed build (CLI exit 2, Dagster's Failure): check, territory, code, file, line."""
    from pipeline.steps import quality

    results = [quality.CheckResult("territory_count", True, True, "", {"expected": 2, "found": 2}),
               quality.CheckResult("communes_accounted_for", False, True, "", {"errors": [
                   f"ti-{i}: commune 9799{i} (line {i + 1} of lists.csv) is not a COG 2023 commune code"
                   for i in range(5)], "n_errors": 5}),
               quality.CheckResult("no_unexpected_overlaps", False, True, "", {"overlapping_pairs": [["ti-1", "ti-2"]]})]
    assert quality.failure_message(results) == (
        "blocking checks failed, nothing published: communes_accounted_for (ti-0: commune 97990 (line 1 of "
        "lists.csv) is not a COG 2023 commune code; ti-1: commune 97991 (line 2 of lists.csv) is not a COG 2023 "
        "commune code; ti-2: commune 97992 (line 3 of lists.csv) is not a COG 2023 commune code and 2 more), "
        "no_unexpected_overlaps (ti-1 / ti-2)")


def test_version_prints_package_and_contract_versions():
    from pipeline import CONTRACT_VERSION, __version__

    proc = subprocess.run([sys.executable, "-m", "pipeline", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"territoires-industrie {__version__} (contract {CONTRACT_VERSION})"


def test_top_level_help_is_plain_text_with_commands_settings_exit_codes_and_an_example():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["--help"])
    text = out.getvalue()
    assert exit_.value.code == 0
    for markup in ("``", ":mod:", ":meth:", ":func:", ".. "):   # reStructuredText roles and directives
        assert markup not in text
    for command in ("build", "check-sources", "lookup"):
        assert f"    {command}" in text
    for name in cli.MAIN_SETTINGS:
        assert Settings.__pydantic_fields__[name].json_schema_extra["env"] in text   # type: ignore[attr-defined]
    for code in (cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_UNCHANGED, cli.EXIT_NOT_FOUND, cli.EXIT_UNEXPECTED):
        assert f"\n  {code} " in text.split("exit codes:")[1]
    example = text.split("example")[1].splitlines()[1].split()
    assert example[1] == "territoires-industrie"
    args = cli.parser().parse_args(example[2:])   # the example is a valid command line
    assert args.command == "build" and args.offline
