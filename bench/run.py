"""Benchmark: our core build against mapshaper and a naive geopandas dissolve, at several scales.

    python bench/run.py                      # scales 1,4,16; 3 runs each; Dagster at 1x
    python bench/run.py --quick              # scales 1,4; 1 run; no Dagster (a few minutes)
    python bench/run.py --scales 1,4 --runs 5 --methods ours,mapshaper
    python bench/run.py --runs 5 --baseline b8415b0   # + the main job A/B against a git ref

Each measured job runs in its own subprocess; its wall time and max RSS come from ``os.wait4`` in a small helper (``bench/measure.py``)
(node included for mapshaper; for Dagster the largest process of its tree). Methods are
interleaved within each run, their order rotated from run to run; ratios ours/peer are taken per
pair of runs (same scale, same run). Quality figures come from the outputs of the last run
(``bench/quality.py``). Writes ``bench/RESULTS.md`` and the raw figures to
``bench/work/results/<stamp>.json``. Reads the shared data from TI_MIRROR_DIR (default
``../shared/data``); scratch inputs live in ``bench/work`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import mainjob
import numpy as np
import prepare
import quality
from report import render

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
MAPSHAPER_VERSION = "0.7.70"
MAPSHAPER_JS = WORK / "node_modules" / "mapshaper" / "bin" / "mapshaper"
ALL_METHODS = ["ours", "mapshaper", "naive", "cli", "dagster", "baseline"]
# the main job: the same build and publication of both phases through the CLI and through Dagster,
# and through the CLI of a baseline commit (``--baseline REF``)
MAIN_JOB = ("cli", "dagster", "baseline")
# the runs on unchanged inputs after the main job: the CLI offline (mirror) and live (loopback
# server), and Dagster; each ends without building (CLI exit code 3)
UNCHANGED = ("unchanged-offline", "unchanged-live", "unchanged-dagster")
QUALITY_METHODS = ("ours", "mapshaper", "naive", "dagster")   # whose outputs get quality figures
LARGE_METHODS = ("ours", "mapshaper")   # the methods run at the large scales (--large-scales)
LARGE_BUDGET_BYTES = 2.5 * 2**30        # ours must finish within this peak at the large scales
BASELINE: dict = {}                     # {"tree": Path, "sha": str} when --baseline is given


def sh(cmd: list[str], **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout.strip()


def ensure_mapshaper() -> str:
    """Install mapshaper into bench/work with the machine's npm (once); return its version."""
    if not MAPSHAPER_JS.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        print(f"installing mapshaper@{MAPSHAPER_VERSION} into {WORK} ...", flush=True)
        subprocess.run(["npm", "install", "--prefix", str(WORK), "--no-audit", "--no-fund",
                        "--no-save", f"mapshaper@{MAPSHAPER_VERSION}"], check=True)
    version = sh(["node", str(MAPSHAPER_JS), "-v"])
    if version != MAPSHAPER_VERSION:
        sys.exit(f"benchmark: mapshaper {version} in {WORK}, expected {MAPSHAPER_VERSION}; "
                 f"remove {WORK / 'node_modules'} and re-run")
    return version


def machine() -> dict:
    import geopandas
    import shapely
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
               if ln.startswith("MemTotal"))
    try:
        commit = sh(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT)
        dirty = bool(sh(["git", "status", "--porcelain", "--", "pipeline", "bench"], cwd=ROOT))
    except (subprocess.CalledProcessError, FileNotFoundError):
        commit, dirty = "unknown", False
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem / 2**20, 1),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "shapely": shapely.__version__, "geos": shapely.geos_version_string,
            "geopandas": geopandas.__version__, "node": sh(["node", "--version"]),
            "git_commit": commit + ("+dirty" if dirty else "")}


def measure(cmd: list[str], log: Path, env: dict | None = None, cwd: Path = ROOT, timeout: float | None = None) -> dict:
    """Run cmd through bench/measure.py: wall time, max RSS (bytes), CPU seconds, exit code."""
    load = os.getloadavg()[0]
    result = log.with_suffix(".measure.json")
    subprocess.run([sys.executable, "-S", "-I", str(BENCH / "measure.py"), str(result), str(log),
                    *([str(timeout)] if timeout else []), "--", *cmd], env=env, cwd=cwd, check=True)
    out = json.loads(result.read_text())
    out["load1_before"] = load
    if out["rc"] != 0:
        out["error"] = log.read_text(errors="replace")[-2000:]
        if out.get("timed_out"):
            out["error"] += f"\nkilled after {timeout:g} s (--large-timeout)"
    return out


def job_command(method: str, scale: int, out: Path, report: Path) -> tuple[list[str], dict | None, Path]:
    """(command, environment or None, working directory) of one measured job."""
    mirror = prepare.mirror_dir(scale)
    py = sys.executable
    if method == "ours":
        # the download cache persists between runs like data_raw in a scheduled build (it holds
        # the parse cache of the references); the first run of each scale starts it empty
        return [py, str(BENCH / "jobs.py"), "ours", "--mirror", str(mirror), "--out", str(out),
                "--raw", str(ours_raw(scale)), "--report", str(report)], None, ROOT
    if method == "naive":
        return [py, str(BENCH / "jobs.py"), "naive", "--mirror", str(mirror), "--out", str(out),
                "--members", str(WORK / "members.csv"), "--report", str(report)], None, ROOT
    if method == "mapshaper":
        src = prepare.scale_dir(scale) / "members.geojson"
        return ["node", str(MAPSHAPER_JS), str(src), "-clean", "-dissolve", "id_ti",
                "-o", str(out / "mapshaper.geojson"), "format=geojson"], None, ROOT
    if method in MAIN_JOB:
        # both keep their download and parse cache between runs (like data_raw between builds);
        # the first run of each scale starts from empty ones and is not counted
        env = main_job_env(method, scale, out)
        if method == "dagster":
            return [py, "-m", "dagster", "asset", "materialize", "-m", "pipeline.definitions", "--select", "*"], env, ROOT
        cwd = BASELINE["tree"] if method == "baseline" else ROOT   # its own `pipeline` comes first on sys.path
        return [py, "-m", "pipeline", "build", "--phase", "all", "--force"], env, cwd
    raise ValueError(method)


def main_job_env(method: str, scale: int, out: Path) -> dict:
    home = main_job_home(method, scale)
    env = dict(os.environ, DAGSTER_HOME=str(home / "home"), TI_MIRROR_DIR=str(prepare.mirror_dir(scale)),
               TI_RAW_DIR=str(home / "raw"), TI_OUTPUT_DIR=str(out))
    env.pop("TI_PLANS_PATH", None)
    return env


def ours_raw(scale: int) -> Path:
    return WORK / "raw" / f"scale-{scale}x"


def main_job_home(method: str, scale: int) -> Path:
    """DAGSTER_HOME (``home``) and download cache (``raw``) of a main-job method at a scale."""
    return WORK / method / f"scale-{scale}x"


def output_of(method: str, out: Path) -> Path:
    if method in ("naive", "mapshaper"):
        return out / f"{method}.geojson"
    return out / "territoires-industrie.parquet"


def succeeded(rec: dict) -> bool:
    """The job ended as expected (the unchanged runs end with exit code 3: nothing to build)."""
    return rec["rc"] == rec.get("expect_rc", 0)


def run_job(method: str, scale: int, run: int, results_dir: Path, timeout: float | None = None) -> dict:
    out = results_dir / f"{method}-{scale}x"
    if out.exists():
        shutil.rmtree(out)      # only the last run's output is kept (for quality)
    out.mkdir(parents=True)
    report = results_dir / f"{method}-{scale}x-run{run}.json"
    cmd, env, cwd = job_command(method, scale, out, report)
    rec = {"method": method, "scale": scale, "run": run}
    log = results_dir / f"{method}-{scale}x-run{run}.log"
    rec.update(measure(cmd, log, env=env, cwd=cwd, timeout=timeout))
    if report.is_file():
        rec["report"] = json.loads(report.read_text())
    rec["output"] = str(output_of(method, out))
    if method in MAIN_JOB:
        rec["stages"] = mainjob.stages(out, log)
    status = "ok" if succeeded(rec) else f"FAILED rc={rec['rc']}"
    print(f"  {scale:>2}x run {run} {method:<9} {rec['wall']:7.1f} s {rec['max_rss'] / 2**20:7.0f} MB"
          f"  cpu {rec['cpu']:6.1f} s  load {rec['load1_before']:.1f}  {status}", flush=True)
    return rec


def run_unchanged(method: str, scale: int, run: int, results_dir: Path, cmd: list[str], env: dict,
                  extra=None) -> dict:
    """One run on unchanged inputs into the last main-job run's output folder (nothing is built)."""
    rec = {"method": method, "scale": scale, "run": run, "expect_rc": 3 if method != "unchanged-dagster" else 0}
    before = _build_ids(Path(env["TI_OUTPUT_DIR"]))
    rec.update(measure(cmd, results_dir / f"{method}-{scale}x-run{run}.log", env=env))
    rec["new_releases"] = sorted(set(_build_ids(Path(env["TI_OUTPUT_DIR"]))) - set(before))
    if extra is not None:
        rec.update(extra())
    print(f"  {scale:>2}x run {run} {method:<18} {rec['wall']:7.2f} s {rec['max_rss'] / 2**20:7.0f} MB  "
          f"rc {rec['rc']}  new releases {len(rec['new_releases'])}  load {rec['load1_before']:.1f}", flush=True)
    return rec


def _build_ids(out: Path) -> list[str]:
    """The build ids published in an output folder (one per phase and release)."""
    return sorted(p.parent.parent.name + "/" + p.parent.name for p in (out / "releases").glob("*/*/manifest.json"))


def unchanged_runs(scale: int, runs: int, results_dir: Path, methods: list[str]) -> list[dict]:
    """The CLI offline and live, and Dagster, each ``runs`` times on inputs their last build published."""
    py = sys.executable
    build = [py, "-m", "pipeline", "build", "--phase", "all"]
    records = []
    if "cli" in methods:
        env = main_job_env("cli", scale, results_dir / f"cli-{scale}x")
        records += [run_unchanged("unchanged-offline", scale, run, results_dir, [*build, "--offline"], env)
                    for run in range(1, runs + 1)]
        records += live_unchanged(scale, runs, results_dir, build)
    if "dagster" in methods:
        env = main_job_env("dagster", scale, results_dir / f"dagster-{scale}x")
        cmd = [py, "-m", "dagster", "asset", "materialize", "-m", "pipeline.definitions", "--select", "*"]
        records += [run_unchanged("unchanged-dagster", scale, run, results_dir, cmd, env)
                    for run in range(1, runs + 1)]
    return records


def live_unchanged(scale: int, runs: int, results_dir: Path, build: list[str]) -> list[dict]:
    """The CLI against the loopback stand-in of the live sources (bench/live.py): one first build
    (not counted), then ``runs`` runs that find nothing changed (API and conditional requests only)."""
    import live

    home = WORK / "live" / f"scale-{scale}x"
    shutil.rmtree(home / "raw", ignore_errors=True)
    shutil.rmtree(home / "out", ignore_errors=True)
    sources = live.start(prepare.mirror_dir(scale), home)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TI_")}
        env.update(TI_CATALOG=str(sources.catalog), TI_RAW_DIR=str(home / "raw"), TI_OUTPUT_DIR=str(home / "out"))
        print(f"  {scale:>2}x live: first build from the loopback server (not counted) ...", flush=True)
        first = {"method": "unchanged-live", "scale": scale, "run": 0, "warmup": True,
                 **measure(build, results_dir / f"unchanged-live-{scale}x-run0.log", env=env)}
        records = [first]
        for run in range(1, runs + 1):
            start = len(sources.server.log)
            records.append(run_unchanged("unchanged-live", scale, run, results_dir, build, env,
                                         extra=lambda start=start: {"served": live.served(sources, start)}))
        return records
    finally:
        live.stop(sources)


def reset_main_job(method: str, scale: int) -> None:
    """Empty DAGSTER_HOME and download cache of a main-job method (before its cold run)."""
    home = main_job_home(method, scale)
    shutil.rmtree(home, ignore_errors=True)
    (home / "home").mkdir(parents=True)


def evaluate_quality(records: list[dict], scales: list[int], methods: list[str]) -> dict:
    members, _ = prepare.read_members()
    ref = quality.build_reference(prepare.source_mirror() / prepare.BOUNDARIES, members,
                                  WORK / "quality_ref.pkl")
    last = {}
    for r in records:
        # the methods the report shows (the CLI's and the baseline's outputs are compared byte by byte)
        if r["rc"] == 0 and r["method"] in QUALITY_METHODS and Path(r["output"]).is_file():
            last[(r["method"], r["scale"])] = r["output"]
    figures, projected = {}, {}
    for (method, scale), path in sorted(last.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        t0 = time.perf_counter()
        q, proj = quality.evaluate(quality.read_result(Path(path)), ref)
        projected[(method, scale)] = proj
        figures[f"{method}@{scale}"] = q
        print(f"  quality {method}@{scale}x ({time.perf_counter() - t0:.0f} s): "
              f"gap_holes={q['gap_holes']} slivers={q['sliver_parts']} unfilled={q['gaps_unfilled']} "
              f"invalid={q['invalid']} overlaps={q['overlap_pairs']}", flush=True)
    for (method, scale), proj in projected.items():
        q = figures[f"{method}@{scale}"]
        if (method, 1) in projected and scale != 1:
            q["iou_vs_own_1x"] = quality.iou(proj, projected[(method, 1)])
        if method != "ours" and ("ours", scale) in projected:
            q["iou_vs_ours"] = quality.iou(proj, projected[("ours", scale)])
    return figures


def _paired_ratios(ok: list[dict], a: str, b: str, scale: int, fields: dict[str, str]) -> dict | None:
    """Ratios a/b of each field, per pair of runs (same scale, same run): median, min, max."""
    pairs = []
    for run in sorted({r["run"] for r in ok if r["scale"] == scale}):
        ra = [r for r in ok if (r["method"], r["scale"], r["run"]) == (a, scale, run)]
        rb = [r for r in ok if (r["method"], r["scale"], r["run"]) == (b, scale, run)]
        if ra and rb:
            pairs.append({k: ra[0][f] / rb[0][f] for k, f in fields.items()})
    if not pairs:
        return None
    out = {"scale": scale, "pairs": len(pairs)}
    for k in fields:
        values = [p[k] for p in pairs]
        out.update({f"{k}_median": statistics.median(values), f"{k}_min": min(values), f"{k}_max": max(values)})
    return out


def summarise(records: list[dict], inputs: dict, scales: list[int] | None = None) -> dict:
    """Medians per method and scale, ratios per pair of runs, growth exponents (over ``scales``, the
    standard ones, and over every scale measured)."""
    ok = [r for r in records if succeeded(r) and not r.get("warmup")]
    stats: dict[str, dict] = {}
    for key in sorted({(r["method"], r["scale"]) for r in ok}):
        rs = [r for r in ok if (r["method"], r["scale"]) == key]
        walls = [r["wall"] for r in rs]
        rss = [r["max_rss"] for r in rs]
        stats[f"{key[0]}@{key[1]}"] = {
            "method": key[0], "scale": key[1], "runs": len(rs),
            "wall_median": statistics.median(walls), "wall_min": min(walls), "wall_max": max(walls),
            "rss_median": statistics.median(rss), "rss_min": min(rss), "rss_max": max(rss),
            "cpu_median": statistics.median([r["cpu"] for r in rs]),
        }
    ratios = {}
    for scale in sorted({r["scale"] for r in ok}):
        for peer in ("mapshaper", "naive"):
            r = _paired_ratios(ok, "ours", peer, scale, {"time": "wall", "mem": "max_rss"})
            if r:
                ratios[f"ours/{peer}@{scale}"] = {"peer": peer, **r}
        for a, b in (("dagster", "cli"), ("cli", "baseline")):
            r = _paired_ratios(ok, a, b, scale, {"time": "wall", "cpu": "cpu", "mem": "max_rss"})
            if r:
                ratios[f"{a}/{b}@{scale}"] = r
    measured = sorted({r["scale"] for r in ok})
    return {"stats": stats, "ratios": ratios, "growth": _growth(stats, inputs, scales or measured),
            "growth_all": _growth(stats, inputs, measured) if scales and set(measured) - set(scales) else {}}


def _growth(stats: dict, inputs: dict, scales: list[int]) -> dict:
    """Log-log slope of median wall and peak RSS against the member vertices, per method."""
    growth = {}
    for method in sorted({s["method"] for s in stats.values()}):
        pts = [(inputs[str(s["scale"])]["member_vertices"], s["wall_median"], s["rss_median"])
               for s in stats.values() if s["method"] == method and s["scale"] in scales and str(s["scale"]) in inputs]
        if len(pts) >= 2:
            v, w, m = (np.log(np.array(x, dtype=float)) for x in zip(*pts))
            growth[method] = {"time": float(np.polyfit(v, w, 1)[0]), "memory": float(np.polyfit(v, m, 1)[0]),
                              "scales": len(pts)}
    return growth


def scale_inputs(mir: dict, peer: dict) -> dict:
    """The figures of one scale's inputs (from prepare's mirror and peer-input reports)."""
    return {"all_vertices": mir["vertices_all"], "step_m": mir["step_m"],
            "boundaries_bytes": mir["boundaries_bytes"], "coverage_invalid_communes": mir["coverage_invalid_communes"],
            "member_communes": peer["communes"], "member_vertices": peer["vertices"], "geojson_bytes": peer["bytes"]}


def recover(results_dir: Path, args) -> None:
    """Records, summary, quality and RESULTS.md from a results dir's *.measure.json files."""
    import re
    records = []
    for path in sorted(results_dir.glob("*.measure.json")):
        m = re.fullmatch(r"([\w-]+)-(\d+)x-run(\d+)\.measure\.json", path.name)
        method, scale, run = m.group(1), int(m.group(2)), int(m.group(3))
        rec = {"method": method, "scale": scale, "run": run, **json.loads(path.read_text())}
        rec.setdefault("load1_before", float("nan"))
        if method in UNCHANGED:
            rec["expect_rc"] = 0 if method == "unchanged-dagster" else 3
        report = results_dir / f"{method}-{scale}x-run{run}.json"
        if report.is_file():
            rec["report"] = json.loads(report.read_text())
        rec["output"] = str(output_of(method, results_dir / f"{method}-{scale}x"))
        rec["warmup"] = method in ("ours", "unchanged-live", *MAIN_JOB) and run == 0
        records.append(rec)
    scales = sorted({r["scale"] for r in records})
    methods = [m for m in ALL_METHODS if any(r["method"] == m for r in records)]
    inputs = {str(scale): scale_inputs(json.loads((prepare.scale_dir(scale) / "mirror.json").read_text()),
                                       json.loads((prepare.scale_dir(scale) / "members_input.json").read_text()))
              for scale in scales}
    info = {"command": f"(recovered from {results_dir.name})", "started": results_dir.name,
            "finished": "?", "machine": machine(), "runs": max(r["run"] for r in records),
            "scales": [s for s in scales if s not in args.large_scales], "large_scales": args.large_scales,
            "methods": methods, "inputs": inputs, "records": records,
            "members_source": prepare.read_members()[1]}
    info["machine"]["mapshaper"] = MAPSHAPER_VERSION
    info.update(summarise(records, inputs, info["scales"]))
    if not args.no_quality:
        info["quality"] = evaluate_quality(records, scales, methods)
    (results_dir / "results.json").write_text(json.dumps(info, indent=1, default=str))
    Path(args.output).write_text(render(info, note=args.note))
    print(f"wrote {args.output}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default=None, help="vertex factors, e.g. 1,4,16 (default)")
    ap.add_argument("--runs", type=int, default=None, help="measured runs per method and scale (3)")
    ap.add_argument("--methods", default=",".join(ALL_METHODS))
    ap.add_argument("--dagster-scales", default="1", help="scales at which the main job (CLI, Dagster) runs")
    ap.add_argument("--baseline", metavar="REF",
                    help="also run the main job's CLI from this git ref (a worktree under bench/work), "
                         "interleaved with this checkout's, and compare their published data")
    ap.add_argument("--large-scales", default="64",
                    help="scales run once after the others, ours and mapshaper only ('' for none; default 64)")
    ap.add_argument("--large-timeout", type=float, default=1200,
                    help="seconds after which a job at a large scale is killed and reported as such (1200)")
    ap.add_argument("--no-unchanged", action="store_true",
                    help="skip the runs on unchanged inputs (CLI offline and live, Dagster) after the main job")
    ap.add_argument("--quick", action="store_true", help="scales 1,4; 1 run; no main job")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--refresh-members", action="store_true",
                    help="recompute bench/work/members.csv from the core (else reused)")
    ap.add_argument("--output", default=str(BENCH / "RESULTS.md"))
    ap.add_argument("--recover", metavar="RESULTS_DIR",
                    help="rebuild the figures of an interrupted run from its per-job files")
    ap.add_argument("--note", default="", help="free text written under the title of RESULTS.md")
    args = ap.parse_args(argv)
    args.scales = [int(s) for s in (args.scales or ("1,4" if args.quick else "1,4,16")).split(",")]
    args.runs = args.runs or (1 if args.quick else 3)
    methods = [m for m in args.methods.split(",") if m]
    args.methods = [m for m in methods if m not in MAIN_JOB] if args.quick else methods
    args.dagster_scales = {int(s) for s in args.dagster_scales.split(",") if s}
    args.large_scales = [] if args.quick else [int(s) for s in args.large_scales.split(",") if s]
    if args.baseline and "baseline" not in args.methods and not args.quick:
        args.methods.append("baseline")
    if not args.baseline:
        args.methods = [m for m in args.methods if m != "baseline"]
    return args


def run_all(args, results_dir: Path) -> list:
    """Every job: per scale, the cold runs (not counted), then the runs with the methods interleaved;
    the runs on unchanged inputs after the main job; then the large scales, once each."""
    methods, main_scales = args.methods, args.dagster_scales
    records = []
    for scale in args.scales:
        order = [m for m in methods if m not in MAIN_JOB or scale in main_scales]
        if "ours" in order:
            shutil.rmtree(ours_raw(scale), ignore_errors=True)
            print(f"  {scale:>2}x ours warm-up (empty download and parse cache) ...", flush=True)
            records.append({**run_job("ours", scale, 0, results_dir), "warmup": True})
        for method in (m for m in MAIN_JOB if m in order):
            reset_main_job(method, scale)
            print(f"  {scale:>2}x {method} warm-up (cold cache) ...", flush=True)
            records.append({**run_job(method, scale, 0, results_dir), "warmup": True})
        for run in range(1, args.runs + 1):
            k = (run - 1) % len(order)
            for method in order[k:] + order[:k]:
                records.append(run_job(method, scale, run, results_dir))
        if scale in main_scales and not args.no_unchanged:
            records += unchanged_runs(scale, args.runs, results_dir, order)
    for scale in args.large_scales:
        records += run_large(scale, [m for m in LARGE_METHODS if m in methods], results_dir, args.large_timeout)
    return records


def run_large(scale: int, methods: list[str], results_dir: Path, timeout: float) -> list[dict]:
    """One run of each method at a large scale; ours starts from the parse cache of the largest
    standard scale (the references do not depend on the scale), so no warm-up run is needed."""
    # smaller scales only: this scale's own cache, left by an earlier benchmark, is removed first
    done = sorted(k for k in (int(p.name.split("-")[1][:-1]) for p in (WORK / "raw").glob("scale-*x")
                              if p.is_dir()) if k < scale)
    shutil.rmtree(ours_raw(scale), ignore_errors=True)
    if done and "ours" in methods:
        shutil.copytree(ours_raw(done[-1]), ours_raw(scale))
    records = [run_job(method, scale, 1, results_dir, timeout) for method in methods]
    for rec in records:
        rec["large"] = True
        if rec["method"] == "ours":
            rec["within_budget"] = rec["rc"] == 0 and rec["max_rss"] <= LARGE_BUDGET_BYTES
    return records


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.recover:
        return recover(Path(args.recover), args)
    command = "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = datetime.now(UTC)
    results_dir = WORK / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    results_dir.mkdir(parents=True)
    info = {"command": command.strip(), "started": started.isoformat(timespec="seconds"),
            "machine": machine(), "runs": args.runs, "scales": args.scales, "methods": args.methods,
            "large_scales": args.large_scales,
            # the machine's own load, before any job of the benchmark adds to it
            "load_at_start": os.getloadavg()[0]}
    if "mapshaper" in args.methods:
        info["machine"]["mapshaper"] = ensure_mapshaper()
    if args.baseline:
        BASELINE["tree"], BASELINE["sha"] = mainjob.baseline_tree(args.baseline)
        info["baseline"] = {"ref": args.baseline, "commit": BASELINE["sha"]}
    print("preparing inputs ...", flush=True)
    info["members_source"] = prepare.ensure_members(prefer_core=bool({"ours", *MAIN_JOB} & set(args.methods)),
                                                     refresh=args.refresh_members)
    info["inputs"] = {str(s): scale_inputs(prepare.make_mirror(s), prepare.make_peer_input(s))
                      for s in args.scales + args.large_scales}
    records = run_all(args, results_dir)
    info["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    info["records"] = records
    info.update(summarise(records, info["inputs"], args.scales))
    info["published"] = compare_published(results_dir, args)
    raw = results_dir / "results.json"
    raw.write_text(json.dumps(info, indent=1, default=str))   # kept even if quality fails
    if not args.no_quality:
        print("quality ...", flush=True)
        info["quality"] = evaluate_quality(records, args.scales + args.large_scales, args.methods)
        raw.write_text(json.dumps(info, indent=1, default=str))
    Path(args.output).write_text(render(info, note=args.note))
    print(f"wrote {args.output} and {raw}")


def compare_published(results_dir: Path, args) -> dict:
    """The last CLI run's published data against the baseline's and Dagster's (same scale)."""
    out = {}
    for scale in sorted(args.dagster_scales):
        cli = results_dir / f"cli-{scale}x"
        for other in ("baseline", "dagster"):
            if other in args.methods and (results_dir / f"{other}-{scale}x").is_dir() and cli.is_dir():
                out[f"{other}@{scale}"] = mainjob.published(cli, results_dir / f"{other}-{scale}x")
    return out


if __name__ == "__main__":
    main()
