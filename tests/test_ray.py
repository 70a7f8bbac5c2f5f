"""The Ray executor on a local cluster limited to this machine's cores: the same plan gives the
same metrics and leaderboard as the local runner, a killed worker does not lose the run, and
long splits are extracted as shards in parallel tasks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import ray_support

from medfm.config import RunConfig
from medfm.records import iter_records
from medfm.registry import load_registry
from medfm.runner import Runner

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'medfm[ray]')")

from medfm.ray_executor import RayOptions, run_on_ray  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module: 2 CPUs (this machine's), workers that import the
    tests' support modules and run torch on one thread, as the local runs below do."""
    here = str(Path(__file__).parent)
    env = {"PYTHONPATH": os.pathsep.join([here, *sys.path]), "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield
    ray.shutdown()


def _config(tmp_path: Path, name: str, **overrides) -> RunConfig:
    cfg = RunConfig(
        backbones=["random/test_vit@64", "random/test_resnet@64"],
        datasets=["synthetic/cxr-nodules"],
        protocols=["knn", "logistic_regression"],
        results_dir=str(tmp_path / name / "results"),
        cache_dir=str(tmp_path / name / "cache"),
        leaderboard=str(tmp_path / name / "leaderboard.md"),
        bootstrap=200,
        batch_size=16,
        device="cpu",
        submitter="tester",
    )
    cfg.options["dataset"]["synthetic/cxr-nodules"] = {"patients": 40, "size": 64}
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def _metrics(results: str) -> dict:
    out = {}
    for _, record, error in iter_records(Path(results), verify=True):
        assert error is None, error
        out[(record["backbone"]["name"], record["protocol"]["name"])] = json.dumps(record["metrics"], sort_keys=True)
    return out


def test_ray_and_local_runs_give_identical_metrics_and_leaderboard(cluster, tmp_path, one_torch_thread):
    local = _config(tmp_path, "local")
    assert all(o.status == "ok" for o in Runner(load_registry(), local).run())
    on_ray = _config(tmp_path, "ray")
    outcomes = run_on_ray(load_registry, on_ray)
    assert [o.status for o in outcomes] == ["ok"] * 4, [o.message for o in outcomes]
    assert _metrics(on_ray.results_dir) == _metrics(local.results_dir)
    assert len(_metrics(local.results_dir)) == 4
    ray_board = Path(on_ray.leaderboard).read_bytes()
    local_board = Path(local.leaderboard).read_bytes()
    assert ray_board == local_board.replace(b"/local/", b"/ray/")
    # a second Ray run finds every record current: nothing is recomputed
    again = run_on_ray(load_registry, on_ray)
    assert [o.status for o in again] == ["cached"] * 4


def test_a_killed_worker_does_not_lose_the_run(cluster, tmp_path, one_torch_thread):
    cfg = _config(tmp_path, "killed", backbones=["random/test_resnet@64"], protocols=["knn", "dies_once"])
    marker = tmp_path / "killed" / "worker-died"
    marker.parent.mkdir(parents=True)
    cfg.options["protocol"]["dies_once"] = {"marker": str(marker)}
    outcomes = run_on_ray(ray_support.registry_with_a_dying_protocol, cfg, RayOptions(max_retries=2))
    assert marker.exists()  # a worker process really died mid-cell
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.message for o in outcomes]
    metrics = {k[1]: json.loads(v) for k, v in _metrics(cfg.results_dir).items()}
    assert metrics["dies_once"]["auroc"]["value"] == pytest.approx(metrics["knn"]["auroc"]["value"], abs=0.2)


def test_a_lost_task_fails_only_its_cell_and_the_same_command_resumes(cluster, tmp_path, one_torch_thread):
    cfg = _config(tmp_path, "lost", backbones=["random/test_resnet@64"], protocols=["knn", "dies_once"])
    marker = tmp_path / "lost" / "worker-died"
    marker.parent.mkdir(parents=True)
    cfg.options["protocol"]["dies_once"] = {"marker": str(marker)}
    registry = ray_support.registry_with_a_dying_protocol
    first = {o.cell.protocol.name: o for o in run_on_ray(registry, cfg, RayOptions(max_retries=0))}
    assert first["knn"].status == "ok"
    assert first["dies_once"].status == "error" and "Ray task lost" in first["dies_once"].message
    assert "run the same command again" in first["dies_once"].message
    second = {o.cell.protocol.name: o for o in run_on_ray(registry, cfg, RayOptions(max_retries=0))}
    assert second["knn"].status == "cached" and second["dies_once"].status == "ok"
    assert Path(cfg.leaderboard).read_text().count("random/test_resnet@64") >= 1


def test_a_failing_cell_fails_only_itself(cluster, tmp_path, one_torch_thread):
    cfg = _config(tmp_path, "failing", backbones=["random/test_resnet@64"], protocols=["knn", "dies_once"])
    cfg.options["protocol"]["dies_once"] = {"marker": str(tmp_path / "no-such-folder" / "marker")}
    outcomes = {o.cell.protocol.name: o for o in run_on_ray(ray_support.registry_with_a_dying_protocol, cfg)}
    assert outcomes["knn"].status == "ok"
    assert outcomes["dies_once"].status == "error" and "FileNotFoundError" in outcomes["dies_once"].message


def test_long_splits_are_extracted_as_shards_in_parallel_tasks(cluster, tmp_path, one_torch_thread):
    sharded = _config(tmp_path, "sharded", backbones=["random/test_vit@64"], protocols=["knn"], extraction_chunk=16)
    outcomes = run_on_ray(load_registry, sharded)
    assert [o.status for o in outcomes] == ["ok"]
    whole = _config(tmp_path, "whole", backbones=["random/test_vit@64"], protocols=["knn"])
    Runner(load_registry(), whole).run()
    assert _metrics(sharded.results_dir) == _metrics(whole.results_dir)
    # the shards were merged into whole-split entries, and the shard entries removed
    entries = sorted(p.name for p in Path(sharded.cache_dir).glob("features/*/*.safetensors"))
    assert entries == sorted(p.name for p in Path(whole.cache_dir).glob("features/*/*.safetensors"))


def test_an_interrupted_driver_resumes_to_the_same_results(cluster, tmp_path, one_torch_thread):
    from medfm.api import RunEvents

    class DriverKilledAfterOneCell(RunEvents):
        def cell_end(self, outcome):
            raise KeyboardInterrupt("the driver is killed")

    cfg = _config(tmp_path, "driver")
    with pytest.raises(KeyboardInterrupt):
        run_on_ray(load_registry, cfg, events=DriverKilledAfterOneCell())
    assert not Path(cfg.leaderboard).exists()  # the driver died before writing it
    resumed = run_on_ray(load_registry, cfg)  # the same command again
    statuses = [o.status for o in resumed]
    assert set(statuses) <= {"ok", "cached"} and "cached" in statuses, statuses  # finished cells are kept
    reference = _config(tmp_path, "reference")
    Runner(load_registry(), reference).run()
    assert _metrics(cfg.results_dir) == _metrics(reference.results_dir)
    assert Path(cfg.leaderboard).read_bytes() == Path(reference.leaderboard).read_bytes().replace(
        b"/reference/", b"/driver/"
    )
