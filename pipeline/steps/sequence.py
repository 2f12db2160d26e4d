"""The core build as one sequence of steps: plain functions with typed results, without Dagster.

    fetch_sources -> read references + phase_membership (reconcile_phase) -> scan_commune_boundaries
    -> repair_and_dissolve -> territory_attributes + assemble -> run_checks -> publish_build

:func:`build_phase` chains the steps for one phase from already fetched files; the CLI fetches
once for every phase and calls it per phase, the Dagster asset of each phase calls it, and
:func:`build_territories` (bench/, tests) fetches one phase's files then calls it. Process-wide
tuning (threads, allocator, GC) is set by those entry points through :mod:`pipeline.runtime`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, cast

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .. import runtime
from ..errors import ReconciliationError
from ..geometry import coverage as geometry
from ..geometry.coverage import DissolveStats
from ..geometry.edge_checks import EdgeChecks
from ..limits import DEFAULT_LIMITS, Limits
from ..phases import CURRENT_PHASE, PREVIOUS_PHASE
from ..reconcile.list_labels import Labelled, check_labels
from ..reconcile.membership import Membership, build_membership, list_order
from ..reconcile.phase_overlap import overlaps
from ..schema import TERRITORY_COLUMNS
from ..settings import Settings
from ..sources import resolve
from ..sources.boundaries import BoundaryReport, BoundarySet, boundary_codes, scan_boundaries
from ..sources.catalog import Catalog, PhaseSpec, load_catalog
from ..sources.fetch import FetchResult
from ..sources.parse_cache import cached, cached_frames, cached_path, package_digest, prune, read_arrays, write_arrays

# which sources a phase reads: a light module of its own (an unchanged run imports no geometry stack)
from ..sources.phase_inputs import BOUNDARIES, CHANGES, phase_files, phase_sources
from ..sources.readers import AdminRef, read_admin, read_commune_changes, read_ti_communes, read_ti_groupements
from . import quality

if TYPE_CHECKING:   # publishing is imported when a build is published, not to build
    from ..publish.membership_tables import MembershipRefs

log = logging.getLogger(__name__)

# Columns of the assembled territories used by the checks only, dropped before publishing.
INTERNAL_COLUMNS = {
    "communes_area_km2": "internal: sum of the member communes' areas (km2), checked against area_km2; "
                         "not published",
    "perimeter_source": "internal: which list defined the territory's perimeter; not published",
}


# ---------------------------------------------------------------- step clock
class StepClock:
    """Wall time of each named step, and freed heap given back to the OS after each one.

    Steps may run on two threads (see :func:`build_phase`); their times overlap then.
    """

    def __init__(self):
        self.timings: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 3)
            runtime.give_back_memory()


# ---------------------------------------------------------------- fetch
def fetch_sources(settings: Settings, catalog: Catalog, names: list[str]) -> dict[str, FetchResult]:
    """Resolve (newest release, pin or lock) and fetch each named source once; the references
    follow the COG years resolved (:func:`pipeline.sources.resolve.fetch_sources`)."""
    return resolve.fetch_sources(settings, catalog, names)


def list_cog(spec: PhaseSpec, fetched: dict[str, FetchResult]) -> int:
    """COG year of the list defining the phase's perimeter (the most recent release read)."""
    kinds = {k: n for k, n in (("communes", spec.communes), ("groupements", spec.groupements)) if n}
    read: dict[str, str | None] = {k: fetched[n].release for k, n in kinds.items() if n in fetched}
    return fetched[kinds[list_order(read)[0]]].cog if read else spec.list_cog


def boundary_cog(catalog: Catalog, fetched: dict[str, FetchResult]) -> int:
    src = fetched.get(BOUNDARIES)
    return src.cog if src is not None else catalog.boundaries().cog


# ---------------------------------------------------------------- references and membership
def load_admin(catalog: Catalog, fetched: dict[str, FetchResult], cog: int,
               cache_dir: Path | None = None, limits: Limits = DEFAULT_LIMITS) -> AdminRef:
    """One COG year of decoupage-administratif; parsed once per input (``cache_dir``: parse cache)."""
    results = [fetched[catalog.decoupage(cog, w).name] for w in ("communes", "epci", "ept")]
    sha = "" if any(not r.sha256 for r in results) else \
        hashlib.sha256("".join(r.sha256 for r in results).encode()).hexdigest()

    def parse() -> dict[str, pd.DataFrame]:
        ref = read_admin(cog, results[0].path, results[1].path, results[2].path, limits)
        return {"communes": ref.communes, "members": ref.members}

    frames = cached_frames(cache_dir, f"admin{cog}", sha, ("communes", "members"), parse)
    return AdminRef(cog=cog, communes=frames["communes"], members=frames["members"])


def load_changes(fetched: dict[str, FetchResult], cache_dir: Path | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """INSEE commune changes; parsed once per input (``cache_dir``: parse cache)."""
    src = fetched[CHANGES]
    return cached_frames(cache_dir, "changes", src.sha256, ("changes",),
                         lambda: {"changes": read_commune_changes(src.path, limits)})["changes"]


def reference_years(catalog: Catalog, fetched: dict[str, FetchResult]) -> list[int]:
    """The COG years whose three decoupage-administratif files were fetched."""
    return sorted(r.cog for n, r in fetched.items() if catalog.source(n).kind == "decoupage_communes"
                  and all(f"decoupage_{r.cog}_{w}" in fetched for w in ("communes", "epci", "ept")))


def phase_membership(catalog: Catalog, phase: str, fetched: dict[str, FetchResult], admin: AdminRef,
                     changes: pd.DataFrame, boundary_codes: set[str], limits: Limits = DEFAULT_LIMITS,
                     admin_of: Callable[[int], AdminRef] | None = None) -> Membership:
    """One phase's lists reconciled to the boundary codes (see :func:`~pipeline.reconcile.membership.build_membership`).

    With ``admin_of`` (the reference of a COG year), each list's content is first checked against
    the COG year its label claims (:func:`pipeline.reconcile.list_labels.check_labels`)."""
    spec: PhaseSpec = catalog.phases[phase]
    if list_cog(spec, fetched) != admin.cog:
        raise ReconciliationError(
            f"{phase}: the list defining the perimeter is of COG {list_cog(spec, fetched)} (as resolved), but the "
            f"COG {admin.cog} references were given; build with `python -m pipeline build`, or pin the list "
            f"(TI_PIN_<SOURCE>) to a COG {admin.cog} release")
    communes_list = groupements_list = None
    problems = []
    releases = {}
    if spec.communes:
        communes_list, p = read_ti_communes(fetched[spec.communes].path, limits)
        problems += p
        releases["communes"] = fetched[spec.communes].release
    if spec.groupements:
        groupements_list, p = read_ti_groupements(fetched[spec.groupements].path, limits)
        problems += p
        releases["groupements"] = fetched[spec.groupements].release
    if admin_of is not None:
        def labelled(name: str | None, frame: pd.DataFrame | None) -> Labelled | None:
            return None if name is None or frame is None else Labelled(name, str(fetched[name].origin),
                                                                       fetched[name].cog, frame)
        check_labels(phase, labelled(spec.communes, communes_list), labelled(spec.groupements, groupements_list),
                     reference_years(catalog, fetched), admin_of, changes)
    return build_membership(
        communes_list=communes_list, groupements_list=groupements_list, admin=admin, changes=changes,
        boundary_codes=boundary_codes, boundary_cog=boundary_cog(catalog, fetched),
        communes_release=releases.get("communes"), groupements_release=releases.get("groupements"),
        list_problems=problems, id_pattern=spec.id_pattern)


def listed_territory_ids(catalog: Catalog, phase: str, fetched: dict[str, FetchResult],
                         limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """The territory ids of a phase's lists (to validate the plan table before the build)."""
    spec = catalog.phases[phase]
    ids: set[str] = set()
    for name, reader in ((spec.communes, read_ti_communes), (spec.groupements, read_ti_groupements)):
        if name:
            frame, _ = reader(fetched[name].path, limits)
            ids |= set(frame["id_ti"].astype(str))
    return sorted(ids)


@dataclass
class Reconciliation:
    """A phase's membership (and the previous phase's, for ``is_new``), for one set of boundary codes."""

    membership: Membership
    previous: Membership | None
    boundary_admin: AdminRef | None     # the admin reference of the boundaries' COG (names, population)
    boundary_codes: set[str]
    references: MembershipRefs | None = None    # names and EPCI of the members, for the membership tables


def reconcile_phase(settings: Settings, catalog: Catalog, phase: str, fetched: dict[str, FetchResult],
                    codes: set[str]) -> Reconciliation:
    """Read the references (parse cache under TI_RAW_DIR/parsed) and reconcile the phase's lists.

    The reconciliation is a function of the files read, the boundary codes, the catalog, the
    limits and the code: it is kept in the parse cache under a key naming all of them
    (:func:`reconcile_key`), so a build whose inputs and code did not change reads it back instead
    of reconciling again (measured at 1x: about 2 s of CPU and 50 MB of peak memory, during the
    boundary scan). A reconciliation that raises is never kept: the same inputs raise again.
    """
    parsed = settings.raw_dir / "parsed"
    key = reconcile_key(settings, catalog, phase, fetched, codes)
    read: list[AdminRef] = []     # the boundaries' reference, when the reconciliation read it

    def boundary_reference() -> AdminRef:
        read.append(load_admin(catalog, fetched, boundary_cog(catalog, fetched), parsed, settings.limits))
        return read[0]

    def reconcile() -> dict[str, object]:
        return _reconcile_lists(settings, catalog, phase, fetched, codes, boundary_reference)

    names = ("membership", "previous", "references")
    done = reconcile() if key is None else cached(parsed, f"reconcile-{phase}", key, names, reconcile)
    boundary_admin = read[0] if read else boundary_reference()
    membership = cast(Membership, done["membership"])
    for r in membership.renamed_between_lists:   # the newest list's name wins; said in the log
        log.info("%s: %s renamed between the lists: %r (%s list) -> %r (%s list, the most recent)", phase,
                 r["id_ti"], r["old"], r["old_list"], r["new"], r["new_list"])
    return Reconciliation(membership, cast("Membership | None", done["previous"]), boundary_admin, codes,
                          cast("MembershipRefs | None", done["references"]))


def reconcile_key(settings: Settings, catalog: Catalog, phase: str, fetched: dict[str, FetchResult],
                  codes: set[str]) -> str | None:
    """The parse cache key of a phase's reconciliation: a digest of every file read (sha256, path,
    release, COG year), the boundary codes, the catalog, the limits and the code of the whole
    package (:func:`~pipeline.sources.parse_cache.package_digest`); None when a file has no sha256."""
    if any(not r.sha256 for r in fetched.values()):
        return None
    digest = hashlib.sha256(f"{phase}|{catalog!r}|{settings.limits!r}|{package_digest()}".encode())
    for name in sorted(fetched):
        r = fetched[name]
        digest.update(f"|{name}|{r.sha256}|{r.path}|{r.origin}|{r.release}|{r.cog}".encode())
    digest.update("\n".join(sorted(codes)).encode())
    return f"reconcile-{phase}-{digest.hexdigest()[:32]}"


def _reconcile_lists(settings: Settings, catalog: Catalog, phase: str, fetched: dict[str, FetchResult],
                     codes: set[str], boundary_reference: Callable[[], AdminRef]) -> dict[str, object]:
    """The phase's membership, the previous phase's (for ``is_new``) and the members' references.

    Each list's admin reference is read for its membership only and freed after it; only the
    boundaries' COG is kept (names, populations).
    """
    parsed = settings.raw_dir / "parsed"
    limits = settings.limits
    changes = load_changes(fetched, parsed, limits)
    boundary_admin = boundary_reference()

    from ..publish.membership_tables import references

    def admin_of(cog: int) -> AdminRef:
        return load_admin(catalog, fetched, cog, parsed, limits)

    list_admin = load_admin(catalog, fetched, list_cog(catalog.phases[phase], fetched), parsed, limits)
    membership = phase_membership(catalog, phase, fetched, list_admin, changes, codes, limits, admin_of)
    refs = references(membership, list_admin, boundary_admin)   # names and EPCI of the members, published
    del list_admin
    previous = None
    if phase == CURRENT_PHASE and PREVIOUS_PHASE in catalog.phases:
        admin = admin_of(list_cog(catalog.phases[PREVIOUS_PHASE], fetched))
        previous = phase_membership(catalog, PREVIOUS_PHASE, fetched, admin, changes, codes, limits, admin_of)
    return {"membership": membership, "previous": previous, "references": refs}


# ---------------------------------------------------------------- geometry
# The last boundary scan of this process, by (path, sha256, limits): the phases of one run read
# the same file, so the second phase reuses the first one's scan instead of checking every polygon
# again (measured with `python bench/run.py --methods cli,baseline`: the main job's scan stage,
# both phases, 2.87 s -> 0.81 s at 1x). One entry only, so a long-lived process holds at most one
# file's scan.
_LAST_SCAN: dict[tuple[str, str, Limits], BoundarySet] = {}


def scan_key(src: FetchResult, limits: Limits) -> str:
    """The parse cache key of a boundary file's scan: its sha256 and path (the set reads the file
    again to decode), the limits and the code of the whole package."""
    digest = hashlib.sha256(f"{src.sha256}|{src.path}|{limits!r}|{package_digest()}".encode())
    return f"scan-{digest.hexdigest()[:32]}"


def _last_scan_key(src: FetchResult, limits: Limits) -> tuple[str, str, Limits]:
    return (str(src.path), src.sha256 or "", limits)


def scan_is_kept(fetched: dict[str, FetchResult], limits: Limits = DEFAULT_LIMITS,
                 cache_dir: Path | None = None) -> bool:
    """Whether :func:`scan_commune_boundaries` will find the scan made already (in this process,
    or in the parse cache ``cache_dir``) rather than check every polygon again. A cache entry
    that turns out unreadable is scanned again all the same, only without the early start."""
    src = fetched[BOUNDARIES]
    if not src.sha256:
        return False
    return (_last_scan_key(src, limits) in _LAST_SCAN
            or (cache_dir is not None and cached_path(cache_dir, scan_key(src, limits)).is_file()))


def scan_commune_boundaries(fetched: dict[str, FetchResult], limits: Limits = DEFAULT_LIMITS,
                            cache_dir: Path | None = None) -> BoundarySet:
    """Every commune polygon checked and reported; polygons decoded later, only where needed.

    A scan of the same file (path and sha256) under the same limits made earlier in this process
    is reused: what a build does to the set (decoding,
    :meth:`~pipeline.sources.boundaries.BoundarySet.release`) never changes the polygons it answers with.
    With ``cache_dir`` (the parse cache), the scan as it ends is also kept there under
    :func:`scan_key`, and a later process reads it back instead of checking every polygon again
    (the file is read again only to decode the polygons a build needs).
    """
    src = fetched[BOUNDARIES]
    key = _last_scan_key(src, limits)
    if src.sha256 and key in _LAST_SCAN:
        return _LAST_SCAN[key]
    scanned = None
    if cache_dir is not None and src.sha256:
        entry = scan_key(src, limits)
        store = cached_path(cache_dir, entry).with_suffix(".wkb")

        def scan() -> dict[str, BoundarySet]:
            found = scan_boundaries(src.path, limits, store=store)
            prune(cache_dir, "scan", entry, store.suffix)
            return {"boundaries": found}

        kept = cached(cache_dir, "scan", entry, ("boundaries",), scan)["boundaries"]
        scanned = kept if isinstance(kept, BoundarySet) else None
    if scanned is None:
        scanned = scan_boundaries(src.path, limits)
    _LAST_SCAN.clear()
    if src.sha256:
        _LAST_SCAN[key] = scanned
    return scanned


# The coverage checks' answers for the last boundary file of this process, by parse cache key
# (see edge_checks_key): the second phase of a run checks only the communes whose neighbourhood
# the first one did not see. One entry only, as _LAST_SCAN.
_EDGE_CHECKS: dict[str, EdgeChecks] = {}


def edge_checks_key(settings: Settings, fetched: dict[str, FetchResult]) -> str | None:
    """The parse cache key of the coverage checks' answers (:mod:`pipeline.geometry.edge_checks`)
    of the boundary file: its sha256, the limits, the GEOS version and the code of the whole
    package; None when the file has no sha256."""
    src = fetched[BOUNDARIES]
    if not src.sha256:
        return None
    digest = hashlib.sha256(f"{src.sha256}|{settings.limits!r}|{shapely.geos_version_string}|"
                            f"{package_digest()}".encode())
    return f"edges-{digest.hexdigest()[:32]}"


def edge_checks(settings: Settings, fetched: dict[str, FetchResult]) -> EdgeChecks | None:
    """The answers of the earlier coverage checks of this boundary file: this process's, else the
    parse cache's (``TI_RAW_DIR/parsed/edges-*.npz``), else none yet; None when not keyable."""
    key = edge_checks_key(settings, fetched)
    if key is None:
        return None
    if key not in _EDGE_CHECKS:
        arrays = read_arrays(settings.raw_dir / "parsed", key)
        checks = EdgeChecks()
        if arrays is not None:
            try:
                checks = EdgeChecks.from_arrays(arrays)
            except (KeyError, ValueError) as err:
                log.warning("parse cache %s ignored (%s): the coverage is checked again", key, err)
        _EDGE_CHECKS.clear()
        _EDGE_CHECKS[key] = checks
    return _EDGE_CHECKS[key]


def keep_edge_checks(settings: Settings, fetched: dict[str, FetchResult], checks: EdgeChecks | None) -> None:
    """Write the answers to the parse cache when the build learnt new ones."""
    key = edge_checks_key(settings, fetched)
    if key is not None and checks is not None and checks.added:
        write_arrays(settings.raw_dir / "parsed", "edges", key, checks.as_arrays())
        checks.added = 0


def member_coverage(boundaries: BoundarySet, members: pd.DataFrame,
                    checks: EdgeChecks | None = None) -> geometry.CleanCoverage:
    """Repair the coverage of the member communes and of every commune whose bounds meet a member's.

    When polygons read again cost little (:attr:`BoundarySet.reads_cheaply`), none is decoded
    here: the repair decodes the communes it checks or repairs, the unions each territory's
    members, the hole and gap queries the communes around them, each only while used (the
    repaired polygons stay). Otherwise one read decodes the members and their neighbours; the
    neighbours the repair leaves as they were are then dropped and read again only around holes.
    Communes far from every member are never decoded as a whole. ``checks``: see :func:`edge_checks`.
    """
    codes = boundaries.codes
    member_codes = set(members["insee_com"].tolist())
    is_member = np.fromiter((c in member_codes for c in codes), dtype=bool, count=len(codes))
    boxes = boundaries.boxes
    near = shapely.STRtree(boxes[is_member]).query(boxes)[0]
    keep = is_member.copy()
    keep[near] = True
    rows = np.flatnonzero(keep)
    lazy = boundaries.reads_cheaply
    communes = boundaries.undecoded(keep) if lazy else boundaries.frame(keep, hold=is_member)
    return geometry.clean_coverage(communes, member_codes & set(codes[is_member].tolist()), others=boundaries,
                                   checks=checks, read=lambda at: boundaries.geometries(rows[at]),
                                   bounds=boundaries.bounds[rows], boxes=boxes[rows], lazy_members=lazy,
                                   sizes=boundaries.wkb_bytes(rows) if lazy else None)


@dataclass
class Shapes:
    """The dissolved territories: id_ti, area_km2, communes_area_km2, geometry (EPSG:4326), and figures."""

    frame: gpd.GeoDataFrame
    stats: DissolveStats


def repair_and_dissolve(boundaries: BoundarySet, members: pd.DataFrame, checks: EdgeChecks | None = None) -> Shapes:
    """Repair the members' coverage, union each territory, fill the gaps between territories.

    ``checks``: the answers of earlier coverage checks of the same file (see :func:`edge_checks`).
    """
    coverage = member_coverage(boundaries, members, checks)
    runtime.give_back_memory()   # the repair's temporary structures are gone: the unions start lower
    stats = geometry.coverage_stats(coverage)
    shapes = geometry.union_territories(coverage, members)
    member_codes = set(members["insee_com"])
    # The gaps between territories are looked up among the communes outside them only, so the
    # members' polygons are dropped now (from the coverage, and from the boundary set except
    # those around the territories' holes, which the checks read): their memory is free for
    # the rest of the build (measured with `python bench/run.py`: about -40 MB at 16x).
    coverage = coverage.without(member_codes)
    boundaries.release(member_codes, keep_near=geometry.holes_of(s.geometry for s in shapes))
    runtime.give_back_memory()
    geometry.fill_gaps_between(coverage, shapes, member_codes, stats)
    return Shapes(*geometry.territories_frame(shapes, stats))


# ---------------------------------------------------------------- territories
def _sorted_unique(values) -> list[str]:
    return sorted({v for v in values if isinstance(v, str) and v})


def _per_territory(ids: list, values: list, combine: Callable[[list], object]) -> pd.Series:
    """``combine`` of each territory's values, indexed by id_ti (missing ids left out, as groupby).

    Plain lists grouped in a dict: pandas' per-group ``agg`` iterates each group's Arrow-backed
    values one scalar at a time (measured: 0.3 s of CPU at 1x on the side thread, during the repair).
    """
    groups: dict[str, list] = defaultdict(list)
    for tid, value in zip(ids, values):
        if isinstance(tid, str):
            groups[tid].append(value)
    return pd.Series({tid: combine(v) for tid, v in groups.items()}, dtype=object)


def assemble(phase: str, membership: Membership, dissolved: gpd.GeoDataFrame,
             attributes: pd.DataFrame) -> gpd.GeoDataFrame:
    """Territory rows with every contract column (plan columns are attached at publish time).

    ``attributes``: :func:`territory_attributes`; ``dissolved``: the :class:`Shapes` frame.
    """
    geo = dissolved.set_index("id_ti")
    out = attributes.copy()
    out["area_km2"] = geo["area_km2"].round(4)
    out["communes_area_km2"] = geo["communes_area_km2"]
    out = out.reset_index()
    out = gpd.GeoDataFrame(out, geometry=geo.reindex(out["id_ti"]).geometry.values, crs=dissolved.crs)
    for col in ("id_ti", "lib_ti", "phase"):
        out[col] = out[col].astype("string")
    columns = [c.name for c in TERRITORY_COLUMNS]
    extra = [c for c in INTERNAL_COLUMNS if c in out]
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
    ids = m["id_ti"].tolist()
    out = membership.territories.set_index("id_ti")
    out["phase"] = phase
    out["insee_communes"] = _per_territory(ids, m["insee_com"].tolist(), lambda v: sorted(set(v)))
    out["n_communes"] = out["insee_communes"].map(len).astype("int64")
    out["n_groupements"] = out["siren_groupements"].map(len).astype("int64")
    out["departements"] = _per_territory(ids, m["departement"].tolist(), _sorted_unique)
    out["regions"] = _per_territory(ids, m["region"].tolist(), _sorted_unique)
    pop_any_null = m["population"].isna().groupby(m["id_ti"], sort=True).any().astype(bool)
    pop = grouped["population"].sum(min_count=1).astype("Int64")
    out["population"] = pop.mask(pop_any_null)
    out["list_cog"] = membership.list_cog
    out["boundary_cog"] = membership.boundary_cog
    out["n_communes_reconciled"] = ((m["status"] == "reconciled").groupby(m["id_ti"], sort=True).sum()
                                    .astype("int64"))
    absorbed: dict[str, list[str]] = {}
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
    """The blocking checks; ``expected``: the territory ids to build (default: every id of the lists).

    They only read their inputs, so they run on :func:`runtime.threads` threads (the geometry
    ones are GEOS work, which releases the GIL); the results keep this order.
    """
    checks = [
        lambda: quality.check_count(territories, membership.listed_territories if expected is None else expected),
        lambda: quality.check_geometries(territories),
        lambda: quality.check_members(membership.errors, membership.listed_codes, len(membership.members)),
        lambda: quality.check_areas(territories),
        lambda: quality.check_holes(territories, membership.members, boundaries),
        lambda: quality.check_overlaps(territories, membership.shared_communes),
    ]
    with ThreadPoolExecutor(runtime.threads()) as pool:
        return list(pool.map(lambda check: check(), checks))


@dataclass
class BuildResult:
    """One phase built and checked, ready for :func:`publish_build` (the interface of publishing)."""

    phase: str
    territories: gpd.GeoDataFrame       # contract columns (no plan columns yet) + INTERNAL_COLUMNS
    membership: Membership
    dissolve_stats: DissolveStats
    boundary_report: BoundaryReport
    checks: list[quality.CheckResult]
    inputs: list[dict]                  # manifest entries of the sources the build read
    timings: dict[str, float] = field(default_factory=dict)
    previous: Membership | None = None
    references: MembershipRefs | None = None   # names and EPCI of the members, for the membership tables

    @property
    def passed(self) -> bool:
        return quality.all_passed(self.checks)


def build_phase(settings: Settings, catalog: Catalog, phase: str, fetched: dict[str, FetchResult],
                checks: bool = True) -> BuildResult:
    """Reconcile, repair, dissolve, assemble and check one phase from its fetched files (no publishing).

    Two threads keep both cores busy: Python work (parsing the references, reconciling the codes,
    the territories' attributes) runs on a side thread while this thread does the geometry work
    (scan, repair, unions: GEOS releases the GIL, and those steps use :func:`runtime.threads`).
    The side thread starts no pool of its own.
    """
    clock = StepClock()
    files = phase_files(catalog, phase, fetched)
    # The codes from the file's attribute columns let the reconciliation start before a long scan
    # ends; it is redone if the scan drops some communes (empty or degenerate polygons). A scan
    # read back takes less than that read of the file, which leaves Arrow's buffers in the process
    # (`python bench/jobs.py ours` at 1x, warm, interleaved: peak 280-283 -> 268 MB without it).
    parsed = settings.raw_dir / "parsed"
    early = None if scan_is_kept(files, settings.limits, parsed) else boundary_codes(files[BOUNDARIES].path)
    with ThreadPoolExecutor(1) as side:
        reading = (side.submit(clock.run, "reconcile", reconcile_phase, settings, catalog, phase, files, early)
                   if early is not None else None)
        boundaries = clock.run("scan_boundaries", scan_commune_boundaries, files, settings.limits, parsed)
        codes = set(boundaries.codes.tolist())
        lists = reading.result() if reading is not None else None
        if lists is None or lists.boundary_codes != codes:
            lists = clock.run("reconcile", reconcile_phase, settings, catalog, phase, files, codes)
        attributing = side.submit(clock.run, "attributes", territory_attributes, phase, lists.membership,
                                  boundaries.communes, lists.boundary_admin, lists.previous)
        known = edge_checks(settings, files)
        shapes = clock.run("repair_and_dissolve", repair_and_dissolve, boundaries, lists.membership.members, known)
        keep_edge_checks(settings, files, known)
        attributes = attributing.result()
    territories = clock.run("assemble", assemble, phase, lists.membership, shapes.frame, attributes)
    results = clock.run("checks", run_checks, territories, lists.membership, boundaries) if checks else []
    boundaries.trim()       # the set is kept for the next phase (see _LAST_SCAN), its lookups are not
    inputs = [inputs_entry(files[name], catalog) for name in files]
    return BuildResult(phase, territories, lists.membership, shapes.stats, boundaries.report, results, inputs,
                       clock.timings, lists.previous, lists.references)


def build_territories(settings: Settings | None = None, phase: str = CURRENT_PHASE,
                      checks: bool = True) -> BuildResult:
    """Fetch one phase's sources, then :func:`build_phase` (bench/ and the tests)."""
    settings = settings or Settings.from_env()
    catalog = load_catalog(settings)
    t = time.perf_counter()
    fetched = fetch_sources(settings, catalog, phase_sources(catalog, phase))
    fetch_s = round(time.perf_counter() - t, 3)
    result = build_phase(settings, catalog, phase, fetched, checks)
    result.timings = {"fetch": fetch_s, **result.timings}
    return result


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
    from ..publish.geojson import write_geojson  # the published RFC 7946 writer
    from ..publish.geoparquet import write_geoparquet

    with ThreadPoolExecutor(runtime.threads()) as pool:   # two files, two cores
        done = [pool.submit(write_geoparquet, gdf, paths["parquet"], index=None),
                pool.submit(write_geojson, gdf, paths["geojson"])]
    for future in done:
        future.result()
    return paths


# ---------------------------------------------------------------- publishing
def new_build_id() -> str:
    """Sortable, unique build id: UTC time plus a short random suffix."""
    import secrets
    from datetime import datetime

    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def publish_build(result: BuildResult, settings: Settings, plans=None, build_id: str | None = None,
                  checks: list[quality.CheckResult] | None = None) -> dict:
    """Attach the plan table and publish a checked build; refuses a build whose blocking checks fail."""
    from ..code_version import build_code_version
    from ..errors import CheckFailedError
    from ..publish import publish_release
    from ..sources.plans import attach_plans, read_plans

    checks = result.checks if checks is None else checks
    if not quality.all_passed(checks):
        raise CheckFailedError(f"{result.phase}: {quality.failure_message(checks)}")
    from ..publish.guard import guard_build
    change_guard = guard_build(result, settings)    # CheckFailedError past its thresholds
    if plans is None:
        plans = read_plans(settings.plans_path if result.phase == CURRENT_PHASE else None,
                           result.territories["id_ti"], settings.limits)
    territories = attach_plans(result.territories.drop(columns=list(INTERNAL_COLUMNS), errors="ignore"), plans)
    extra = {
        "membership": result.membership.summary(),
        "reconciled": result.membership.reconciled,
        "absorbed_outside": result.membership.absorbed_outside,
        "list_disagreements": result.membership.disagreements,
        "renamed_between_lists": result.membership.renamed_between_lists,
        "dissolve": result.dissolve_stats.as_dict(),
        "boundaries": {"repaired": result.boundary_report.repaired, "empty": result.boundary_report.empty,
                       "duplicates": result.boundary_report.duplicates,
                       "sub_communal_left_out": result.boundary_report.sub_communal},
        "plans": {"source": plans.source, "warnings": plans.warnings},
        "new_territories": int(territories["is_new"].fillna(False).sum()),
        "code_fingerprint": build_code_version(),   # the code version (pipeline.code_version)
        "change_guard": change_guard,
        "timings_s": result.timings,
        "lock": resolve.lock_of_inputs(result.inputs),   # the manifest's top-level ``lock`` (see publish/manifest.py)
    }
    return publish_release(territories, settings, build_id=build_id or new_build_id(),
                           inputs=[{k: v for k, v in i.items() if k != "lock"} for i in result.inputs],
                           checks=[c.as_dict() for c in checks],
                           phase=result.phase, extra=extra, membership=result.membership,
                           references=result.references)
