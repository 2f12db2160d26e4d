"""The core build, step by step and end to end, without Dagster.

Each step is a plain function; the Dagster assets call the same functions one by one, and
``build_territories`` chains them for the CLI, the tests and the benchmark.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from . import quality
from ..sources.boundaries import BoundaryReport, BoundarySet, boundary_codes, read_boundaries, scan_boundaries
from ..sources.catalog import Catalog, PhaseSpec, load_catalog
from ..sources.fetch import FetchResult
from ..sources.resolve import fetch_sources, lock_of_inputs
from ..geometry import coverage as geometry
from .. import memory
from ..geometry.coverage import DissolveStats
from ..reconcile.phase_overlap import overlaps
from ..reconcile.membership import Membership, build_membership, list_order
from ..sources.parse_cache import cached_frames
from ..errors import ReconciliationError
from ..schema import TERRITORY_COLUMNS
from ..settings import Settings
from ..sources.readers import AdminRef, read_admin, read_commune_changes, read_ti_communes, read_ti_groupements

CURRENT_PHASE = "2023-2027"
PREVIOUS_PHASE = "2018-2022"


# ---------------------------------------------------------------- sources
def phase_sources(catalog: Catalog, phase: str) -> list[str]:
    """Names of the sources one phase's build reads."""
    spec = catalog.phases[phase]
    names = ["communes_boundaries", "insee_mvt_communes"]
    names += [n for n in (spec.communes, spec.groupements) if n]
    cogs = {spec.list_cog, catalog.boundaries().cog}
    if phase == CURRENT_PHASE and PREVIOUS_PHASE in catalog.phases:
        prev = catalog.phases[PREVIOUS_PHASE]
        names += [n for n in (prev.communes, prev.groupements) if n]
        cogs.add(prev.list_cog)
    names += [f"decoupage_{cog}_{what}" for cog in sorted(cogs) for what in ("communes", "epci", "ept")]
    return list(dict.fromkeys(names))


def fetch_all(settings: Settings, catalog: Catalog, names: list[str]) -> dict[str, FetchResult]:
    """Resolve (newest release, pin or lock) and fetch the sources; the references follow the COG
    years resolved (:func:`pipeline.sources.resolve.fetch_sources`)."""
    return fetch_sources(settings, catalog, names)


def list_cog(spec: PhaseSpec, fetched: dict[str, FetchResult]) -> int:
    """COG year of the list defining the phase's perimeter (the most recent release read)."""
    kinds = {"communes": spec.communes, "groupements": spec.groupements}
    read = {k: fetched[n].release for k, n in kinds.items() if n and n in fetched}
    return fetched[kinds[list_order(read)[0]]].cog if read else spec.list_cog


def boundary_cog(catalog: Catalog, fetched: dict[str, FetchResult]) -> int:
    src = fetched.get("communes_boundaries")
    return src.cog if src is not None else catalog.boundaries().cog


def load_admin(catalog: Catalog, fetched: dict[str, FetchResult], cog: int,
               cache_dir: Path | None = None) -> AdminRef:
    """One COG year of decoupage-administratif; parsed once per input (``cache_dir``: parse cache)."""
    results = [fetched[catalog.decoupage(cog, w).name] for w in ("communes", "epci", "ept")]
    sha = "" if any(not r.sha256 for r in results) else \
        hashlib.sha256("".join(r.sha256 for r in results).encode()).hexdigest()

    def parse() -> dict[str, pd.DataFrame]:
        ref = read_admin(cog, *(r.path for r in results))
        return {"communes": ref.communes, "members": ref.members}

    frames = cached_frames(cache_dir, f"admin{cog}", sha, ("communes", "members"), parse)
    return AdminRef(cog=cog, communes=frames["communes"], members=frames["members"])


def load_boundaries(fetched: dict[str, FetchResult]) -> tuple[gpd.GeoDataFrame, BoundaryReport]:
    return read_boundaries(fetched["communes_boundaries"].path)


def scan_commune_boundaries(fetched: dict[str, FetchResult]) -> BoundarySet:
    return scan_boundaries(fetched["communes_boundaries"].path)


def member_coverage(boundaries: BoundarySet, members: pd.DataFrame) -> geometry.CleanCoverage:
    """Decode the member communes and every commune whose bounds meet a member's, repair that coverage.

    Communes far from every member are never decoded as a whole: the dissolve looks them up
    around holes only (enclaves, gaps), through ``boundaries``.
    """
    codes = boundaries.codes
    member_codes = set(members["insee_com"].tolist())
    is_member = np.fromiter((c in member_codes for c in codes), dtype=bool, count=len(codes))
    boxes = shapely.box(*boundaries.bounds.T)
    near = shapely.STRtree(boxes[is_member]).query(boxes)[0]
    keep = is_member.copy()
    keep[near] = True
    coverage = geometry.clean_coverage(boundaries.frame(keep), member_codes & set(codes[is_member].tolist()),
                                       others=boundaries)
    memory.trim()        # the repair's temporary structures are gone
    return coverage


def load_changes(fetched: dict[str, FetchResult], cache_dir: Path | None = None) -> pd.DataFrame:
    """INSEE commune changes; parsed once per input (``cache_dir``: parse cache)."""
    src = fetched["insee_mvt_communes"]
    return cached_frames(cache_dir, "changes", src.sha256, ("changes",),
                         lambda: {"changes": read_commune_changes(src.path)})["changes"]


# ---------------------------------------------------------------- membership
def phase_membership(catalog: Catalog, phase: str, fetched: dict[str, FetchResult], admin: AdminRef,
                     changes: pd.DataFrame, boundary_codes: set[str]) -> Membership:
    spec: PhaseSpec = catalog.phases[phase]
    if list_cog(spec, fetched) != admin.cog:   # e.g. a Dagster graph made for the catalog's years
        raise ReconciliationError(
            f"{phase}: the list defining the perimeter is of COG {list_cog(spec, fetched)} (as resolved), but the "
            f"COG {admin.cog} references were given; build with `python -m pipeline build`, or pin the list "
            f"(TI_PIN_<SOURCE>) to a COG {admin.cog} release")
    communes_list = groupements_list = None
    problems = []
    releases = {}
    if spec.communes:
        communes_list, p = read_ti_communes(fetched[spec.communes].path)
        problems += p
        releases["communes"] = fetched[spec.communes].release
    if spec.groupements:
        groupements_list, p = read_ti_groupements(fetched[spec.groupements].path)
        problems += p
        releases["groupements"] = fetched[spec.groupements].release
    return build_membership(
        communes_list=communes_list, groupements_list=groupements_list, admin=admin, changes=changes,
        boundary_codes=boundary_codes, boundary_cog=boundary_cog(catalog, fetched),
        communes_release=releases.get("communes"), groupements_release=releases.get("groupements"),
        list_problems=problems, id_pattern=spec.id_pattern)


# ---------------------------------------------------------------- territories
def _sorted_unique(values) -> list[str]:
    return sorted({v for v in values if isinstance(v, str) and v})


def assemble(phase: str, membership: Membership, dissolved: gpd.GeoDataFrame,
             boundaries: pd.DataFrame, boundary_admin: AdminRef | None,
             previous: Membership | None = None, attributes: pd.DataFrame | None = None) -> gpd.GeoDataFrame:
    """Territory rows with every contract column (plan columns are attached at publish time).

    ``attributes``: :func:`territory_attributes` computed beforehand (the build does it while the
    coverage is repaired); computed here if not given.
    """
    out = attributes if attributes is not None else territory_attributes(
        phase, membership, boundaries, boundary_admin, previous)
    geo = dissolved.set_index("id_ti")
    out = out.copy()
    out["area_km2"] = geo["area_km2"].round(4)
    out["communes_area_km2"] = geo["communes_area_km2"]
    out = out.reset_index()
    out = gpd.GeoDataFrame(out, geometry=geo.reindex(out["id_ti"]).geometry.values, crs=dissolved.crs)
    for col in ("id_ti", "lib_ti", "phase"):
        out[col] = out[col].astype("string")
    columns = [c.name for c in TERRITORY_COLUMNS]
    extra = [c for c in ("communes_area_km2", "perimeter_source") if c in out]
    return out[columns[:-1] + extra + ["geometry"]]


def territory_attributes(phase: str, membership: Membership, boundaries: pd.DataFrame,
                         boundary_admin: AdminRef | None, previous: Membership | None = None) -> pd.DataFrame:
    """The territories' columns that need no geometry, indexed by id_ti (see :func:`assemble`)."""
    members = membership.members
    info = boundaries[["code_insee", "departement", "population"]].rename(columns={"code_insee": "insee_com"})
    if boundary_admin is not None:
        adm = boundary_admin.communes[["code", "region", "population"]].rename(
            columns={"code": "insee_com", "population": "population_admin"})
        info = info.merge(adm, on="insee_com", how="left")
        # decoupage-administratif's population is documented (INSEE municipal population);
        # the boundary file's is a fallback.
        info["population"] = info["population_admin"].fillna(info["population"])
    else:
        info["region"] = pd.NA
    m = members.merge(info, on="insee_com", how="left")
    grouped = m.groupby("id_ti", sort=True)
    out = membership.territories.set_index("id_ti")
    out["phase"] = phase
    out["insee_communes"] = grouped["insee_com"].agg(lambda s: sorted(set(s)))
    out["n_communes"] = out["insee_communes"].map(len).astype("int64")
    out["n_groupements"] = out["siren_groupements"].map(len).astype("int64")
    out["departements"] = grouped["departement"].agg(_sorted_unique)
    out["regions"] = grouped["region"].agg(_sorted_unique)
    pop_any_null = grouped["population"].agg(lambda s: s.isna().any())
    pop = grouped["population"].sum(min_count=1).astype("Int64")
    out["population"] = pop.mask(pop_any_null)
    out["list_cog"] = membership.list_cog
    out["boundary_cog"] = membership.boundary_cog
    out["n_communes_reconciled"] = (grouped["status"].agg(lambda s: int((s == "reconciled").sum()))
                                    .astype("int64"))
    absorbed = {}
    for item in membership.absorbed_outside:
        absorbed.setdefault(item["id_ti"], []).extend(item["absorbed"])
    out["communes_absorbed_outside"] = [sorted(absorbed.get(t, [])) for t in out.index]
    if previous is not None:
        hist = overlaps(members, previous.members).set_index("id_ti")
        out["is_new"] = hist["is_new"].astype("boolean")
        out["ti_2018_2022"] = hist["ti_previous"]
    else:   # the first phase of the programme: every territory is new; without the history: unknown
        out["is_new"] = pd.array([True if phase == PREVIOUS_PHASE else pd.NA] * len(out), dtype="boolean")
        out["ti_2018_2022"] = [[] for _ in range(len(out))]
    return out


def run_checks(territories: gpd.GeoDataFrame, membership: Membership, boundaries,
               expected=None) -> list[quality.CheckResult]:
    """The blocking checks; ``expected``: the territory ids to build (default: every id of the lists)."""
    return [
        quality.check_count(territories, membership.listed_territories if expected is None else expected),
        quality.check_geometries(territories),
        quality.check_members(membership.errors, membership.listed_codes, len(membership.members)),
        quality.check_areas(territories),
        quality.check_holes(territories, membership.members, boundaries),
        quality.check_overlaps(territories, membership.shared_communes),
    ]


@dataclass
class BuildResult:
    phase: str
    territories: gpd.GeoDataFrame
    membership: Membership
    dissolve_stats: DissolveStats
    boundary_report: BoundaryReport
    checks: list[quality.CheckResult]
    inputs: list[dict]
    timings: dict[str, float] = field(default_factory=dict)
    previous: Membership | None = None
    references: object | None = None   # publish.membership_tables.MembershipRefs (names, EPCI of the members)

    @property
    def passed(self) -> bool:
        return quality.all_passed(self.checks)


def build_territories(settings: Settings | None = None, phase: str = CURRENT_PHASE,
                      checks: bool = True) -> BuildResult:
    """Fetch, reconcile, dissolve and check one phase end to end (no publishing)."""
    settings = settings or Settings.from_env()
    memory.freeze_imports()
    memory.use_system_allocator()
    catalog = load_catalog(settings)
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 3)
        t = now

    fetched = fetch_all(settings, catalog, phase_sources(catalog, phase))
    lap("fetch")
    spec = catalog.phases[phase]
    with ThreadPoolExecutor(1) as pool:
        # Geometry work (GEOS releases the GIL) runs on the other core while this thread parses
        # the lists and references and reconciles the codes (Python work): first the check of
        # every commune polygon, then, once the members are known, the coverage repair.
        scanning = pool.submit(scan_commune_boundaries, fetched)
        parsed = settings.raw_dir / "parsed"
        changes = load_changes(fetched, parsed)
        cog_list, cog_boundaries = list_cog(spec, fetched), boundary_cog(catalog, fetched)
        admins = {cog: load_admin(catalog, fetched, cog, parsed) for cog in sorted({cog_list, cog_boundaries})}
        lap("read")
        # The codes from the file's attribute columns let the membership start before the scan
        # ends; it is redone if the scan drops some communes (empty or degenerate polygons).
        early = boundary_codes(fetched["communes_boundaries"].path)
        membership = (phase_membership(catalog, phase, fetched, admins[cog_list], changes, early)
                      if early is not None else None)
        lap("membership_early")
        boundaries = scanning.result()
        memory.trim()        # the scan's decoded batches are gone: give their pages back
        lap("boundaries")
        codes = set(boundaries.codes.tolist())
        if membership is None or codes != early:
            membership = phase_membership(catalog, phase, fetched, admins[cog_list], changes, codes)
        cleaning = pool.submit(member_coverage, boundaries, membership.members)
        previous = None
        if phase == CURRENT_PHASE and PREVIOUS_PHASE in catalog.phases:
            prev_cog = list_cog(catalog.phases[PREVIOUS_PHASE], fetched)
            prev_admin = admins.get(prev_cog) or load_admin(catalog, fetched, prev_cog, parsed)
            previous = phase_membership(catalog, PREVIOUS_PHASE, fetched, prev_admin, changes, codes)
            del prev_admin
        boundary_admin = admins.get(cog_boundaries)
        from ..publish.membership_tables import references
        refs = references(membership, admins[cog_list], boundary_admin)
        del admins, changes, codes, early      # the references are not needed any more: free them for the repair
        memory.trim()
        lap("membership")
        attributes = territory_attributes(phase, membership, boundaries.communes, boundary_admin, previous)
        lap("attributes")
        coverage = cleaning.result()
    del scanning, cleaning      # futures keep their results alive
    lap("clean_wait")
    dissolved, stats = geometry.dissolve_clean(coverage, membership.members, release=boundaries.release)
    del coverage
    lap("dissolve")
    territories = assemble(phase, membership, dissolved, boundaries.communes, boundary_admin, previous,
                           attributes=attributes)
    lap("assemble")
    results = run_checks(territories, membership, boundaries) if checks else []
    lap("checks")
    report = boundaries.report
    del boundaries
    memory.trim()        # the communes' polygons are gone: what follows (publishing) starts lower
    inputs = [inputs_entry(fetched[n], catalog) for n in fetched]
    return BuildResult(phase, territories, membership, stats, report, results, inputs, timings, previous, refs)


def inputs_entry(result: FetchResult, catalog: Catalog) -> dict:
    spec = catalog.source(result.source)
    return {"source": result.source, "title": spec.title, "origin": result.origin, "mode": result.mode,
            "sha256": result.sha256, "size": result.size, "release": result.release, "cog": result.cog,
            "licence": spec.licence, "etag": result.etag, "last_modified": result.last_modified,
            "fetched_at": result.fetched_at, "lock": result.lock}


def write_core_outputs(result: BuildResult, out_dir: Path) -> dict[str, Path]:
    """Plain GeoParquet + GeoJSON of a build (for the benchmark; publishing is pipeline.publish)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gdf = result.territories
    paths = {"parquet": out_dir / "territoires-industrie.parquet",
             "geojson": out_dir / "territoires-industrie.geojson"}
    from ..publish.geojson import write_geojson   # the published RFC 7946 writer
    from ..publish.geoparquet import write_geoparquet

    write_geoparquet(gdf, paths["parquet"], index=None)
    write_geojson(gdf, paths["geojson"])
    return paths


# ---------------------------------------------------------------- publishing
def code_fingerprint() -> str:
    """sha256 over the package's code and the static assets that shape the outputs.

    Written in the manifest, so that a changed pipeline (not only a version bump) is rebuilt.
    """
    import hashlib

    from ..settings import ASSETS_DIR

    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    roots = [(package, sorted(package.rglob("*.py"))),
             (ASSETS_DIR, sorted(p for p in ASSETS_DIR.rglob("*") if p.is_file() and p.suffix != ".pyc"))]
    for root, files in roots:
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def new_build_id() -> str:
    """Sortable, unique build id: UTC time plus a short random suffix."""
    import secrets
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def publish_build(result: BuildResult, settings: Settings, plans=None, build_id: str | None = None,
                  checks: list[quality.CheckResult] | None = None) -> dict:
    """Attach the plan table and publish a checked build; refuses a build whose blocking checks fail."""
    from ..errors import CheckFailedError
    from ..sources.plans import attach_plans, read_plans
    from ..publish import publish_release

    checks = result.checks if checks is None else checks
    if not quality.all_passed(checks):
        raise CheckFailedError(f"{result.phase}: blocking checks failed, nothing published: "
                               f"{quality.failed_summary(checks)}")
    from ..publish.guard import guard_build
    change_guard = guard_build(result, settings)    # CheckFailedError past its thresholds
    if plans is None:
        plans = read_plans(settings.plans_path if result.phase == CURRENT_PHASE else None,
                           result.territories["id_ti"])
    territories = attach_plans(result.territories.drop(columns=["communes_area_km2", "perimeter_source"],
                                                       errors="ignore"), plans)
    extra = {
        "membership": result.membership.summary(),
        "reconciled": result.membership.reconciled,
        "absorbed_outside": result.membership.absorbed_outside,
        "list_disagreements": result.membership.disagreements,
        "dissolve": result.dissolve_stats.as_dict(),
        "boundaries": {"repaired": result.boundary_report.repaired, "empty": result.boundary_report.empty,
                       "duplicates": result.boundary_report.duplicates,
                       "sub_communal_left_out": result.boundary_report.sub_communal},
        "plans": {"source": plans.source, "warnings": plans.warnings},
        "new_territories": int(territories["is_new"].fillna(False).sum()),
        "code_fingerprint": code_fingerprint(),
        "change_guard": change_guard,
        "timings_s": result.timings,
        "lock": lock_of_inputs(result.inputs),   # the manifest's top-level ``lock`` (see manifest.py)
    }
    return publish_release(territories, settings, build_id=build_id or new_build_id(),
                           inputs=[{k: v for k, v in i.items() if k != "lock"} for i in result.inputs],
                           checks=[c.as_dict() for c in checks],
                           phase=result.phase, extra=extra, membership=result.membership,
                           references=result.references)
