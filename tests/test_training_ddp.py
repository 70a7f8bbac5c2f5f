"""Multi-process training as under ``torchrun`` (gloo on the CPU, 2 ranks) gives the metrics of one process.

The job is the real command line, ``torchrun --nproc_per_node 2 -m medfm.cli run``: each rank
runs the whole plan, DDP averages gradients over the shared global batch, predictions are
sharded and gathered, and only rank 0 writes records.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medfm.config import load_config
from medfm.records import iter_records, read_predictions
from medfm.runner import Runner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


CONFIG = """
backbones = ["random/test_vit@64"]
datasets = ["synthetic/cxr-nodules"]
protocols = ["finetune_linear", "frozen_deit_head"]
device = "cpu"
bootstrap = 100
results_dir = "{results}"
leaderboard = "{results}.md"

[dataset."synthetic/cxr-nodules"]
patients = 12
size = 64

[protocol."*"]
epochs = 2
batch_size = 6
accum_steps = 2
warmup_epochs = 0.5
class_balanced = true
drop_path = 0.0
deit_depth = 1
"""


def _records(results: Path) -> dict:
    out = {}
    for path, record, error in iter_records(results, verify=True):
        assert error is None, error
        out[record["protocol"]["name"]] = (record, read_predictions(path.with_name(path.stem + ".predictions.npz")))
    return out


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo is tested on POSIX")
def test_two_process_gloo_ddp_matches_one_process(tmp_path):
    (tmp_path / "ddp.toml").write_text(CONFIG.format(results="ddp"))
    (tmp_path / "single.toml").write_text(CONFIG.format(results="single"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    job = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "medfm.cli",
            "run",
            "-c",
            "ddp.toml",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    from conftest import build_registry

    cfg = load_config(tmp_path / "single.toml")
    assert all(o.status == "ok" for o in Runner(build_registry(), cfg).run())
    ddp, single = _records(tmp_path / "ddp"), _records(tmp_path / "single")
    assert set(ddp) == set(single) == {"finetune_linear", "frozen_deit_head"}
    for name in ddp:
        (r2, p2), (r1, p1) = ddp[name], single[name]
        assert r2["extra"]["world_size"] == 2 and r1["extra"]["world_size"] == 1
        assert list(p2.ids) == list(p1.ids)  # every test sample once, in order, after gathering
        np.testing.assert_allclose(p2.scores, p1.scores, atol=1e-5)
        np.testing.assert_allclose(r2["extra"]["curves"]["train_loss"], r1["extra"]["curves"]["train_loss"], rtol=1e-5)
        for metric, value in r1["metrics"].items():
            assert r2["metrics"][metric]["value"] == pytest.approx(value["value"], abs=1e-6), (name, metric)
    # rank 1 wrote nothing of its own: one record, one predictions file, one curve per cell
    files = sorted(
        p.relative_to(tmp_path / "ddp").as_posix()
        for p in (tmp_path / "ddp").rglob("*")
        if p.is_file() and ".work" not in str(p) and not p.name.startswith(".")
    )
    assert sorted(f.rsplit("/", 1)[1] for f in files) == sorted(
        f"tester.seed0{s}" for _ in ddp for s in (".curves.png", ".json", ".predictions.npz")
    )
    assert sorted({f.rsplit("/", 2)[1] for f in files}) == sorted(ddp)
