"""Benchmark: our core build against mapshaper and a naive geopandas dissolve, at several scales.

    python bench/run.py                      # scales 1,4,16; 3 runs each; Dagster at 1x
    python bench/run.py --quick              # scales 1,4; 1 run; no Dagster (a few minutes)
    python bench/run.py --scales 1,4 --runs 5 --methods ours,mapshaper

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

import numpy as np
import prepare
import quality
from report import render

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
MAPSHAPER_VERSION = "0.7.70"
MAPSHAPER_JS = WORK / "node_modules" / "mapshaper" / "bin" / "mapshaper"
ALL_METHODS = ["ours", "mapshaper", "naive", "cli", "dagster"]
# the main job: the same build and publication of both phases through the CLI and through Dagster
MAIN_JOB = ("cli", "dagster")


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


def measure(cmd: list[str], log: Path, env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Run cmd through bench/measure.py: wall time, max RSS (bytes), CPU seconds, exit code."""
    load = os.getloadavg()[0]
    result = log.with_suffix(".measure.json")
    subprocess.run([sys.executable, "-S", "-I", str(BENCH / "measure.py"), str(result), str(log),
                    "--", *cmd], env=env, cwd=cwd, check=True)
    out = json.loads(result.read_text())
    out["load1_before"] = load
    if out["rc"] != 0:
        out["error"] = log.read_text()[-2000:]
    return out


def job_command(method: str, scale: int, out: Path, report: Path) -> tuple[list[str], dict | None]:
    mirror = prepare.mirror_dir(scale)
    py = sys.executable
    if method == "ours":
        # the download cache persists between runs like data_raw in a scheduled build (it holds
        # the parse cache of the references); the first run of each scale starts it empty
        return [py, str(BENCH / "jobs.py"), "ours", "--mirror", str(mirror), "--out", str(out),
                "--raw", str(ours_raw(scale)), "--report", str(report)], None
    if method == "naive":
        return [py, str(BENCH / "jobs.py"), "naive", "--mirror", str(mirror), "--out", str(out),
                "--members", str(WORK / "members.csv"), "--report", str(report)], None
    if method == "mapshaper":
        src = prepare.scale_dir(scale) / "members.geojson"
        return ["node", str(MAPSHAPER_JS), str(src), "-clean", "-dissolve", "id_ti",
                "-o", str(out / "mapshaper.geojson"), "format=geojson"], None
    if method in MAIN_JOB:
        # both keep their download and parse cache between runs (like data_raw between builds);
        # the first run of each scale starts from empty ones and is not counted
        home = main_job_home(method, scale)
        env = dict(os.environ, DAGSTER_HOME=str(home / "home"), TI_MIRROR_DIR=str(mirror),
                   TI_RAW_DIR=str(home / "raw"), TI_OUTPUT_DIR=str(out))
        env.pop("TI_PLANS_PATH", None)
        if method == "cli":
            return [py, "-m", "pipeline", "build", "--phase", "all", "--force"], env
        return [py, "-m", "dagster", "asset", "materialize", "-m", "pipeline.definitions", "--select", "*"], env
    raise ValueError(method)


def ours_raw(scale: int) -> Path:
    return WORK / "raw" / f"scale-{scale}x"


def main_job_home(method: str, scale: int) -> Path:
    """DAGSTER_HOME (``home``) and download cache (``raw``) of a main-job method at a scale."""
    return WORK / method / f"scale-{scale}x"


def output_of(method: str, out: Path) -> Path:
    return {"ours": out / "territoires-industrie.parquet", "naive": out / "naive.geojson",
            "mapshaper": out / "mapshaper.geojson", "cli": out / "territoires-industrie.parquet",
            "dagster": out / "territoires-industrie.parquet"}[method]


def run_job(method: str, scale: int, run: int, results_dir: Path) -> dict:
    out = results_dir / f"{method}-{scale}x"
    if out.exists():
        shutil.rmtree(out)      # only the last run's output is kept (for quality)
    out.mkdir(parents=True)
    report = results_dir / f"{method}-{scale}x-run{run}.json"
    cmd, env = job_command(method, scale, out, report)
    rec = {"method": method, "scale": scale, "run": run}
    rec.update(measure(cmd, results_dir / f"{method}-{scale}x-run{run}.log", env=env))
    if report.is_file():
        rec["report"] = json.loads(report.read_text())
    rec["output"] = str(output_of(method, out))
    status = "ok" if rec["rc"] == 0 else f"FAILED rc={rec['rc']}"
    print(f"  {scale:>2}x run {run} {method:<9} {rec['wall']:7.1f} s {rec['max_rss'] / 2**20:7.0f} MB"
          f"  cpu {rec['cpu']:6.1f} s  load {rec['load1_before']:.1f}  {status}", flush=True)
    return rec


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
        if r["rc"] == 0 and Path(r["output"]).is_file():
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


def summarise(records: list[dict], inputs: dict) -> dict:
    ok = [r for r in records if r["rc"] == 0 and not r.get("warmup")]
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
        r = _paired_ratios(ok, "dagster", "cli", scale, {"time": "wall", "cpu": "cpu", "mem": "max_rss"})
        if r:
            ratios[f"dagster/cli@{scale}"] = r
    growth = {}
    for method in sorted({r["method"] for r in ok}):
        pts = [(inputs[str(s["scale"])]["member_vertices"], s["wall_median"], s["rss_median"])
               for s in stats.values() if s["method"] == method and str(s["scale"]) in inputs]
        if len(pts) >= 2:
            v, w, m = (np.log(np.array(x, dtype=float)) for x in zip(*pts))
            growth[method] = {"time": float(np.polyfit(v, w, 1)[0]), "memory": float(np.polyfit(v, m, 1)[0]),
                              "scales": len(pts)}
    return {"stats": stats, "ratios": ratios, "growth": growth}


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
        m = re.fullmatch(r"(\w+)-(\d+)x-run(\d+)\.measure\.json", path.name)
        method, scale, run = m.group(1), int(m.group(2)), int(m.group(3))
        rec = {"method": method, "scale": scale, "run": run, **json.loads(path.read_text())}
        rec.setdefault("load1_before", float("nan"))
        report = results_dir / f"{method}-{scale}x-run{run}.json"
        if report.is_file():
            rec["report"] = json.loads(report.read_text())
        rec["output"] = str(output_of(method, results_dir / f"{method}-{scale}x"))
        rec["warmup"] = method in ("ours", *MAIN_JOB) and run == 0
        records.append(rec)
    scales = sorted({r["scale"] for r in records})
    methods = [m for m in ALL_METHODS if any(r["method"] == m for r in records)]
    inputs = {str(scale): scale_inputs(json.loads((prepare.scale_dir(scale) / "mirror.json").read_text()),
                                       json.loads((prepare.scale_dir(scale) / "members_input.json").read_text()))
              for scale in scales}
    info = {"command": f"(recovered from {results_dir.name})", "started": results_dir.name,
            "finished": "?", "machine": machine(), "runs": max(r["run"] for r in records),
            "scales": scales, "methods": methods, "inputs": inputs, "records": records,
            "members_source": prepare.read_members()[1]}
    info["machine"]["mapshaper"] = MAPSHAPER_VERSION
    info.update(summarise(records, inputs))
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
    return args


def run_all(methods: list[str], scales: list[int], runs: int, main_scales: set[int], results_dir: Path) -> list:
    """Every job: per scale, the cold runs (not counted), then the runs with the methods interleaved."""
    records = []
    for scale in scales:
        order = [m for m in methods if m not in MAIN_JOB or scale in main_scales]
        if "ours" in order:
            shutil.rmtree(ours_raw(scale), ignore_errors=True)
            print(f"  {scale:>2}x ours warm-up (empty download and parse cache) ...", flush=True)
            records.append({**run_job("ours", scale, 0, results_dir), "warmup": True})
        for method in (m for m in MAIN_JOB if m in order):
            reset_main_job(method, scale)
            print(f"  {scale:>2}x {method} warm-up (cold cache) ...", flush=True)
            records.append({**run_job(method, scale, 0, results_dir), "warmup": True})
        for run in range(1, runs + 1):
            k = (run - 1) % len(order)
            for method in order[k:] + order[:k]:
                records.append(run_job(method, scale, run, results_dir))
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
            "machine": machine(), "runs": args.runs, "scales": args.scales, "methods": args.methods}
    if "mapshaper" in args.methods:
        info["machine"]["mapshaper"] = ensure_mapshaper()
    print("preparing inputs ...", flush=True)
    info["members_source"] = prepare.ensure_members(prefer_core=bool({"ours", *MAIN_JOB} & set(args.methods)),
                                                     refresh=args.refresh_members)
    info["inputs"] = {str(s): scale_inputs(prepare.make_mirror(s), prepare.make_peer_input(s)) for s in args.scales}
    records = run_all(args.methods, args.scales, args.runs, args.dagster_scales, results_dir)
    info["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    info["records"] = records
    info.update(summarise(records, info["inputs"]))
    raw = results_dir / "results.json"
    raw.write_text(json.dumps(info, indent=1, default=str))   # kept even if quality fails
    if not args.no_quality:
        print("quality ...", flush=True)
        info["quality"] = evaluate_quality(records, args.scales, args.methods)
        raw.write_text(json.dumps(info, indent=1, default=str))
    Path(args.output).write_text(render(info, note=args.note))
    print(f"wrote {args.output} and {raw}")


if __name__ == "__main__":
    main()
