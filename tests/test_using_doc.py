"""Every recipe of docs/USING.md runs, as written, against a real published build: so the guide never rots.

The fenced blocks are taken in order: ``bash`` (run by ``bash -e -o pipefail``), ``python`` (run by
this interpreter) and ``sql`` (run by DuckDB, each statement must return rows) are recipes, run from
a folder holding the published ``data_out/``, in an environment without ``TI_*`` variables (as a
user's); a ``text`` block right after a recipe is its expected standard output (trailing spaces
ignored). One test per recipe, named by its line in the guide.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "USING.md"
RECIPE_LANGUAGES = ("bash", "python", "sql")
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def recipes(text: str) -> list[tuple[int, str, str, str | None]]:
    """(line, language, code, expected output or None) of every recipe of the guide."""
    blocks = [(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2), m.end(), m.start())
              for m in _BLOCK.finditer(text)]
    found = []
    for i, (line, lang, code, end, _) in enumerate(blocks):
        if lang not in RECIPE_LANGUAGES:
            assert lang == "text", f"docs/USING.md:{line}: a ```{lang} block is neither a recipe nor an output"
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        expected = following[2] if following and following[1] == "text" and not text[end:following[4]].strip() else None
        found.append((line, lang, code, expected))
    return found


RECIPES = recipes(GUIDE.read_text(encoding="utf-8"))


def test_the_guide_has_recipes_of_every_kind_and_every_output_follows_a_recipe():
    assert {lang for _, lang, _, _ in RECIPES} == set(RECIPE_LANGUAGES)
    text = GUIDE.read_text(encoding="utf-8")
    outputs = sum(1 for m in _BLOCK.finditer(text) if m.group(1) == "text")
    assert outputs == sum(1 for *_, expected in RECIPES if expected is not None)


@pytest.fixture(scope="module")
def workdir(published_out, tmp_path_factory) -> Path:
    """A user's folder: the published ``data_out/`` (a link to the session's build) and nothing else."""
    work = tmp_path_factory.mktemp("user")
    (work / "data_out").symlink_to(published_out, target_is_directory=True)
    return work


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TI_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"   # the installed commands
    return env


def _run_sql(code: str, workdir: Path, monkeypatch) -> str:
    import duckdb

    monkeypatch.chdir(workdir)
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    out = []
    for statement in (s for s in code.split(";") if s.strip()):
        rows = con.sql(statement).fetchall()
        assert rows, f"no row from: {statement.strip()[:80]}"
        out += ["\t".join(map(str, row)) for row in rows]
    return "\n".join(out)


@pytest.mark.parametrize(("line", "lang", "code", "expected"), RECIPES,
                         ids=[f"USING.md:{line}:{lang}" for line, lang, *_ in RECIPES])
def test_recipe(line, lang, code, expected, workdir, monkeypatch):
    if lang == "sql":
        stdout = _run_sql(code, workdir, monkeypatch)
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        done = subprocess.run(command, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"docs/USING.md:{line}: exit {done.returncode}\n{done.stderr[-3000:]}"
        stdout = done.stdout
    if expected is not None:
        assert [s.rstrip() for s in stdout.strip("\n").splitlines()] == \
            [s.rstrip() for s in expected.strip("\n").splitlines()], f"docs/USING.md:{line}: output differs"


def test_the_readme_lookup_commands_run(workdir):
    """The commands of the README's "Using the data" section, verbatim."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Using the data"):]
    section = section[:section.index("\n## ", 1)]
    block = next(m.group(2) for m in _BLOCK.finditer(section) if m.group(1) == "bash")
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=workdir, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Grand Chalon" in done.stdout and "Nord Loiret" in done.stdout
    answers = (workdir / "answers.csv").read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[:4] for line in answers[1:]] == [["71076", "true", "insee_com", "71076"],
                                                              ["2A004", "true", "insee_com", "2A004"]]


def test_the_site_recipe_copies_every_file_the_manifest_lists(workdir):
    """The "map on your own site" recipe (run above): the copy holds every published file of the
    phase, the web map's among them, and serves its page; the tiles are answered by byte ranges by
    a server that does so, whole by ``python -m http.server`` (the page then draws the light
    GeoJSON: tests/test_webmap_browser.py opens it in a browser)."""
    import urllib.request

    import browser

    site = workdir / "site" / "territoires"
    if not site.is_dir():
        pytest.skip("the site recipe has not run (run the whole module)")
    manifest = json.loads((site / "manifest.json").read_text(encoding="utf-8"))
    missing = [o["phase_path"] for o in manifest["outputs"] if not (site / Path(o["phase_path"]).name).is_file()]
    assert missing == []
    assert {"web_page", "web_script", "web_style", "web_data", "web_search"} <= {o["name"] for o in manifest["outputs"]}
    for server, status in ((browser.range_server, 206), (browser.python_http_server, 200)):
        with server(site) as url:
            with urllib.request.urlopen(url) as page:
                assert "territoires-industrie-map.js" in page.read().decode("utf-8")
            ranged = urllib.request.Request(url + "territoires-industrie.pmtiles", headers={"Range": "bytes=0-126"})
            with urllib.request.urlopen(ranged) as answer:
                assert answer.status == status
