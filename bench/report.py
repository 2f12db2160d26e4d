"""Render the benchmark's raw figures (``bench/work/results/<stamp>/results.json``) as Markdown.

    python bench/report.py bench/work/results/<stamp>/results.json > bench/RESULTS.md
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

MB = 2**20
METHOD_TITLE = {"ours": "ours (core build, library)", "mapshaper": "mapshaper -clean -dissolve",
                "naive": "naive geopandas dissolve", "cli": "CLI build --phase all --force (warm)",
                "dagster": "Dagster materialize --select '*' (warm)"}
# the main job's targets: Dagster against the CLI, same run (issue #11)
MAIN_JOB_TIME, MAIN_JOB_CPU, MAIN_JOB_MEMORY = 1.3, 1.3, 1.2


def _range(med: float, lo: float, hi: float, fmt: str, unit: str = "") -> str:
    return f"{med:{fmt}}{unit} ({lo:{fmt}}-{hi:{fmt}})"


def _ok(flag: bool) -> str:
    return "yes" if flag else "**no**"


def render(info: dict, note: str = "") -> str:
    """RESULTS.md: the sections in reading order."""
    scales = info["scales"]
    out = _header(info, note)
    for section in (_inputs, _times, _targets, _growth, _cold, _main_job, _steps):
        out += section(info, scales)
    out += _quality(info.get("quality", {}), scales)
    out += _failed(info, scales)
    return "\n".join(out)


def _header(info: dict, note: str) -> list[str]:
    m = info["machine"]
    out = ["# Benchmark results", ""]
    if note:
        out += [note, ""]
    out += [
        f"Run {info['started']} to {info.get('finished', '?')}, {info['runs']} measured run(s) per "
        f"method and scale, methods interleaved (order rotated each run).",
        "",
        "Reproduce (from the project root, with the venv active and the shared data at "
        "`TI_MIRROR_DIR`, default `../shared/data`):",
        "",
        "```",
        info["command"],
        "```",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}; Python "
        f"{m['python']}, shapely {m['shapely']} (GEOS {m['geos']}), geopandas {m['geopandas']}, "
        f"Node.js {m['node']}, mapshaper {m.get('mapshaper', '-')}; project commit {m['git_commit']}.",
        "",
        f"Member communes: from the {info.get('members_source')} membership, the same list for every "
        "method. Peak memory = max RSS of the job's process (`os.wait4` in the small helper `bench/measure.py`), node included; for "
        "Dagster, the largest process of its tree. Wall time includes interpreter start and imports.",
        "",
    ]
    loads = [r["load1_before"] for r in info.get("records", [])]
    if loads:
        out += [f"Load average (1 min) before each job: median {statistics.median(loads):.2f}, max "
                f"{max(loads):.2f} (2 cores; other work on the machine shows up here).", ""]
    return out


def _inputs(info: dict, scales: list[int]) -> list[str]:
    out: list[str] = []
    out += ["## Inputs", "",
            "| scale | member communes | member vertices | all communes' vertices | segment step | "
            "boundaries parquet | peer GeoJSON | communes with invalid coverage edges |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in scales:
        i = info["inputs"][str(s)]
        step = "-" if i["step_m"] == float("inf") or i["step_m"] in ("inf", "Infinity") else f"{i['step_m']:.0f} m"
        out.append(f"| {s}x | {i['member_communes']:,} | {i['member_vertices'] / 1e6:.2f} M | "
                   f"{i['all_vertices'] / 1e6:.2f} M | {step} | {i['boundaries_bytes'] / MB:.0f} MB | "
                   f"{i['geojson_bytes'] / MB:.0f} MB | {i['coverage_invalid_communes']} |")
    out.append("")
    return out


def _times(info: dict, scales: list[int]) -> list[str]:
    out: list[str] = []
    stats, ratios = info.get("stats", {}), info.get("ratios", {})
    out += ["## Time and peak memory", "",
            "Median (min-max) over the runs. Ratios are ours / this method, per pair of runs, median "
            "(min-max).", "",
            "| scale | method | wall s | peak RSS MB | CPU s | ours/this time | ours/this memory |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in scales:
        for method in ("ours", "mapshaper", "naive"):
            st = stats.get(f"{method}@{s}")
            if not st:
                continue
            r = ratios.get(f"ours/{method}@{s}")
            rt = _range(r["time_median"], r["time_min"], r["time_max"], ".2f", "x") if r else "-"
            rm = _range(r["mem_median"], r["mem_min"], r["mem_max"], ".2f", "x") if r else "-"
            out.append(
                f"| {s}x | {METHOD_TITLE[method]} | "
                f"{_range(st['wall_median'], st['wall_min'], st['wall_max'], '.1f')} | "
                f"{_range(st['rss_median'] / MB, st['rss_min'] / MB, st['rss_max'] / MB, '.0f')} | "
                f"{st['cpu_median']:.1f} | {rt} | {rm} |")
    out.append("")
    return out


def _targets(info: dict, scales: list[int]) -> list[str]:
    out: list[str] = []
    ratios, q = info.get("ratios", {}), info.get("quality", {})
    out += ["## Targets (ours against mapshaper, same run)", "",
            "Milestone: wall <= 1.0x and memory <= 1.5x mapshaper's at every scale, zero sliver parts, "
            "zero unfilled gaps. Goal: <= 0.5x time, memory <= mapshaper's, growth at most linear.", "",
            "| scale | time ratio | memory ratio | slivers | unfilled gaps + gap holes | milestone | goal |",
            "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for s in scales:
        r = ratios.get(f"ours/mapshaper@{s}")
        qq = q.get(f"ours@{s}")
        if not r:
            continue
        clean = qq is not None and qq["sliver_parts"] == 0 and qq["gaps_unfilled"] == 0 and qq["gap_holes"] == 0
        sl = qq["sliver_parts"] if qq else "?"
        gp = f"{qq['gaps_unfilled']} + {qq['gap_holes']}" if qq else "?"
        mile = r["time_median"] <= 1.0 and r["mem_median"] <= 1.5 and clean
        goal = r["time_median"] <= 0.5 and r["mem_median"] <= 1.0 and clean
        out.append(f"| {s}x | {r['time_median']:.2f}x | {r['mem_median']:.2f}x | {sl} | {gp} | "
                   f"{_ok(mile)} | {_ok(goal)} |")
    out.append("")
    return out


def _growth(info: dict, scales: list[int]) -> list[str]:
    out: list[str] = []
    growth = info.get("growth", {})
    if growth:
        out += ["## Growth with the vertex count", "",
                "Log-log slope of the median wall time and peak RSS against the member vertices "
                "(1.0 = linear).", "",
                "| method | time exponent | memory exponent | scales |", "| --- | ---: | ---: | ---: |"]
        for method, g in growth.items():
            out.append(f"| {METHOD_TITLE[method]} | {g['time']:.2f} | {g['memory']:.2f} | {g['scales']} |")
        out.append("")
    return out


def _cold(info: dict, scales: list[int]) -> list[str]:
    out: list[str] = []
    stats = info.get("stats", {})
    cold_ours = [r for r in info.get("records", []) if r["method"] == "ours" and r.get("warmup")]
    if cold_ours:
        out += ["## Ours from an empty cache", "",
                "Each scale starts with one unmeasured run of ours on an empty download cache, so the "
                "reference tables are parsed (JSON, CSV) and their parse cache written; the measured runs "
                "then find it, as a scheduled build finds `data_raw/parsed/`. That first run:", "",
                "| scale | first run wall s | peak RSS MB | warm median wall s | first run / mapshaper median time | "
                "first run / mapshaper median memory |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in sorted(cold_ours, key=lambda r: r["scale"]):
            st, peer = stats.get(f"ours@{r['scale']}"), stats.get(f"mapshaper@{r['scale']}")
            if r["rc"] != 0:
                out.append(f"| {r['scale']}x | failed | - | - | - | - |")
                continue
            warm = f"{st['wall_median']:.1f}" if st else "-"
            tr = f"{r['wall'] / peer['wall_median']:.2f}x" if peer else "-"
            mr = f"{r['max_rss'] / peer['rss_median']:.2f}x" if peer else "-"
            out.append(f"| {r['scale']}x | {r['wall']:.1f} | {r['max_rss'] / MB:.0f} | {warm} | {tr} | {mr} |")
        out.append("")
    return out


def _failed(info: dict, scales: list[int]) -> list[str]:
    out: list[str] = []
    failed = [r for r in info.get("records", []) if r["rc"] != 0]
    if failed:
        out += ["## Failed jobs", ""]
        for r in failed:
            tail = r.get("error", "").strip().splitlines()[-3:]
            out.append(f"- {r['method']} {r['scale']}x run {r['run']}: rc {r['rc']}: "
                       + " / ".join(t.strip() for t in tail))
        out.append("")
    return out


def _main_job(info: dict, scales: list[int]) -> list[str]:
    """The main job: both phases built and published by the CLI and by Dagster, same run."""
    stats, ratios = info.get("stats", {}), info.get("ratios", {})
    recs = [r for r in info.get("records", []) if r["method"] in ("cli", "dagster")]
    if not recs:
        return []
    out = ["## Main job: Dagster against the CLI", "",
           "`dagster asset materialize -m pipeline.definitions --select '*'` (temporary DAGSTER_HOME, "
           "TI_OUTPUT_DIR, TI_RAW_DIR under bench/work) against `python -m pipeline build --phase all "
           "--force`: both build, check and publish both phases. Each keeps its download and parse "
           "cache between runs; the first (cold) run is not counted. CPU = user + sys of the job and "
           f"its children. Targets: Dagster's wall and CPU at most {MAIN_JOB_TIME}x the CLI's, peak "
           f"memory at most {MAIN_JOB_MEMORY}x.", "",
           "| scale | method | cold run s | wall s | CPU s | peak RSS MB |",
           "| --- | --- | ---: | ---: | ---: | ---: |"]
    for s in scales:
        for method in ("cli", "dagster"):
            cold = [r for r in recs if r["method"] == method and r["scale"] == s and r.get("warmup")]
            st = stats.get(f"{method}@{s}")
            if not cold and not st:
                continue
            c = f"{cold[0]['wall']:.1f}" if cold and cold[0]["rc"] == 0 else "failed"
            w = _range(st["wall_median"], st["wall_min"], st["wall_max"], ".1f") if st else "failed"
            cpu = f"{st['cpu_median']:.1f}" if st else "-"
            rss = _range(st["rss_median"] / MB, st["rss_min"] / MB, st["rss_max"] / MB, ".0f") if st else "-"
            out.append(f"| {s}x | {METHOD_TITLE[method]} | {c} | {w} | {cpu} | {rss} |")
    out += ["", "| scale | Dagster/CLI wall | Dagster/CLI CPU | Dagster/CLI memory | targets met |",
            "| --- | ---: | ---: | ---: | --- |"]
    for s in scales:
        r = ratios.get(f"dagster/cli@{s}")
        if not r:
            continue
        met = (r["time_median"] <= MAIN_JOB_TIME and r["cpu_median"] <= MAIN_JOB_CPU
               and r["mem_median"] <= MAIN_JOB_MEMORY)
        out.append(f"| {s}x | {_range(r['time_median'], r['time_min'], r['time_max'], '.2f', 'x')} | "
                   f"{_range(r['cpu_median'], r['cpu_min'], r['cpu_max'], '.2f', 'x')} | "
                   f"{_range(r['mem_median'], r['mem_min'], r['mem_max'], '.2f', 'x')} | {_ok(met)} |")
    out.append("")
    return out


def _steps(info: dict, scales: list[int]) -> list[str]:
    out = ["## Where our time and memory go", "",
           "Steps of the core build (median over runs; peak RSS sampled every 10 ms during the "
           "step; nested steps indented; `calls` > 1: total over calls).", ""]
    recs = [r for r in info.get("records", []) if r["method"] == "ours" and r["rc"] == 0 and "report" in r]
    if not recs:
        return []
    header = "| step | " + " | ".join(f"{s}x s | {s}x MB" for s in scales) + " |"
    out += [header, "| --- | " + " | ".join("---: | ---:" for _ in scales) + " |"]
    names: list[tuple[str, int]] = []
    for r in recs:
        for st in r["report"]["steps"]:
            key = (st["step"], st["depth"])
            if key not in names:
                names.append(key)
    for name, depth in names:
        cells = []
        for s in scales:
            vals = [st for r in recs if r["scale"] == s for st in r["report"]["steps"]
                    if (st["step"], st["depth"]) == (name, depth)]
            if vals:
                cells.append(f"{statistics.median(v['seconds'] for v in vals):.2f} | "
                             f"{statistics.median(v['peak_rss'] for v in vals) / MB:.0f}")
            else:
                cells.append("- | -")
        calls = max((st["calls"] for r in recs for st in r["report"]["steps"]
                     if (st["step"], st["depth"]) == (name, depth)), default=1)
        label = ("&nbsp;&nbsp;" * depth) + f"`{name}`" + (f" ({calls} calls)" if calls > 1 else "")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def _quality(q: dict, scales: list[int]) -> list[str]:
    if not q:
        return []
    out = ["## Quality", "",
           "Judged against the real 1x source in a metric CRS per zone (see `bench/quality.py`). "
           "Enclave holes are real (covered by other communes); gap holes are holes nothing "
           "covers; unfilled gaps: source gaps (1 m2 to 1 km2) with only member neighbours that the "
           "result leaves open; sliver parts: parts under 0.1 km2 that are no islet of the source.",
           "",
           "| scale | method | rows | invalid | holes (enclave / gap) | gap-hole area m2 | sliver parts | "
           "unfilled gaps | overlapping pairs (km2) | area vs communes | IoU vs own 1x min / median | "
           "IoU vs ours min |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in scales:
        for method in ("ours", "mapshaper", "naive", "dagster"):
            f = q.get(f"{method}@{s}")
            if not f:
                continue
            own = f.get("iou_vs_own_1x")
            own_s = f"{own['min']:.6f} / {own['median']:.6f}" if own else "-"
            vs = f.get("iou_vs_ours")
            vs_s = f"{vs['min']:.6f}" if vs else "-"
            out.append(
                f"| {s}x | {method} | {f['rows']} | {f['invalid']} | {f['enclave_holes']} / {f['gap_holes']} | "
                f"{f['gap_holes_m2']:,.0f} | {f['sliver_parts']} | {f['gaps_unfilled']} of "
                f"{f['source_gaps']} | {f['overlap_pairs']} ({f['overlap_km2']:.4f}) | "
                f"{float(f['area_diff_pct']):+.4f} % | {own_s} | {vs_s} |")
    out.append("")
    return out


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
