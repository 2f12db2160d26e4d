"""Resolve, then lock, then fetch: which release of each source a build reads.

Each catalog source says how to find its newest release (``resolve`` in ``assets/sources.toml``):

* ``datagouv``: the data.gouv.fr API ``<api><dataset>/`` lists the dataset's resources; the ones whose
  file name matches a catalog pattern are candidates; the pattern's named groups give the COG year
  (``cog``) and the release date (``date``, YYYYMMDD); the API's resource id, ``last_modified`` and
  checksum are recorded, and the checksum is verified on download;
* ``yearly``: a URL template with ``{year}``; the newest year that answers (not newer than the COG
  years the catalog's references cover) is taken, its COG year is that year;
* ``fixed``: the catalog's URL.

In mirror mode (``TI_MIRROR_DIR``) the candidates are the catalog's own mirror file plus every file
of its folder matching ``patterns`` or ``mirror_patterns``: the newest is taken the same way, so a
mirror may hold several releases. A pin (catalog ``pin`` or ``TI_PIN_<SOURCE>``) keeps the newest
candidate whose release date, COG year, file name or resource id equals it; ``TI_URL_<SOURCE>`` is
that exact URL. A lock (``TI_LOCK`` / ``build --lock manifest.json``: a manifest's ``lock``) replaces
resolution: the exact URL or mirror file, COG year and release of each source, its sha256 verified.

:func:`fetch_sources` resolves and fetches a build's sources (the decoupage-administratif references
for the COG years the resolved lists and boundaries need); each :class:`FetchResult` carries its lock
entry (``result.lock``), which the manifest records (:func:`lock_of_inputs`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from ..errors import ReconciliationError, SourceError
from ..settings import Settings
from . import transfer
from .catalog import Catalog, SourceSpec
from .fetch import FetchResult, fetch_source
from .labels import checked_date

DECOUPAGE_KINDS = ("decoupage_communes", "decoupage_epci", "decoupage_ept")
VINTAGE_KINDS = ("boundaries", "ti_communes", "ti_groupements")   # sources whose COG year sets the references
API_CHECKSUMS = {"sha1": "sha1", "md5": "md5", "sha256": "sha256", "sha2": "sha256"}


@dataclass(frozen=True)
class Candidate:
    """One release of a source: a file in the mirror, a data.gouv.fr resource or a yearly URL."""

    file: str
    cog: int
    date: str = ""                    # YYYY-MM-DD when the name carries one
    release: str = ""
    url: str | None = None
    mirror: str | None = None         # path relative to the mirror folder
    resource_id: str | None = None
    checksum: tuple[str, str] | None = None
    last_modified: str | None = None

    def key(self) -> tuple:
        return (self.date, self.cog, self.release, self.file)

    def matches(self, pin: str) -> bool:
        return pin in {self.date, self.date.replace("-", ""), str(self.cog), self.file, self.resource_id,
                       self.release}


def _match(spec: SourceSpec, file: str, patterns) -> dict | None:
    for pattern in patterns:
        m = re.fullmatch(pattern, file)
        if m:
            return m.groupdict()
    return None


def _candidate(spec: SourceSpec, file: str, groups: dict, what: str = "", **where) -> Candidate:
    date = groups.get("date") or ""
    if date:   # a label is a claim: a real date, not in the future (InputFormatError otherwise)
        date = checked_date(date, what or f"source {spec.name}: {file}")
    cog = int(groups["cog"]) if groups.get("cog") else spec.cog
    release = groups.get("release") or date or file
    return Candidate(file=file, cog=cog, date=date, release=release, **where)


def mirror_candidates(spec: SourceSpec, mirror_dir: Path) -> list[Candidate]:
    """The catalog's mirror file (with the catalog's labels) and the matching files beside it."""
    known = PurePosixPath(spec.mirror)
    patterns = spec.mirror_patterns + spec.patterns
    found = []
    if (mirror_dir / spec.mirror).is_file():
        date = _candidate(spec, known.name, _match(spec, known.name, patterns) or {},
                          f"source {spec.name}: mirror file {mirror_dir / spec.mirror}").date
        found.append(Candidate(file=known.name, cog=spec.cog, date=date, release=spec.mirror_release,
                               mirror=spec.mirror))
    folder = mirror_dir / known.parent
    if patterns and folder.is_dir():
        for path in sorted(folder.iterdir()):
            groups = _match(spec, path.name, patterns)
            if path.name != known.name and groups is not None and path.is_file():
                found.append(_candidate(spec, path.name, groups, f"source {spec.name}: mirror file {path}",
                                        mirror=str(known.parent / path.name)))
    return found


def _get_json(spec: SourceSpec, url: str, settings: Settings, session) -> object:
    """The API's JSON answer, streamed within TI_MAX_SOURCE_MB (at most 64 MiB) and TI_HTTP_DEADLINE,
    then parsed."""
    from . import http

    limits = http.Limits.for_api(settings)

    def attempt(n: int):
        resp = http.request(session, "GET", url, headers={"Accept": "application/json"}, stream=True,
                            timeout=settings.http_timeout)   # redirects checked
        with resp:
            http.check_status(resp)
            sink = io.BytesIO()
            http.read_body(resp, sink, settings.http_timeout, limits)
            try:
                return json.loads(sink.getvalue())
            except ValueError:
                raise transfer.Permanent(f"the API answered {resp.headers.get('Content-Type', '?')}, "
                                     f"not JSON; first bytes: {sink.getvalue()[:80]!r}") from None
    return http.run_with_retries(spec.name, url, settings, attempt, what="resolution (data.gouv.fr API)",
                                 limits=limits)[0]


def _needed(spec: SourceSpec, key: str) -> Any:
    """A catalog key the source's ``resolve`` needs (load_catalog checks it is there)."""
    value = getattr(spec, key)
    if value is None:
        raise SourceError(f"source {spec.name}: resolve = {spec.resolve!r} needs {key} in the catalog")
    return value


def datagouv_candidates(spec: SourceSpec, settings: Settings, session) -> list[Candidate]:
    """The dataset's resources whose file name matches the source's patterns."""
    url = str(_needed(spec, "api")).rstrip("/") + f"/{spec.dataset}/"
    data = _get_json(spec, url, settings, session)
    resources = data.get("resources") if isinstance(data, dict) else None
    if not isinstance(resources, list):
        raise SourceError(f"source {spec.name}: the data.gouv.fr API {url} gave no 'resources' list")
    found = []
    for res in resources:
        if not isinstance(res, dict) or not res.get("url"):
            continue
        file = unquote(urlparse(str(res["url"])).path.rstrip("/").rsplit("/", 1)[-1])
        groups = _match(spec, file, spec.patterns)
        if groups is None and res.get("title"):
            file = str(res["title"]).strip()
            groups = _match(spec, file, spec.patterns)
        if groups is None:
            continue
        checksum = res.get("checksum") if isinstance(res.get("checksum"), dict) else None
        what = f"source {spec.name}: data.gouv.fr resource {file} ({res['url']})"
        if res.get("last_modified"):
            checked_date(str(res["last_modified"]), f"{what}: last_modified")
        found.append(_candidate(
            spec, file, groups, what, url=str(res["url"]), resource_id=res.get("id"),
            checksum=(str(checksum.get("type", "")).lower(), str(checksum.get("value", "")).lower())
            if checksum and checksum.get("value") else None,
            last_modified=res.get("last_modified")))
    if not found:
        raise SourceError(f"source {spec.name}: no resource of the data.gouv.fr dataset {spec.dataset} ({url}) "
                          f"has a file name matching {' or '.join(spec.patterns)}")
    return found


def yearly_candidates(spec: SourceSpec, settings: Settings, session, newest: int) -> list[Candidate]:
    """The newest year from ``newest`` down to ``first_year`` whose URL answers (or the pinned year)."""
    from . import http

    template = str(_needed(spec, "url_template"))
    years = [int(spec.pin)] if spec.pin and spec.pin.isdigit() else range(newest, int(_needed(spec, "first_year")) - 1, -1)
    limits = http.Limits.from_settings(settings)     # TI_HTTP_DEADLINE over every year asked
    for year in years:
        url = template.format(year=year)

        def head(n: int, url=url) -> bool:
            resp = http.request(session, "HEAD", url, timeout=settings.http_timeout)   # redirects checked
            with resp:
                if resp.status_code in (404, 410):
                    return False
                if resp.status_code in (403, 405, 501):   # HEAD refused: the GET will tell
                    return True
                http.check_status(resp)
                return True
        if http.run_with_retries(spec.name, url, settings, head, what="resolution (HEAD)", limits=limits)[0]:
            return [Candidate(file=PurePosixPath(urlparse(url).path).name, cog=year, release=str(year), url=url)]
    raise SourceError(f"source {spec.name}: no year from {newest} down to {spec.first_year} answers at "
                      f"{spec.url_template}")


def _pick(spec: SourceSpec, candidates: list[Candidate], where: str) -> tuple[Candidate, str]:
    """The newest candidate (of those matching the pin, if any) and how it was chosen."""
    if spec.pin:
        pinned = [c for c in candidates if c.matches(spec.pin)]
        if not pinned:
            shown = ", ".join(sorted(c.file for c in candidates)) or "none"
            raise SourceError(f"source {spec.name}: pin {spec.pin!r} (TI_PIN_{spec.name.upper()} or the catalog's "
                              f"pin) matches no release in {where}; releases found: {shown}")
        return max(pinned, key=Candidate.key), "pinned"
    if not candidates:
        raise SourceError(f"source {spec.name}: no release found in {where}")
    return max(candidates, key=Candidate.key), "newest" if len(candidates) > 1 or spec.resolve != "fixed" else "fixed"


def references_cog(catalog: Catalog) -> int:
    """The newest COG year the catalog's references cover (decoupage-administratif and INSEE changes)."""
    decoupage = [s.cog for s in catalog.sources.values() if s.kind == "decoupage_communes"]
    changes = [s.cog for s in catalog.sources.values() if s.kind == "commune_changes"]
    return min([max(decoupage, default=9999), *changes])


def resolve_source(spec: SourceSpec, settings: Settings, catalog: Catalog, session=None,
                   locked: dict | None = None) -> tuple[SourceSpec, dict]:
    """The source's release to read (a copy of ``spec`` with its URL or mirror file, COG year,
    release and checksums) and its lock entry (without sha256 and size: known once fetched)."""
    if locked is not None:
        return _from_lock(spec, settings, locked)
    if settings.mirror_dir is not None:
        where = f"the mirror folder {Path(settings.mirror_dir) / PurePosixPath(spec.mirror).parent}"
        candidates = mirror_candidates(spec, Path(settings.mirror_dir))
        if not candidates and not spec.pin:   # the fetch names the missing file
            candidates = [Candidate(file=PurePosixPath(spec.mirror).name, cog=spec.cog,
                                    release=spec.mirror_release, mirror=spec.mirror)]
    elif spec.url_overridden or spec.resolve == "fixed":
        where = f"the catalog URL {spec.url}"
        candidates = [Candidate(file=PurePosixPath(urlparse(spec.url).path).name, cog=spec.cog,
                                release=spec.live_release, url=spec.url)]
        if spec.url_overridden:
            spec = dataclasses.replace(spec, pin=None)   # the override is the pin
    else:
        from . import http  # live mode only

        own = session or http.make_session()
        try:
            if spec.resolve == "datagouv":
                where = f"the data.gouv.fr dataset {spec.dataset}"
                candidates = datagouv_candidates(spec, settings, own)
            else:
                where = f"{spec.url_template} (years {spec.first_year}-{references_cog(catalog)})"
                candidates = yearly_candidates(spec, settings, own, max(int(_needed(spec, "first_year")), min(
                    datetime.now(UTC).year, references_cog(catalog))))
        finally:
            if session is None:
                own.close()
    chosen, how = _pick(spec, candidates, where)
    return _apply(spec, chosen, how, settings)


def _apply(spec: SourceSpec, chosen: Candidate, how: str, settings: Settings,
           sha256: str | None = None) -> tuple[SourceSpec, dict]:
    offline = settings.mirror_dir is not None
    checksum = chosen.checksum if chosen.checksum and chosen.checksum[0] in API_CHECKSUMS else None
    pin_sha = sha256 or spec.sha256 or (checksum[1] if checksum and API_CHECKSUMS[checksum[0]] == "sha256" else None)
    changes: dict[str, Any] = {"cog": chosen.cog, "sha256": pin_sha}
    if offline:
        changes.update(mirror=chosen.mirror, mirror_release=chosen.release)
        fmt = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".geojson": "geojson"}
        suffixes = [s for s in PurePosixPath(chosen.file).suffixes if s != ".gz"]
        changes["mirror_format"] = fmt.get(suffixes[-1] if suffixes else "", spec.mirror_format)
    else:
        changes.update(url=chosen.url, live_release=chosen.release)
    resolved = dataclasses.replace(spec, **changes)
    entry = {"source": spec.name, "kind": spec.kind, "how": how, "mode": "mirror" if offline else "live",
             "url": None if offline else chosen.url, "mirror": chosen.mirror if offline else None,
             "file": chosen.file, "release": chosen.release, "date": chosen.date or None, "cog": chosen.cog,
             "resource_id": chosen.resource_id, "last_modified": chosen.last_modified,
             "checksum": {"type": chosen.checksum[0], "value": chosen.checksum[1]} if chosen.checksum else None,
             "pin": spec.pin}
    return resolved, entry


def _from_lock(spec: SourceSpec, settings: Settings, locked: dict) -> tuple[SourceSpec, dict]:
    offline = settings.mirror_dir is not None
    where = "mirror" if offline else "url"
    if not locked.get(where) or not locked.get("sha256"):
        raise SourceError(f"source {spec.name}: the lock {settings.lock_path} has no {where} and sha256 for it "
                          f"(it was made in {locked.get('mode', '?')} mode)")
    checksum = locked.get("checksum") or None
    date = checked_date(str(locked["date"]), f"source {spec.name}: the lock {settings.lock_path}") \
        if locked.get("date") else ""
    chosen = Candidate(file=str(locked.get("file") or PurePosixPath(str(locked[where])).name),
                       cog=int(locked["cog"]), date=date, release=str(locked.get("release", "")),
                       url=locked.get("url"), mirror=locked.get("mirror"), resource_id=locked.get("resource_id"),
                       checksum=(checksum["type"], checksum["value"]) if checksum else None,
                       last_modified=locked.get("last_modified"))
    return _apply(spec, chosen, "lock", settings, sha256=str(locked["sha256"]).lower())


# --------------------------------------------------------------------------------------------------
# lock files

def read_lock_document(path: Path) -> dict:
    """The whole lock file (a manifest, or its ``lock`` alone): a bounded regular file, valid
    against ``assets/schemas/lock.schema.json`` before any field is used; SourceError otherwise."""
    from .. import documents

    try:
        doc = documents.load(Path(path), "lock.schema.json", "lock file")
        for name, entry in doc.get("lock", doc).items():
            if entry.get("mirror") is not None:
                documents.relative(entry["mirror"], f"lock file {path}: {name}: mirror", "TI_MIRROR_DIR")
        return doc
    except FileNotFoundError:
        raise SourceError(f"lock file not found: {path} (TI_LOCK / --lock)") from None
    except documents.InvalidDocument as err:
        raise SourceError(f"{err} (TI_LOCK / --lock: a manifest.json of a build made since sources are "
                          "locked, or its 'lock' alone)") from None


def read_lock(path: Path) -> dict[str, dict]:
    """Source name -> lock entry, from a manifest (its ``lock``) or a bare lock JSON file."""
    data = read_lock_document(path)
    return data.get("lock", data)


def lock_of_inputs(inputs: list[dict]) -> dict[str, dict]:
    """The manifest's ``lock``: each input's lock entry, by source name."""
    return {i["source"]: i["lock"] for i in inputs if i.get("lock")}


# --------------------------------------------------------------------------------------------------
# fetch

def _verify(result: FetchResult, resolved: SourceSpec, entry: dict) -> FetchResult:
    """Check the file against the lock's sha256 and the API's checksum; attach the lock entry."""
    if resolved.sha256 and result.sha256 != resolved.sha256.lower():
        pinned_by = "the lock" if entry["how"] == "lock" else "the catalog or the API"
        raise SourceError(f"source {resolved.name}: {result.origin} has sha256 {result.sha256}, but "
                          f"{pinned_by} pins {resolved.sha256.lower()}")
    checksum = entry.get("checksum")
    if checksum and checksum["type"] in API_CHECKSUMS and result.mode == "live":
        with open(result.path, "rb") as fh:
            got = hashlib.file_digest(fh, API_CHECKSUMS[checksum["type"]]).hexdigest()
        if got != checksum["value"]:
            raise SourceError(f"source {resolved.name}: {result.origin}: {checksum['type']} {got} differs from "
                              f"the checksum the data.gouv.fr API gives ({checksum['value']}, resource "
                              f"{entry.get('resource_id')})")
    return dataclasses.replace(result, release=entry["release"], cog=entry["cog"],
                               lock={**entry, "sha256": result.sha256, "size": result.size})


def fetch_one(settings: Settings, catalog: Catalog, name: str, session=None,
              lock: dict[str, dict] | None = None) -> FetchResult:
    """Resolve and fetch one source (the lock's entry when ``settings.lock_path`` is set)."""
    spec = catalog.source(name)
    if lock is None and settings.lock_path is not None:
        lock = read_lock(settings.lock_path)
    locked = None
    if lock is not None:
        locked = lock.get(name)
        if locked is None:
            raise SourceError(f"source {name}: not in the lock {settings.lock_path} "
                              f"(it locks {', '.join(sorted(lock))})")
    resolved, entry = resolve_source(spec, settings, catalog, session, locked)
    return _verify(fetch_source(resolved, settings, session), resolved, entry)


def needed_references(catalog: Catalog, fetched: dict[str, FetchResult]) -> list[str]:
    """The decoupage-administratif sources for the COG years of the resolved lists and boundaries;
    ReconciliationError naming the year and the reference when one is missing."""
    years: dict[int, list[str]] = {}
    for name, result in fetched.items():
        if catalog.source(name).kind in VINTAGE_KINDS:
            years.setdefault(result.cog, []).append(name)
    changes = [r for n, r in fetched.items() if catalog.source(n).kind == "commune_changes"]
    for result in changes:
        late = sorted(y for y in years if y > result.cog)
        if late:
            users = ", ".join(f"{n} (COG {y})" for y in late for n in years[y])
            raise ReconciliationError(
                f"no INSEE commune-change history for COG {late[-1]}: source {result.source} ({result.origin}) "
                f"covers COG years up to {result.cog}, needed by {users}; add a newer release")
    names = []
    for year in sorted(years):
        for what in ("communes", "epci", "ept"):
            name = f"decoupage_{year}_{what}"
            if name not in catalog.sources:
                raise ReconciliationError(
                    f"no decoupage-administratif reference for COG {year} (source {name} is not in the catalog "
                    f"{getattr(catalog, 'path', '')}), needed by {', '.join(years[year])}; add "
                    f"[sources.decoupage_{year}_communes], _epci and _ept (see assets/sources.toml)")
            names.append(name)
    return names


def fetch_sources(settings: Settings, catalog: Catalog, names: list[str], session=None) -> dict[str, FetchResult]:
    """Resolve and fetch ``names`` (a phase's sources, see ``pipeline.steps.sequence.phase_sources``):
    first every non-reference source, then the decoupage-administratif references of the COG
    years those need (whatever years ``names`` listed)."""
    lock = read_lock(settings.lock_path) if settings.lock_path is not None else None
    own = session
    if own is None and settings.mirror_dir is None:
        from . import http  # live mode only

        own = http.make_session()
    try:
        base = [n for n in names if catalog.source(n).kind not in DECOUPAGE_KINDS]
        fetched = {n: fetch_one(settings, catalog, n, own, lock) for n in base}
        for name in needed_references(catalog, fetched):
            fetched[name] = fetch_one(settings, catalog, name, own, lock)
    finally:
        if session is None and own is not None:
            own.close()
    return fetched


def probe_one(settings: Settings, catalog: Catalog, name: str, session=None) -> str:
    """A version string of a source's resolved release (for sensors): the probe of the newest
    release's file (:func:`pipeline.sources.fetch.probe_source`), so a newer release (another file,
    another URL) changes it as a changed file does."""
    from .fetch import probe_source

    resolved, _ = resolve_source(catalog.source(name), settings, catalog, session)
    return probe_source(resolved, settings, session)
