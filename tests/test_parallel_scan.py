"""A large results folder recomputes its metrics in worker processes first: the same verdicts
and numbers as a serial scan, with every recomputation cached for the scan proper."""

from __future__ import annotations

from pathlib import Path

from record_support import binary_predictions, write_submission

import medfm.verification as verification
from medfm.api import DatasetFacts, KnownSpecs, scan_results


def _known() -> KnownSpecs:
    return KnownSpecs(
        lambda name: DatasetFacts("binary", "auroc", 2, None, "medfm", "1") if name.startswith("par/") else None,
        lambda kind, name: ("medfm", "1") if name.startswith(("par/", "par_")) else None,
    )


def _folder(root: Path) -> None:
    for b in range(4):
        for p in range(3):
            preds = binary_predictions(n=60, strength=0.1 + 0.1 * b, seed=10 * b + p, ids=[f"c{i}" for i in range(60)])
            write_submission(root, preds, backbone=f"par/backbone{b}", dataset="par/set", dataset_revision="1",
                             protocol=f"par_protocol{p}", protocol_version="1", classes=("no", "yes"))  # fmt: skip
    # and one forged record, which the parallel pass must not let through
    forged = next(root.rglob("*.seed0.json"))
    forged.write_text(forged.read_text().replace('"value": 0.', '"value": 0.0', 1))


def _verdicts(scan) -> dict:
    return {c.relpath: (c.valid, c.problem, c.verified_record["metrics"] if c.valid else None) for c in scan.entries}


def test_a_parallel_scan_gives_the_serial_verdicts(tmp_path, monkeypatch):
    _folder(tmp_path / "results")
    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "serial-cache"))
    monkeypatch.setenv("MEDFM_SCAN_PROCESSES", "1")
    serial = scan_results(tmp_path / "results", _known())

    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "parallel-cache"))
    monkeypatch.setenv("MEDFM_SCAN_PROCESSES", "2")
    monkeypatch.setattr(verification, "PARALLEL_SCAN_MIN", 2)
    computed = []
    real = verification._cached_recompute
    monkeypatch.setattr(
        verification,
        "_cached_recompute",
        lambda key, compute, use: real(key, lambda: computed.append(key) or compute(), use),
    )
    parallel = scan_results(tmp_path / "results", _known())
    assert _verdicts(parallel) == _verdicts(serial)
    assert sum(not c.valid for c in parallel.entries) == 1 and len(parallel.entries) == 12
    assert computed == []  # every recomputation in this process was a cache hit: the workers did them
    assert len(list((tmp_path / "parallel-cache" / "verified").rglob("*.json"))) >= 12


def test_scans_stay_serial_where_forking_is_unsafe_or_useless(monkeypatch):
    import os
    import sys

    import torch  # noqa: F401  (a process that has torch loaded never forks scan workers)

    monkeypatch.delenv("MEDFM_SCAN_PROCESSES", raising=False)
    assert verification.scan_processes(10) == 1  # too few records to pay for processes
    assert verification.scan_processes(100_000) == 1
    monkeypatch.delitem(sys.modules, "torch")
    assert verification.scan_processes(100_000) == min(16, len(os.sched_getaffinity(0)))
