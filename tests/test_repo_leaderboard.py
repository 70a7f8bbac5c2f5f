"""The committed leaderboard is backed by valid records and is up to date."""

from __future__ import annotations

from pathlib import Path

from medfm import leaderboard
from medfm.records import iter_records

ROOT = Path(__file__).resolve().parents[1]


def test_committed_records_verify_and_leaderboard_is_current():
    records = []
    for path, record, error in iter_records(ROOT / "results", verify=True):
        assert error is None, error
        records.append(record)
    assert records, "results/ holds the default run's records"
    assert not leaderboard.is_stale(ROOT / "leaderboard.md", records), "run `medfm leaderboard` and commit"
    text = (ROOT / "leaderboard.md").read_text()
    for record in records:
        assert leaderboard.escape(record["backbone"]["name"]) in text
