"""The build's metadata written inside each file: the source lock it names."""

from __future__ import annotations

from pipeline import CONTRACT_VERSION
from pipeline.publish.provenance import file_metadata, source_lock

INPUTS = [{"source": "b", "sha256": "2" * 64, "fetched_at": "2024-01-01T00:00:00Z"},
          {"source": "a", "sha256": "1" * 64, "fetched_at": "2024-01-01T00:00:00Z"}]


def test_source_lock_depends_on_the_files_only():
    lock = source_lock(INPUTS)
    assert lock.startswith("sha256:") and len(lock) == 7 + 64
    refetched = [dict(i, fetched_at="2025-06-01T00:00:00Z") for i in reversed(INPUTS)]
    assert source_lock(refetched) == lock   # order and time of fetching do not count
    assert source_lock([dict(INPUTS[0], sha256="3" * 64), INPUTS[1]]) != lock
    assert source_lock({"inputs": INPUTS}) == lock   # a manifest without a lock: its inputs
    assert source_lock({"inputs": INPUTS, "lock": "lock-v1"}) == "lock-v1"


def test_file_metadata_names_build_phase_and_contract():
    meta = file_metadata("b1", "2018-2022", INPUTS)
    assert meta == {"build_id": "b1", "phase": "2018-2022", "contract_version": CONTRACT_VERSION,
                    "pipeline_version": meta["pipeline_version"], "source_lock": source_lock(INPUTS)}
