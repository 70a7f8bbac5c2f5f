"""Few-shot figures from real few-shot records, through the CLI and the library function."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_registry
from matplotlib.image import imread
from protocol_support import feature_task, run_config

from medfm.cli import main
from medfm.errors import UserError
from medfm.plots import few_shot_series, plot_few_shot
from medfm.records import iter_records
from medfm.runner import Runner

SHOTS = [1, 2, 4, 8]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Few-shot records of two classifiers on one binary feature set, plus a kNN record (no curve)."""
    tmp = tmp_path_factory.mktemp("plots")
    data = feature_task("fewshot-plot", "binary", 2, margin=1.5)
    cfg = run_config(
        tmp,
        data,
        ["few_shot_prototype", "few_shot_knn", "knn"],
        bootstrap=50,
        options={"few_shot_prototype": {"shots": SHOTS}, "few_shot_knn": {"shots": SHOTS}},
    )
    outcomes = Runner(build_registry(data), cfg).run()
    assert [o.status for o in outcomes] == ["ok"] * 3, [o.message for o in outcomes]
    return tmp / "results"


def _records(results):
    return [r for _, r, _ in iter_records(results)]


def test_series_are_the_records_curves(results):
    records = _records(results)
    series = few_shot_series(records)
    assert [s.protocol for s in series] == ["few_shot_knn", "few_shot_prototype"]  # kNN has no curve
    for s in series:
        record = next(r for r in records if r["protocol"]["name"] == s.protocol)
        curve = record["extra"]["curve"]
        assert s.metric == "auroc" == curve["metric"]
        assert s.shots == SHOTS
        assert s.mean == curve["mean"]["auroc"] and s.std == curve["std"]["auroc"]
        per_episode = np.array(curve["per_episode"]["auroc"])  # (shots, episodes)
        np.testing.assert_allclose(s.mean, per_episode.mean(1))
    for s in few_shot_series(records, metric="accuracy"):
        record = next(r for r in records if r["protocol"]["name"] == s.protocol)
        assert s.metric == "accuracy" and s.mean == record["extra"]["curve"]["mean"]["accuracy"]
    assert few_shot_series(records, backbone="nothing*") == []


def test_cli_writes_a_figure(results, tmp_path, capsys):
    out = tmp_path / "fig" / "few_shot.png"
    out.parent.mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["plot", "few-shot", "--results", str(results), "--out", str(out), "--metric", "balanced_accuracy"])
    assert exc.value.code == 0
    image = imread(out)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert "2 curves, 1 data set(s)" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["few_shot.png"]  # written atomically, no temp file left


def test_svg_output_and_bad_suffix(results, tmp_path):
    series = few_shot_series(_records(results))
    svg = plot_few_shot(series, tmp_path / "f.svg", title="BreastMNIST")
    assert svg.read_text().lstrip().startswith("<?xml") and "few_shot_knn" in svg.read_text()
    with pytest.raises(UserError, match="png, .svg or .pdf"):
        plot_few_shot(series, tmp_path / "f.jpg")


def test_nothing_to_plot_is_one_clear_error(results, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["plot", "few-shot", "--results", str(results), "--dataset", "no-such-*", "-o", str(tmp_path / "x.png")])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["plot", "few-shot", "--results", str(tmp_path / "missing"), "-o", str(tmp_path / "x.png")])
    assert exc.value.code == 2
    assert not (tmp_path / "x.png").exists()


def test_a_misspelled_metric_is_named_with_the_choices(results, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plot", "few-shot", "--results", str(results), "--metric", "aucroc", "-o", str(tmp_path / "x.png")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no metric 'aucroc'" in err and "auroc" in err and "balanced_accuracy" in err
