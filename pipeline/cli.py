"""Command line (``python -m pipeline`` / ``territoires-industrie``): build and publish with the core.

``build`` rebuilds a phase only when something changed since its published manifest: an input's
sha256, the plan table's sha256 (phase 2023-2027), the pipeline or contract version, or a missing
published file; ``--force`` rebuilds anyway. ``check-sources`` prints each source's probe version.
``lookup`` answers which territory communes are in, from the published membership table
(:mod:`pipeline.lookup`), never rebuilding.

Exit codes: 0 built and published (or, for ``check-sources``, every probe answered; for
``lookup``, every query found); 3 nothing changed, nothing rebuilt; 4 (``lookup``) a query found
no commune of the table; 2 a failure the user can act on (one line on stderr: the PipelineError
message); 1 an unexpected error (with its traceback); 130 interrupted; 141 output pipe closed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TextIO

from . import CONTRACT_VERSION, __version__, runtime
from .errors import PipelineError, PlanTableError
from .phases import CURRENT_PHASE, PHASES

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_FAILED = 2
EXIT_UNCHANGED = 3
EXIT_NOT_FOUND = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
PHASE_CHOICES = (*PHASES, "all")


class UsageError(PipelineError):
    """A command-line option or TI_* setting that cannot work (e.g. --offline without a mirror)."""


# ---------------------------------------------------------------- progress
class Progress:
    """Plain progress lines on a stream (stderr): ``[  12.3s] message``, and a heartbeat line every
    ``heartbeat`` seconds while a long step runs, so a terminal or a CI log never looks stuck."""

    def __init__(self, stream: TextIO | None = None, heartbeat: float = 10.0):
        self.stream = stream or sys.stderr
        self.heartbeat = heartbeat
        self.start = time.perf_counter()

    def line(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f}s] {message}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def step(self, what: str):
        self.line(f"{what} ...")
        t0 = time.perf_counter()
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.heartbeat):
                self.line(f"{what} ... still running ({time.perf_counter() - t0:.0f} s)")

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
        self.line(f"{what}: done in {time.perf_counter() - t0:.1f} s")


# ---------------------------------------------------------------- settings
def settings_from_args(args: argparse.Namespace, env: dict[str, str] | None = None):
    """Settings from the environment (``env``: instead of it), overridden by --mirror / --output /
    --plans / --lock / --accept-changes; checks --offline."""
    from .settings import Settings

    overrides = {}
    for option, var in (("mirror", "TI_MIRROR_DIR"), ("output", "TI_OUTPUT_DIR"), ("plans", "TI_PLANS_PATH"),
                        ("lock", "TI_LOCK")):
        value = getattr(args, option, None)
        if value:
            overrides[var] = str(value)
    if getattr(args, "accept_changes", False):
        overrides["TI_ACCEPT_CHANGES"] = "1"
    settings = Settings.from_env(env, overrides)   # a bad value: SettingsError, one line, exit 2
    if getattr(args, "offline", False) and settings.mirror_dir is None:
        raise UsageError("--offline needs the mirror folder: set TI_MIRROR_DIR or pass --mirror DIR")
    if settings.mirror_dir is not None and not settings.mirror_dir.is_dir():
        raise UsageError(f"mirror folder not found: {settings.mirror_dir} (TI_MIRROR_DIR / --mirror)")
    if settings.plans_path is not None and not settings.plans_path.is_file():
        raise PlanTableError(f"plan table not found: {settings.plans_path} (TI_PLANS_PATH / --plans)")
    return settings


# ---------------------------------------------------------------- commands
def fetch_for(settings, catalog, phases: list[str], progress: Progress) -> dict:
    """Every source the phases read, fetched once (FetchResult by source name)."""
    from .sources.phase_inputs import phase_sources
    from .sources.resolve import fetch_sources

    names = list(dict.fromkeys(n for phase in phases for n in phase_sources(catalog, phase)))
    mode = "mirror " + str(settings.mirror_dir) if settings.offline else "live URLs"
    with progress.step(f"reading the sources of {', '.join(phases)} ({mode})"):
        fetched = fetch_sources(settings, catalog, names)   # newest releases, pins, or the lock
        for name, result in fetched.items():
            progress.line(f"  {name}: sha256 {result.sha256[:12]}, {result.size:,} bytes, release {result.release}"
                          f", COG {result.cog} ({(result.lock or {}).get('how', 'fixed')})")
    return fetched


def phase_to_build(settings, catalog, phase: str, fetched: dict, force: bool, progress: Progress) -> bool:
    """Check the plan table, repair an interrupted publish, and say whether ``phase`` needs a build."""
    from .sources.phase_inputs import phase_files

    files = phase_files(catalog, phase, fetched)
    if phase == CURRENT_PHASE and settings.plans_path is not None:
        # the plan table checked against the lists' ids before the long build (file, line, column)
        from .sources.plans import read_plans
        from .steps import sequence as core

        read_plans(settings.plans_path, core.listed_territory_ids(catalog, phase, files, settings.limits), settings.limits)
        progress.line(f"{phase}: plan table {settings.plans_path} is valid")
    from .publish.repair import repair_published
    for line in repair_published(settings, phase):
        progress.line(f"{phase}: {line}")
    from .steps.since_published import changes_since_manifest

    reasons = changes_since_manifest(settings, phase, {n: r.sha256 for n, r in files.items()},
                                     {n: r.lock for n, r in files.items() if r.lock})
    if not reasons and not force:
        progress.line(f"{phase}: nothing changed since the published build (inputs, plan table, code version); "
                      "use --force to rebuild")
        return False
    progress.line(f"{phase}: rebuilding: " + ("--force" if not reasons else "; ".join(reasons[:5])
                                             + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")))
    return True


def build_phase(settings, catalog, phase: str, fetched: dict, progress: Progress):
    """Build and check one phase (no publishing): the core's BuildResult."""
    from .steps import sequence as core

    files = core.phase_files(catalog, phase, fetched)
    with progress.step(f"{phase}: building (reconcile, scan, repair and dissolve, attributes, checks)"):
        result = core.build_phase(settings, catalog, phase, files)
    progress.line(f"{phase}: {len(result.territories)} territories; steps: "
                  + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    for r in result.membership.renamed_between_lists:
        progress.line(f"  {r['id_ti']} renamed between the lists: {r['old']!r} ({r['old_list']}) -> {r['new']!r} "
                      f"({r['new_list']}, the most recent: its name is published)")
    for check in result.checks:
        progress.line(f"  check {check.name}: {'passed' if check.passed else 'FAILED'}")
    return result


def publish_one(settings, result, progress: Progress) -> dict:
    """Publish one built phase; its manifest."""
    from .steps import sequence as core

    with progress.step(f"{result.phase}: publishing to {settings.output_dir}"):
        manifest = core.publish_build(result, settings)
    progress.line(f"{result.phase}: published build {manifest['build_id']}")
    for out in manifest.get("outputs", []):
        progress.line(f"  {Path(settings.output_dir) / out['path']}")
    return manifest


def build_and_publish(settings, catalog, phases: list[str], fetched: dict, progress: Progress) -> list[dict]:
    """Build each phase, publishing it on a side thread while the next phase builds; the manifests.

    Publishing (mostly writing files) and the next build (mostly GEOS, which releases the GIL)
    then share the two cores (measured with `python bench/run.py --methods cli,baseline`, see
    bench/README.md). Publishes stay one at a time and in phase order; a failed publish stops the
    run once the build under way ends, as a failed build does at once.
    """
    from concurrent.futures import ThreadPoolExecutor

    manifests: list[dict] = []
    with ThreadPoolExecutor(1) as publisher:
        publishing = None
        for phase in phases:
            result = build_phase(settings, catalog, phase, fetched, progress)
            if publishing is not None:
                manifests.append(publishing.result())
            publishing = publisher.submit(publish_one, settings, result, progress)
        if publishing is not None:
            manifests.append(publishing.result())
    return manifests


def cmd_build(args: argparse.Namespace, progress: Progress) -> int:
    from .sources.catalog import load_catalog

    settings = settings_from_args(args)
    catalog = load_catalog(settings)
    if args.phase != "all" and args.phase not in catalog.phases:
        raise UsageError(f"phase {args.phase!r} is not in the source catalog {settings.catalog_path} "
                         f"(known: {', '.join(catalog.phases)})")
    phases = list(catalog.phases) if args.phase == "all" else [args.phase]
    if settings.lock_path is not None:   # a lock is one phase's: its manifest's
        from .sources.resolve import read_lock_document

        phases = [read_lock_document(settings.lock_path).get("phase") or phases[0]]
        if phases[0] not in catalog.phases:
            raise UsageError(f"the lock {settings.lock_path} is of phase {phases[0]}, not in the source catalog "
                             f"{settings.catalog_path} (known: {', '.join(catalog.phases)})")
    fetched = fetch_for(settings, catalog, phases, progress)
    todo = [p for p in phases if phase_to_build(settings, catalog, p, fetched, args.force, progress)]
    if not todo:
        return EXIT_UNCHANGED
    # tuned for the build only: a run that finds nothing changed needs no geometry stack (its import)
    runtime.tune_process(threads=args.threads)
    build_and_publish(settings, catalog, todo, fetched, progress)
    return EXIT_OK


def cmd_check_sources(args: argparse.Namespace, progress: Progress) -> int:
    from .errors import SourceError
    from .sources.catalog import load_catalog
    from .sources.resolve import probe_one

    settings = settings_from_args(args)
    catalog = load_catalog(settings)
    mode = "mirror" if settings.offline else "live"
    failed = 0
    for name, spec in catalog.sources.items():
        where = spec.mirror_path(settings.mirror_dir) if settings.offline else spec.url
        try:
            version = probe_one(settings, catalog, name)
        except SourceError as err:
            failed += 1
            print(f"{name}\t{mode}\tERROR\t{err}")
            continue
        print(f"{name}\t{mode}\t{version}\t{where}")
    from .steps.since_published import plan_sha256

    plan = plan_sha256(settings)
    print(f"plan_table\tfile\t{'sha256:' + plan if plan else 'none'}\t{settings.plans_path or '(TI_PLANS_PATH unset)'}")
    if failed:
        raise PipelineError(f"{failed} of {len(catalog.sources)} sources could not be probed (see above)")
    return EXIT_OK


def cmd_lookup(args: argparse.Namespace, progress: Progress) -> int:
    """Answer each query from the published table; 4 when one found nothing."""
    from .lookup import MembershipIndex
    from .lookup_io import read_queries, write_answers
    from .settings import Settings

    # not settings_from_args: a lookup reads no source, so a mirror or plan setting does not matter
    settings = Settings.from_env(None, {"TI_OUTPUT_DIR": str(args.output)} if args.output else None)
    if not args.queries and args.file is None:
        raise UsageError("lookup: nothing to look up: give INSEE codes or commune names, or --file FILE")
    if args.column and args.file is None:
        raise UsageError("lookup: --column names a column of --file FILE")
    index = MembershipIndex.open(settings.output_dir, args.phase, table=args.table,
                                 max_bytes=settings.max_table_mb << 20)
    for table in index.tables:
        if not table.verified:
            print(f"warning: {table.path} is not checked against a manifest ({table.note})", file=sys.stderr)
    queries = list(args.queries)
    stream = read_queries(args.file, args.column) if args.file is not None else iter(())
    fmt = "json" if args.json else "csv" if args.csv else "table"
    summary = write_answers(index, (q for source in (queries, stream) for q in source), fmt, sys.stdout)
    if summary.not_found:
        print(f"{summary.not_found} of {summary.queries} {'query' if summary.queries == 1 else 'queries'} found "
              f"no commune in the membership table (in no territory, or no such commune): {', '.join(summary.examples)}"
              + (", ..." if summary.not_found > len(summary.examples) else ""), file=sys.stderr)
        return EXIT_NOT_FOUND
    return EXIT_OK


LOOKUP_EPILOG = """\
A query is an INSEE code (71076, 2A004) or a commune name (accents and case ignored).
Exit codes: 0 every query found; 4 some query found no commune of the table
(printed as "in no territory"); 2 no published table, a table that differs from its
manifest, or an unreadable file of queries (one line on stderr)."""


def _add_lookup(sub) -> None:
    lk = sub.add_parser("lookup", help="which territory communes are in (from the published table)",
                        description="Look up communes by INSEE code or name in the published membership "
                                    "table (never rebuilds).",
                        epilog=LOOKUP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    lk.add_argument("queries", nargs="*", metavar="CODE_OR_NAME", help="INSEE commune codes or commune names")
    lk.add_argument("--file", metavar="FILE", help="more queries, one per line ('-': standard input)")
    lk.add_argument("--column", metavar="NAME", help="read --file as a CSV file with a header and take this column")
    lk.add_argument("--phase", choices=PHASE_CHOICES, default=CURRENT_PHASE, help=f"phase (default {CURRENT_PHASE})")
    lk.add_argument("--output", metavar="DIR", help="the published folder (overrides TI_OUTPUT_DIR)")
    lk.add_argument("--table", metavar="FILE", help="read this membership table (.parquet or .csv) instead")
    fmt = lk.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per query (JSON Lines)")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per commune found")
    lk.set_defaults(run=cmd_lookup, verbose=False, threads=None)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--offline", action="store_true",
                   help="read every source from the mirror folder (TI_MIRROR_DIR or --mirror), never the network")
    p.add_argument("--mirror", metavar="DIR", help="mirror folder (overrides TI_MIRROR_DIR)")
    p.add_argument("--plans", metavar="FILE", help="plan table CSV (overrides TI_PLANS_PATH)")
    p.add_argument("-v", "--verbose", action="store_true", help="also show the pipeline's log messages")
    p.add_argument("--threads", type=int, metavar="N",
                   help="worker threads for the geometry work (default: min(2, CPU count))")


# The settings the top-level --help names (README "Settings" lists them all); their lines come
# from Settings, so the help cannot drift from the variables the code reads.
MAIN_SETTINGS = ("mirror_dir", "output_dir", "raw_dir", "plans_path", "keep_releases")


def top_epilog() -> str:
    """The top-level help's plain-text end: main settings, exit codes, one example."""
    from .settings import describe_setting

    settings = "\n".join(f"  {describe_setting(name)}" for name in MAIN_SETTINGS)
    return f"""\
main settings (environment variables; all of them: README, "Settings"):
{settings}

exit codes:
  {EXIT_OK:<4} built and published (check-sources: every source answered; lookup: every query found)
  {EXIT_UNCHANGED:<4} build: nothing changed since the published build, nothing rebuilt
  {EXIT_NOT_FOUND:<4} lookup: a query found no commune of the membership table
  {EXIT_FAILED:<4} a failure you can act on, in one line on stderr (bad setting, input or check)
  {EXIT_UNEXPECTED:<4} an unexpected error, with its traceback
  {EXIT_INTERRUPTED:<4} interrupted; {EXIT_BROKEN_PIPE} output pipe closed

example (offline, from the shared mirror, every phase):
  TI_MIRROR_DIR=../shared/data territoires-industrie build --offline --phase all"""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="territoires-industrie", epilog=top_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build and publish one geometry per French Territoire d'industrie, with the core "
                    "(no Dagster service needed).")
    top.add_argument("--version", action="version", help="print the package and contract versions and exit",
                     version=f"territoires-industrie {__version__} (contract {CONTRACT_VERSION})")
    sub = top.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    b = sub.add_parser("build", help="build and publish what changed",
                       description="Build and publish the territories of a phase, only if an input changed.")
    _add_common(b)
    b.add_argument("--phase", choices=PHASE_CHOICES, default=CURRENT_PHASE,
                   help=f"phase to build (default {CURRENT_PHASE})")
    b.add_argument("--output", metavar="DIR", help="publish into DIR (overrides TI_OUTPUT_DIR)")
    b.add_argument("--force", action="store_true", help="rebuild and publish even if nothing changed")
    b.add_argument("--lock", metavar="MANIFEST", help="rebuild from exactly the sources locked in this manifest.json "
                   "(its phase; overrides TI_LOCK)")
    b.add_argument("--accept-changes", action="store_true",
                   help="publish even past the change guard (territories or members lost, areas changed)")
    b.set_defaults(run=cmd_build)
    c = sub.add_parser("check-sources", help="print each source's probe version",
                       description="Probe each source cheaply (mirror: sha256; live: HEAD / conditional GET).")
    _add_common(c)
    c.set_defaults(run=cmd_check_sources)
    _add_lookup(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    progress = Progress()
    try:
        return args.run(args, progress)
    except PipelineError as err:
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:                   # e.g. `check-sources | head`: the reader left
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as err:  # noqa: BLE001 - the last resort: show everything
        traceback.print_exc(file=sys.stderr)
        print(f"unexpected error: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return EXIT_UNEXPECTED
