"""Code versions derived from the code a step imports, without Dagster.

A step's code version is one sha256 (:func:`code_version`) over the files its code can run: the
static import closure of its root modules within the ``pipeline`` package (every ``import``
statement of the files, those inside functions included, so a lazily imported module counts; a
package that imports its modules by name on first use, as ``pipeline.publish`` does, imports all
of them), and the files of the static data folder (``assets/``,
:data:`~pipeline.settings.ASSETS_DIR`) that those modules name as ``ASSETS_DIR / "..."`` (a part
built at run time: its constant folder).

Files are hashed byte for byte: any change counts, a comment too (a needless rebuild is cheap
and safe; a real change missed is not).

The CLI and the core write :func:`build_code_version` (the closure of the step sequence,
:mod:`pipeline.steps.sequence`) in each manifest and compare it to decide whether a phase needs
a rebuild; the Dagster assets' ``code_version`` is :func:`code_version` of the core modules their
function uses (:mod:`pipeline.defs.automation`), so editing a module marks only the assets whose
step imports it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .settings import ASSETS_DIR

PACKAGE = __name__.partition(".")[0]
PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_ROOT = f"{PACKAGE}.steps.sequence"   # the core build: fetch, build_phase, publish_build


@dataclass(frozen=True)
class Package:
    """Where the package's modules and its static data folder are (a scratch copy in the tests)."""

    modules: Path = PACKAGE_DIR
    assets: Path = ASSETS_DIR

    def modules_under(self, package: str) -> list[str]:
        """Every module of ``package`` (``pipeline.x``), its subpackages' included."""
        return [m for m in _index(self.modules) if m.startswith(package + ".")]

    def file_of(self, module: str) -> Path | None:
        """The file of ``module`` (``pipeline.x.y``) in this package, or None (not one of ours)."""
        return _index(self.modules).get(module)


@lru_cache(maxsize=8)
def _index(modules: Path) -> dict[str, Path]:
    """Module name -> file, for every file of the package (listed once per process)."""
    index = {}
    for path in sorted(modules.rglob("*.py")):
        if "__pycache__" not in path.parts:
            name = ".".join([PACKAGE, *path.relative_to(modules).with_suffix("").parts])
            index[name.removesuffix(".__init__")] = path
    return index


INSTALLED = Package()   # this package, as installed


@dataclass(frozen=True)
class _Parsed:
    imports: frozenset[str]      # the package's modules this one imports (anywhere in the file)
    assets: frozenset[str]       # the static data paths it names ("" = the whole folder)
    digest: str                  # sha256 of its bytes


# ``ASSETS_DIR / "a" / "b"``: the constant part of a path in the static data folder
_ASSET_PATH = re.compile(r'\bASSETS_DIR((?:\s*/\s*"[^"]*")*)(\s*/)?')


# An import statement at the start of a line (in a function too): parsing every file with ``ast``
# would cost half a second of each code location load; the tests check the result against the
# standard library's modulefinder.
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(?P<base>\.*[\w.]*)[ \t]+import[ \t]+(?P<names>\([^)]*\)|[^\n#;]+)"
                     r"|import[ \t]+(?P<modules>[^\n#;]+))", re.MULTILINE)


def _names(text: str) -> list[str]:
    """``a as b, c`` or ``(a,\n c)`` -> [a, c]."""
    return [part.split()[0] for part in text.strip("()\n ").replace("\n", " ").split(",") if part.strip()]


@lru_cache(maxsize=1024)
def _parse(path: Path, module: str, is_package: bool, stamp: tuple[int, int]) -> _Parsed:
    """One file's imports, data paths and digest (cached on its mtime and size)."""
    data = path.read_bytes()
    text = data.decode("utf-8")
    anchor = module if is_package else module.rpartition(".")[0]
    imports: set[str] = set()
    for match in _IMPORT.finditer(text):
        if match.group("modules"):
            imports.update(_names(match.group("modules")))
            continue
        base = importlib.util.resolve_name(match.group("base"), anchor)
        imports.add(base)
        # ``from pkg import name``: name may be a submodule; kept if it is one (module_closure)
        imports.update(f"{base}.{name}" for name in _names(match.group("names")))
    if "import_module(" in text:
        imports |= _dynamic_imports(ast.parse(data), anchor)
    assets = set()
    for found in _ASSET_PATH.finditer(text):
        constant = re.findall(r'"([^"]*)"', found.group(1))
        if constant or found.group(2):   # a bare name (its import, its definition) names no file
            assets.add("/".join(constant))   # a name built at run time: its constant folder
    ours = frozenset(m for m in imports if m.partition(".")[0] == PACKAGE)
    return _Parsed(ours, frozenset(assets), hashlib.sha256(data).hexdigest())


def _dynamic_imports(tree: ast.Module, anchor: str) -> set[str]:
    """``importlib.import_module`` calls: one relative to the package (``import_module(f".{name}",
    __name__)``, as a PEP 562 ``__getattr__`` does) stands for every module of the package
    (``anchor.*``); an absolute one for the string constants of the file naming one of ours."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr",
             getattr(n.func, "id", None)) == "import_module" and n.args]
    found: set[str] = set()
    for call in calls:
        first = call.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            found.add(importlib.util.resolve_name(first.value, anchor) if first.value.startswith(".") else first.value)
        elif len(call.args) > 1 or call.keywords:
            found.add(f"{anchor}.*")
        else:
            found |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                      and n.value.partition(".")[0] == PACKAGE}
    return found


def _parsed(package: Package, module: str) -> _Parsed | None:
    path = package.file_of(module)
    if path is None:
        return None
    stat = path.stat()
    return _parse(path, module, path.name == "__init__.py", (stat.st_mtime_ns, stat.st_size))


def module_closure(roots: Iterable[str], package: Package = INSTALLED) -> list[str]:
    """The package's modules that ``roots`` import, transitively, with the packages they live in."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        parsed = _parsed(package, module)
        if parsed is None:
            continue
        seen.add(module)
        parents = [module.rsplit(".", n)[0] for n in range(1, module.count(".") + 1)]
        todo += [m for m in (*parsed.imports, *parents) if m not in seen and not m.endswith(".*")]
        for every in (m for m in parsed.imports if m.endswith(".*")):   # a package's dynamic imports
            todo += package.modules_under(every.removesuffix(".*"))
    return sorted(seen)


def _asset_files(package: Package, names: Iterable[str]) -> list[Path]:
    files: set[Path] = set()
    for name in names:
        base = package.assets / name if name else package.assets
        if base.is_file():
            files.add(base)
        elif base.is_dir():
            files.update(p for p in base.rglob("*") if p.is_file() and p.suffix != ".pyc"
                         and "__pycache__" not in p.parts)
    return sorted(files)


def code_version(roots: Iterable[str], package: Package = INSTALLED, extra: str = "") -> str:
    """sha256 (hex) over the files of ``roots``' import closure and the data files they name.

    ``extra``: text of the caller's own that belongs to the version (a Dagster asset's function).
    The one code hash of the project: the CLI's manifests and Dagster's ``code_version`` use it.
    """
    digest = hashlib.sha256(extra.encode())
    named: set[str] = set()
    for module in module_closure(roots, package):
        parsed = _parsed(package, module)
        assert parsed is not None   # module_closure keeps only the package's files
        digest.update(f"\n{module} {parsed.digest}".encode())
        named |= parsed.assets
    for path in _asset_files(package, named):
        digest.update(f"\nassets/{path.relative_to(package.assets).as_posix()} ".encode())
        digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode())
    return digest.hexdigest()


def build_code_version(package: Package = INSTALLED) -> str:
    """The code version of a phase's build (fetch, build, publish), written in its manifest."""
    return code_version([BUILD_ROOT], package)
