"""The benchmark's step profile: each thread nests its own steps, and the table shows measured runs only."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_a_side_thread_step_is_not_nested_in_the_main_threads_step():
    jobs = _module("jobs")
    sampler = jobs.Sampler()
    steps = jobs.Steps(sampler)
    started, release = threading.Event(), threading.Event()

    def side_work():
        started.set()
        release.wait(5)

    def main_work():
        # the side thread's step starts while the main thread is inside its own step
        side = threading.Thread(target=steps.run, args=("reconcile", side_work))
        side.start()
        started.wait(5)
        steps.run("union", lambda: None)
        release.set()
        side.join()

    steps.run("repair", main_work)
    sampler.stop()
    rows = {(r["step"], r["depth"], r["side"]) for r in steps.summary()}
    assert rows == {("repair", 0, False), ("union", 1, False), ("reconcile", 0, True)}


def test_the_steps_table_leaves_out_the_cold_run_and_marks_side_threads():
    report = _module("report")

    def rec(run: int, seconds: float, warmup: bool) -> dict:
        return {"method": "ours", "scale": 1, "run": run, "rc": 0, "warmup": warmup,
                "report": {"steps": [
                    {"step": "scan", "depth": 0, "side": False, "calls": 1, "seconds": seconds,
                     "peak_rss": 100 * report.MB},
                    {"step": "reconcile", "depth": 0, "side": True, "calls": 1, "seconds": seconds,
                     "peak_rss": 100 * report.MB}]}}

    lines = report._steps({"records": [rec(0, 9.0, True), rec(1, 1.0, False), rec(2, 3.0, False)]}, [1])
    rows = [line for line in lines if line.startswith(("| `", "| &"))]
    assert rows == ["| `scan` | 2.00 | 100 |", "| `reconcile` (side thread) | 2.00 | 100 |"]


def test_the_steps_table_has_rows_of_its_own_scales_only():
    """A large scale's single run (from an empty cache, not a column of the table) adds no row."""
    report = _module("report")

    def rec(scale: int, step: str) -> dict:
        return {"method": "ours", "scale": scale, "run": 1, "rc": 0, "warmup": False,
                "report": {"steps": [{"step": step, "depth": 0, "side": False, "calls": 1, "seconds": 1.0,
                                      "peak_rss": 100 * report.MB}]}}

    lines = report._steps({"records": [rec(1, "scan"), rec(64, "reconcile")]}, [1])
    assert [line for line in lines if line.startswith("| `")] == ["| `scan` | 1.00 | 100 |"]


def test_the_header_tells_the_machines_load_at_the_start_from_the_load_the_benchmark_makes():
    report = _module("report")
    machine = dict.fromkeys(("cpu", "cores", "ram_gib", "os", "python", "shapely", "geos", "geopandas", "node",
                             "git_commit"), "x")
    info = {"machine": machine, "started": "s", "runs": 1, "command": "c",
            "records": [{"load1_before": 0.5}, {"load1_before": 1.5}, {"load1_before": 1.0}]}
    before = [line for line in report._header(info, "") if line.startswith("Load average")]
    assert len(before) == 1 and "at the start" not in before[0] and "median 1.00, max 1.50" in before[0]
    started = [line for line in report._header({**info, "load_at_start": 0.25}, "") if line.startswith("Load average")]
    assert len(started) == 1 and "at the start: 0.25" in started[0] and "median 1.00" in started[0]
