"""A training cell killed at any point resumes from its last checkpoint and ends exactly as an
uninterrupted run: same final weights, same best weights, same predictions and metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medfm.config import RunConfig
from medfm.records import cell_paths, load_record, read_predictions
from medfm.runner import Runner
from medfm.training import engine
from medfm.training.checkpoint import load_checkpoint, load_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


ROOT = Path(__file__).resolve().parents[1]
BACKBONE, DATASET, PROTOCOL = "random/test_vit@64", "synthetic/cxr-nodules", "finetune_linear"
# everything that draws randomness: augmentation, class-balanced sampling, head dropout, warmup + cosine
OPTIONS = {
    "epochs": 5,
    "batch_size": 6,
    "accum_steps": 2,
    "lr": 3e-3,
    "backbone_lr": 3e-4,
    "warmup_epochs": 1.0,
    "class_balanced": True,
    "head_dropout": 0.3,
    "patience": 10,
    "keep_checkpoints": "all",
}


def make_config(results: Path) -> RunConfig:
    cfg = RunConfig(
        backbones=[BACKBONE],
        datasets=[DATASET],
        protocols=[PROTOCOL],
        results_dir=str(results),
        cache_dir=None,
        leaderboard=str(results.parent / f"{results.name}.md"),
        bootstrap=100,
        device="cpu",
    )
    cfg.options["dataset"][DATASET] = {"patients": 12, "size": 64}
    cfg.options["protocol"][PROTOCOL] = dict(OPTIONS)
    return cfg


def run(results: Path):
    from conftest import build_registry

    return Runner(build_registry(), make_config(results)).run()


def final_state(results: Path) -> dict:
    """The record, predictions, last checkpoint's weights and best weights of the cell."""
    paths = cell_paths(results, BACKBONE, DATASET, PROTOCOL, "tester", 0)
    work = paths.work
    record = load_record(paths.record, verify=True)
    checkpoint = load_checkpoint(work / "checkpoint.pt")
    best = sorted(work.glob("best-epoch*.safetensors"))
    assert len(best) == 1
    return {
        "record": record,
        "scores": read_predictions(paths.predictions).scores,
        "last": checkpoint["model"],
        "optimizer": checkpoint["optimizer"],
        "best": load_weights(best[0]),
        "best_name": best[0].name,
    }


def assert_same(a: dict, b: dict) -> None:
    assert a["record"]["metrics"] == b["record"]["metrics"]
    assert a["record"]["extra"]["curves"] == b["record"]["extra"]["curves"]
    assert np.array_equal(a["scores"], b["scores"])
    assert a["best_name"] == b["best_name"]
    for key in ("last", "best"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for pid, st in a["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg_sq"], b["optimizer"]["state"][pid]["exp_avg_sq"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    results = tmp_path_factory.mktemp("plain") / "results"
    assert [o.status for o in run(results)] == ["ok"]
    state = final_state(results)
    assert state["record"]["extra"]["resumed_from_epoch"] is None
    return state


def test_resume_after_a_crash_at_the_end_of_an_epoch(uninterrupted, tmp_path, monkeypatch):
    def crash(epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill after epoch 2")  # not an Exception: the runner cannot catch it

    results = tmp_path / "results"
    monkeypatch.setattr(engine, "after_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        run(results)
    paths = cell_paths(results, BACKBONE, DATASET, PROTOCOL, "tester", 0)
    assert not paths.record.exists()
    assert load_checkpoint(paths.work / "checkpoint.pt")["loop"]["epoch"] == 2
    monkeypatch.setattr(engine, "after_checkpoint", None)
    assert [o.status for o in run(results)] == ["ok"]
    resumed = final_state(results)
    assert resumed["record"]["extra"]["resumed_from_epoch"] == 2
    assert_same(resumed, uninterrupted)


KILLED_RUN = """
import sys
import torch
sys.path.insert(0, {tests!r})
torch.set_num_threads({threads})
from test_training_resume import run
from pathlib import Path

run(Path({results!r}))
"""


def test_resume_after_sigkill_mid_run(uninterrupted, tmp_path):
    results = tmp_path / "results"
    paths = cell_paths(results, BACKBONE, DATASET, PROTOCOL, "tester", 0)
    checkpoint = paths.work / "checkpoint.pt"
    script = KILLED_RUN.format(tests=str(ROOT / "tests"), threads=torch.get_num_threads(), results=str(results))
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    killed_at = None
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if checkpoint.exists():
                epoch = load_checkpoint(checkpoint)["loop"]["epoch"]
                if epoch >= 2:
                    os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no flush: a real crash
                    killed_at = epoch
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert killed_at is not None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    assert not paths.record.exists() and killed_at < OPTIONS["epochs"]
    assert [o.status for o in run(results)] == ["ok"]
    resumed = final_state(results)
    assert resumed["record"]["extra"]["resumed_from_epoch"] >= 2
    assert_same(resumed, uninterrupted)


def test_a_checkpoint_of_another_configuration_is_ignored(uninterrupted, tmp_path):
    results = tmp_path / "results"
    paths = cell_paths(results, BACKBONE, DATASET, PROTOCOL, "tester", 0)
    work = paths.work
    work.mkdir(parents=True)
    torch.save({"format": 1, "fingerprint": "another configuration"}, work / "checkpoint.pt")
    assert [o.status for o in run(results)] == ["ok"]
    fresh = final_state(results)
    assert fresh["record"]["extra"]["resumed_from_epoch"] is None
    assert_same(fresh, uninterrupted)


def test_a_run_that_stopped_early_resumes_to_its_end_not_to_more_epochs(tmp_path):
    import timm

    from medfm.timm_backbone import TimmBackbone, preprocessing_from_timm
    from medfm.training.data import TrainImages
    from medfm.training.distributed import DistInfo
    from medfm.training.engine import Labelled, Trainer
    from medfm.training.model import build_model
    from medfm.training.options import TrainOptions, protocol_defaults
    from medfm_plugins.datasets.synthetic_cxr import generate

    data = generate(8, 64, seed=1)
    images, labels = data["images"], data["labels"]

    def fit():
        torch.manual_seed(0)
        model = timm.create_model("test_vit", num_classes=0, img_size=64)
        backbone = TimmBackbone(model, preprocessing_from_timm(model, 64))
        opts = TrainOptions.from_mapping(protocol_defaults(freeze="frozen", epochs=5, patience=1, batch_size=8))
        trained, _ = build_model(backbone, opts, 2)
        trainer = Trainer(
            trained,
            opts,
            task="binary",
            metric="auroc",
            device=torch.device("cpu"),
            seed=0,
            dist=DistInfo(),
            work_dir=tmp_path,
            fingerprint="f",
        )
        prep = backbone.preprocessing
        # one-class validation labels: AUROC is undefined, so no epoch ever improves and patience ends the run
        return trainer.fit(
            Labelled(TrainImages(images[:10], prep), labels[:10]),
            Labelled(TrainImages(images[10:], prep), np.zeros(len(labels) - 10, int)),
        )

    first = fit()
    assert first.state.stopped_early and first.state.epoch == 1 and first.resumed_from is None
    again = fit()
    assert again.resumed_from == 1 and again.state.epoch == 1 and len(again.state.history) == 1


def test_a_kill_after_training_but_before_the_record_keeps_the_training(tmp_path, monkeypatch):
    """Checkpoints are deleted only once the record is written: a run killed while it computes
    its metrics resumes from the finished training instead of training again."""
    import medfm.runner as runner_module

    results = tmp_path / "results"
    cfg = make_config(results)
    cfg.options["protocol"][PROTOCOL] = {**OPTIONS, "keep_checkpoints": "none", "epochs": 3}
    real_write = runner_module.write_result

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the record")

    from conftest import build_registry

    monkeypatch.setattr(runner_module, "write_result", killed)
    with pytest.raises(KeyboardInterrupt):
        Runner(build_registry(), cfg).run()
    paths = cell_paths(results, BACKBONE, DATASET, PROTOCOL, "tester", 0)
    assert not paths.record.exists()
    assert load_checkpoint(paths.work / "checkpoint.pt")["loop"]["epoch"] == 3  # the training survived
    monkeypatch.setattr(runner_module, "write_result", real_write)
    (outcome,) = Runner(build_registry(), cfg).run()
    assert outcome.status == "ok"
    assert load_record(paths.record)["extra"]["resumed_from_epoch"] == 3  # no epoch trained again
    assert not paths.work.exists()  # keep_checkpoints = "none": removed once the record exists
