"""The documented notebook example runs as written, and the Python API returns real records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medfm.api import records_frame, run_benchmark, verified_records
from medfm.errors import UserError

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def _example(name: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    chosen = [b for b in blocks if b.startswith(f"# docs-example: {name}\n")]
    assert len(chosen) == 1, f"docs/python-api.md has no single `{name}` example"
    return chosen[0]


def test_the_notebook_example_in_the_docs_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_example("notebook"), str(DOC), "exec"), namespace)
    frame = namespace["frame"]
    assert len(frame) == 4 and set(frame["status"]) == {"ok"}
    assert frame["value"].between(0, 1).all() and (frame["ci_low"] <= frame["value"]).all()
    assert frame["n_test"].nunique() == 1 and frame["n_test"].iloc[0] == namespace["records"][0]["test_set"]["n"] > 0
    assert namespace["grid"].shape == (2, 2)
    assert "4 records; ['ok']" in capsys.readouterr().out


def test_records_frame_matches_the_records_and_reads_a_folder_verified(tmp_path):
    records = run_benchmark(
        ["random/test_vit@64"], ["synthetic/cxr-nodules"], ["knn"],
        options={"dataset": {"synthetic/cxr-nodules": {"patients": 40, "size": 64}}},
        results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"),
        leaderboard=str(tmp_path / "lb.md"), device="cpu",
    )  # fmt: skip
    (record,) = records
    frame = records_frame(records)
    auroc = record["metrics"]["auroc"]
    row = frame.iloc[0]
    assert (row.backbone, row.protocol, row.metric) == ("random/test_vit@64", "knn", "auroc")
    assert (row.value, row.ci_low, row.ci_high) == (auroc["value"], auroc["ci_low"], auroc["ci_high"])
    assert row["metric:accuracy"] == record["metrics"]["accuracy"]["value"]
    # a forged copy in the folder is not read back
    forged = next((tmp_path / "results").rglob("*.seed0.json"))
    text = forged.read_text()
    forged.write_text(text.replace(f'"value": {auroc["value"]}', '"value": 0.999', 1))
    assert verified_records(tmp_path / "results") == []
    assert records_frame(tmp_path / "results").empty


def test_mistakes_raise_before_anything_runs(tmp_path):
    with pytest.raises(UserError, match="did you mean 'knn'"):
        run_benchmark(["random/test_vit@64"], ["synthetic/cxr-nodules"], ["knnn"], results_dir=str(tmp_path / "r"))
    with pytest.raises(UserError, match="the kinds are"):
        run_benchmark(["random/test_vit@64"], ["synthetic/cxr-nodules"], ["knn"], options={"model": {}})
    assert not (tmp_path / "r").exists()
