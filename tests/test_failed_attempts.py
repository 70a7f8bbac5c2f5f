"""A failed attempt never destroys a result already computed; bad values are named errors."""

from __future__ import annotations

import json

import pytest
from protocol_support import feature_task, run_config

from medfm.errors import UserError
from medfm.records import iter_records, load_record
from medfm.runner import Runner
from medfm_plugins.protocols import linear_probe


def _run(registry_factory, tmp_path, data, options):
    cfg = run_config(tmp_path, data, ["knn", "linear_probe"], bootstrap=50, options=options)
    return Runner(registry_factory(data), cfg).run()


def _fail_at_run_time(monkeypatch):
    """A failure no check before the run can see (the probe runs out of memory mid-grid)."""

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(linear_probe, "train_grid", out_of_memory)


def test_a_failing_rerun_keeps_the_earlier_record_and_its_predictions(registry_factory, tmp_path, monkeypatch):
    data = feature_task("keep", "binary", 2, margin=3.0)
    good = _run(registry_factory, tmp_path, data, {"linear_probe": {"epochs": 5}})
    assert [o.status for o in good] == ["ok", "ok"]
    record_path = good[1].record_path
    before = load_record(record_path, verify=True)
    predictions = record_path.with_name("tester.seed0.predictions.npz").read_bytes()

    # a bad value is refused before anything runs: nothing is touched, no failure note is written
    with pytest.raises(UserError, match="option 'epochs' must be at least 1, not 0"):
        _run(registry_factory, tmp_path, data, {"linear_probe": {"epochs": 0}})
    assert load_record(record_path, verify=True) == before
    assert not record_path.with_name("tester.seed0.failed.json").exists()

    with monkeypatch.context() as patch:
        _fail_at_run_time(patch)
        bad = _run(registry_factory, tmp_path, data, {"linear_probe": {"epochs": 7}})
    assert [o.status for o in bad] == ["cached", "error"]
    assert "CUDA out of memory" in bad[1].message and "earlier result in tester.seed0.json is kept" in bad[1].message
    assert load_record(record_path, verify=True) == before  # untouched, still verifies
    assert record_path.with_name("tester.seed0.predictions.npz").read_bytes() == predictions
    failed = json.loads(record_path.with_name("tester.seed0.failed.json").read_text())
    assert failed["status"] == "error" and failed["config"]["protocol"]["options"]["epochs"] == 7
    records = [r for _, r, _ in iter_records(tmp_path / "results")]
    assert sorted(r["protocol"]["name"] for r in records) == ["knn", "linear_probe"]  # the note is not a record
    board = (tmp_path / "leaderboard.md").read_text()
    assert f"{before['metrics']['auroc']['value']:.3f}" in board  # still shown (unranked: 50 resamples)

    fixed = _run(registry_factory, tmp_path, data, {"linear_probe": {"epochs": 6}})
    assert [o.status for o in fixed] == ["cached", "ok"]
    assert not record_path.with_name("tester.seed0.failed.json").exists()


def test_without_an_earlier_result_the_failure_is_the_record(registry_factory, tmp_path, monkeypatch):
    data = feature_task("first", "binary", 2, margin=3.0)
    _fail_at_run_time(monkeypatch)
    outcomes = _run(registry_factory, tmp_path, data, {"linear_probe": {"epochs": 5}})
    assert [o.status for o in outcomes] == ["ok", "error"]
    record = json.loads(outcomes[1].record_path.read_text())
    assert record["status"] == "error" and "CUDA out of memory" in record["error"]["message"]


@pytest.mark.parametrize(
    "options,needle",
    [
        ({"shots": [0, 1]}, "protocol 'few_shot_prototype': option 'shots' must be at least 1, not 0"),
        ({"shots": []}, "protocol 'few_shot_prototype': option 'shots' is an empty list"),
    ],
)
def test_few_shot_rejects_zero_shots_before_anything_runs(registry_factory, tmp_path, options, needle):
    data = feature_task("fs0", "binary", 2, margin=3.0)
    cfg = run_config(tmp_path, data, ["few_shot_prototype"], bootstrap=50, options={"few_shot_prototype": options})
    with pytest.raises(UserError) as caught:
        Runner(registry_factory(data), cfg).run()
    assert needle in str(caught.value)
    assert not (tmp_path / "results").exists()


def test_weights_that_do_not_fit_are_one_short_line(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    from medfm import UserError
    from medfm.registry import load_registry

    save_file({k: v.contiguous() for k, v in resnet18().state_dict().items()}, str(tmp_path / "resnet.safetensors"))
    spec = load_registry().get("backbone", "torchvision/mobilenet_v2")
    with pytest.raises(UserError) as info:
        spec.load(spec, weights=str(tmp_path / "resnet.safetensors"))
    message = str(info.value)
    assert "do not fit this model" in message and "missing keys" in message and "unexpected keys" in message
    assert len(message) < 700 and "\n" not in message


def test_medmnist_root_pointing_at_the_file_says_so(tmp_path):
    from medfm import UserError
    from medfm.registry import load_registry

    npz = tmp_path / "breastmnist.npz"
    npz.write_bytes(b"not really")
    spec = load_registry().get("dataset", "medmnist/breastmnist")
    with pytest.raises(
        UserError, match=f'must be the folder that holds breastmnist.npz, not a file; set root = "{tmp_path}"'
    ):
        spec.load(spec, root=str(npz))
