"""The local path stays the default: no Ray import unless asked, and decode workers follow the device."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from medfm.api import default_workers
from medfm.cli import main

LOCAL_RUN = """
import sys
from medfm.api import RunConfig, Runner, load_registry
cfg = RunConfig(backbones=["random/test_resnet@64"], datasets=["synthetic/cxr-nodules"], protocols=["knn"],
                results_dir=sys.argv[1] + "/r", cache_dir=sys.argv[1] + "/c", leaderboard=sys.argv[1] + "/lb.md",
                bootstrap=50, device="cpu")
cfg.options["dataset"]["synthetic/cxr-nodules"] = {"patients": 20, "size": 64}
cfg.options["protocol"]["knn"] = {"k_grid": [3]}
runner = Runner(load_registry(), cfg)
assert [o.status for o in runner.run()] == ["ok"]
assert runner.workers == 0
print("ray" in sys.modules, "medfm.ray_executor" in sys.modules)
"""


def test_a_local_run_never_imports_ray(tmp_path):
    out = subprocess.run([sys.executable, "-c", LOCAL_RUN, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


def test_decode_workers_follow_the_device():
    assert default_workers(torch.device("cpu"), cores=16) == 0  # the forward pass owns the cores
    assert default_workers(torch.device("cuda"), cores=16) == 8  # capped per GPU process
    assert default_workers(torch.device("cuda"), cores=4) == 3  # one core feeds the GPU
    assert default_workers(torch.device("cuda"), cores=1) == 1
    assert default_workers(torch.device("mps"), cores=8) == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--executor", "dask"], "--executor 'dask': choose local or ray"),
        (["--address", "auto"], "--address and --ray-gpus need --executor ray"),
    ],
)
def test_executor_mistakes_are_one_line(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--results", str(tmp_path / "r"), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
