"""The committed leaderboard: every record verifies, the file is current, real data leads, and the
paired comparison of two real backbones on BreastMNIST says how sure it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfm import leaderboard
from medfm.registry import load_registry
from medfm.standings import build_standings, compare_cells, comparisons_between, load_policy
from medfm.verification import KnownSpecs, scan_results

ROOT = Path(__file__).resolve().parents[1]
BREASTMNIST = "medmnist/breastmnist"
PRETRAINED_VS_RANDOM = {
    "timm/vit_small_patch14_dinov2@224": "random/vit_small_patch14_dinov2@224",
    "torchvision/mobilenet_v2": "random/mobilenetv2_100",
    "efficientnet_lite0.in1k": "random/tf_efficientnet_lite0",
}
PROTOCOLS = {"knn", "linear_probe", "logistic_regression", "few_shot_prototype", "few_shot_knn", "few_shot_linear"}


@pytest.fixture(scope="module")
def committed():
    known = KnownSpecs.from_registry(load_registry())
    scan = scan_results(ROOT / "results", known)
    return scan, build_standings(scan, known, load_policy(ROOT))


def test_committed_records_verify_and_leaderboard_is_current(committed):
    scan, standings = committed
    assert scan.rejected == [], [c.problem for c in scan.rejected]
    assert scan.valid, "results/ holds the committed records"
    assert not leaderboard.is_stale(ROOT / "leaderboard.md", standings), "run `medfm leaderboard` and commit"


def test_real_breastmnist_results_lead_and_the_synthetic_set_is_the_smoke_test_below(committed):
    _, standings = committed
    text = (ROOT / "leaderboard.md").read_text()
    assert (
        text.index(f"`{BREASTMNIST}`")
        < text.index("## Smoke test: synthetic data")
        < text.index("`synthetic/cxr-nodules`")
    )
    real = standings.section("ranked", synthetic=False)
    assert {t.protocol for t in real} == PROTOCOLS
    for table in real:
        (column,) = table.columns
        assert column.dataset == BREASTMNIST and column.published is True and column.n_cases == 156
        rows = {r.backbone: r for r in [*table.unranked, *(r for block in table.blocks for r in block.rows)]}
        assert set(rows) == set(PRETRAINED_VS_RANDOM) | set(PRETRAINED_VS_RANDOM.values()), table.protocol
        for row in rows.values():
            cell = row.cells[column.key]
            assert sorted(c.record["submission"]["seed"] for c in cell.rankable + cell.shown) == [0, 1, 2]
        ranked_names = {r.backbone for block in table.blocks for r in block.rows}
        assert len(ranked_names) >= 3, table.protocol

        def mean(name: str, rows=rows, column=column) -> float:
            cell = rows[name].cells[column.key]
            return float(np.mean([c.record["metrics"]["auroc"]["value"] for c in cell.rankable + cell.shown]))

        margin = 0.05 if table.protocol in ("knn", "linear_probe", "logistic_regression") else 0.0  # few-shot: n <= 16
        assert mean("timm/vit_small_patch14_dinov2@224") > mean("random/vit_small_patch14_dinov2@224") + margin


def test_paired_comparison_of_two_real_backbones_on_breastmnist(committed):
    _, standings = committed
    items = [
        it
        for it in comparisons_between(standings, "timm/vit_small_patch14_dinov2@224", "torchvision/mobilenet_v2")
        if it["column"].dataset == BREASTMNIST
    ]
    assert len({it["table"].protocol for it in items}) >= 4  # cells where one side is flagged are not compared
    results = compare_cells(items, standings.policy)
    for r in results:
        res = r["result"]
        assert res.ci_low <= res.difference <= res.ci_high and 0 <= res.p <= res.p_holm <= 1
        assert res.difference == pytest.approx(r["value_a"] - r["value_b"])
