"""Admin reference reader (pipeline.sources.readers.read_admin): the fast JSON path and the plain one agree.

read_admin decodes only the fields it keeps (msgspec); any file that path does not take as is goes
through the generic JSON path. Both must give the same frames and the same errors.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import InputFormatError
from pipeline.sources import readers as sources
from pipeline.sources.readers import read_admin

COMMUNES = [
    {"code": "01001", "nom": "L'Abergement-Clémenciat", "type": "commune-actuelle", "departement": "01",
     "region": "84", "siren": "210100012", "population": 859, "zone": "metro", "codesPostaux": ["01400"]},
    {"code": "01002", "nom": "L'Abergement-de-Varey", "type": "commune-actuelle", "departement": "01",
     "region": "84", "siren": "210100020", "population": None, "zone": "metro"},
    {"code": "01015", "nom": "Arbignieu", "type": "commune-deleguee", "chefLieu": "01340"},
    {"nom": "Lyon 1er", "type": "arrondissement-municipal"},          # no code: not a commune-actuelle
    {"code": "2A004", "nom": "Ajaccio", "departement": "2A", "region": "94", "population": 71361.0},  # no type
    {"code": "97608", "nom": "Dzaoudzi", "type": "commune-actuelle", "zone": "drom"},   # no siren, population
]
EPCI = [{"code": "200000172", "nom": "CC Un", "type": "CC", "populationTotale": 1,
         "membres": [{"code": "01001", "siren": "210100012"}, {"code": "01002"}]},
        {"code": "200000173", "nom": "CC Vide", "type": "CC", "membres": []}]
EPT = [{"code": "200057867", "nom": "Plaine Commune", "membres": [{"code": "93001"}]}]


def files(tmp_path: Path, communes=COMMUNES, epci=EPCI, ept=EPT, encoding="utf-8") -> list[Path]:
    paths = []
    for name, items in (("communes", communes), ("epci", epci), ("ept", ept)):
        path = tmp_path / f"{name}.json.gz"
        data = items if isinstance(items, bytes) else json.dumps(items, ensure_ascii=False).encode(encoding)
        path.write_bytes(gzip.compress(data))
        paths.append(path)
    return paths


def read_both(monkeypatch, paths):
    fast = read_admin(2024, *paths)
    with monkeypatch.context() as m:
        m.setattr(sources, "_decode_fast", lambda raw, decoder: None)   # the generic path only
        plain = read_admin(2024, *paths)
    pd.testing.assert_frame_equal(fast.communes, plain.communes, check_exact=True)
    pd.testing.assert_frame_equal(fast.members, plain.members, check_exact=True)
    return fast


def test_fast_and_generic_json_paths_give_the_same_frames(tmp_path, monkeypatch):
    admin = read_both(monkeypatch, files(tmp_path))
    com = admin.communes
    assert com["code"].tolist() == ["01001", "01002", "2A004", "97608"]
    assert com["nom"].iloc[0] == "L'Abergement-Clémenciat"
    assert com["population"].tolist() == [859, pd.NA, 71361, pd.NA] and str(com["population"].dtype) == "Int64"
    assert com["siren"].isna().tolist() == [False, False, True, True]
    assert admin.members.values.tolist() == [["200000172", "CC Un", "CC", "01001"],
                                             ["200000172", "CC Un", "CC", "01002"],
                                             ["200057867", "Plaine Commune", "EPT", "93001"]]
    assert admin.codes == {"01001", "01002", "2A004", "97608"}


def test_numbers_read_as_the_generic_path_reads_them(tmp_path, monkeypatch):
    """Codes given as numbers, and an integer beyond 64 bits (orjson reads it as a float)."""
    communes = [*COMMUNES[:2], {"code": 1001, "population": 12}, {"code": 10 ** 30, "population": 3}]
    admin = read_both(monkeypatch, files(tmp_path, communes=communes,
                                         epci=[{"code": 200000172, "membres": [{"code": 1001}]}]))
    assert admin.communes["code"].tolist()[2:] == ["1001", "1e+30"]
    assert admin.members["siren_groupement"].tolist() == ["200000172", "200057867"]


def test_windows_1252_json_is_still_decoded(tmp_path, monkeypatch):
    admin = read_both(monkeypatch, files(tmp_path, encoding="cp1252"))
    assert admin.communes["nom"].iloc[0] == "L'Abergement-Clémenciat"


@pytest.mark.parametrize("which, items, message", [
    ("communes", [{"nom": "x", "type": "commune-actuelle"}], "communes.json.gz: commune without 'code' field"),
    ("communes", [{"code": "01015", "type": "commune-deleguee"}],
     "communes.json.gz: no commune of type commune-actuelle"),
    ("communes", b'{"code": "01001"}', "communes.json.gz: expected a JSON array of objects"),
    ("communes", b'[{"code": "01001"}', "communes.json.gz:1: invalid JSON"),
    ("epci", [{"code": "200000172", "nom": "CC"}], "epci.json.gz: groupement 200000172 without 'membres' field"),
    ("ept", [{"code": "200057867", "membres": [{"nom": "x"}]}],
     "ept.json.gz: groupement 200057867 without 'code' field"),
])
def test_errors_name_the_file_and_the_field(tmp_path, which, items, message):
    paths = files(tmp_path, **{which: items})
    with pytest.raises(InputFormatError) as err:
        read_admin(2024, *paths)
    assert str(err.value).startswith(f"{tmp_path}/{message}")
