"""The runner: isolation of failing cells, resume, determinism, caching, seeds."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from medfm import ProtocolOutput, ProtocolSpec, hookimpl
from medfm.records import iter_records, load_record
from medfm.runner import Runner


class ExplodingProtocol:
    plugin_name = "exploding"

    @hookimpl
    def register_protocols(self, register):
        def run(ctx):
            ctx.features("train")
            raise ZeroDivisionError("boom in the protocol")

        register(ProtocolSpec(name="explodes", run=run))


class CountingProtocol:
    """A protocol that counts its calls and reuses cached features."""

    plugin_name = "counting"

    def __init__(self):
        self.calls = 0

    @hookimpl
    def register_protocols(self, register):
        def run(ctx):
            self.calls += 1
            test = ctx.features("test")
            n = len(test.labels)
            scores = np.full((n, 2), 0.5)
            scores[:, 1] = test.features[:, 0].sigmoid().numpy()
            scores[:, 0] = 1 - scores[:, 1]
            return ProtocolOutput(ids=test.ids, scores=scores)

        register(ProtocolSpec(name="counting", run=run))


def _metrics(results: Path) -> dict:
    out = {}
    for _, record, error in iter_records(results, verify=True):
        assert error is None, error
        out[(record["backbone"]["name"], record["protocol"]["name"])] = record["metrics"]
    return out


def test_failing_cell_is_recorded_and_run_goes_on(registry_factory, tiny_config):
    tiny_config.backbones = ["random/test_vit@64"]
    tiny_config.protocols = ["explodes", "knn"]
    runner = Runner(registry_factory(ExplodingProtocol()), tiny_config)
    outcomes = runner.run()
    status = {o.cell.protocol.name: o.status for o in outcomes}
    assert status == {"explodes": "error", "knn": "ok"}
    bad = load_record(next(o.record_path for o in outcomes if o.status == "error"))
    assert bad["status"] == "error"
    assert bad["error"]["type"] == "ZeroDivisionError"
    assert "boom in the protocol" in bad["error"]["message"]
    assert "ZeroDivisionError" in bad["error"]["traceback"]
    # the leaderboard still shows the good cell
    text = Path(tiny_config.leaderboard).read_text()
    assert "knn" in text and "random/test\\_vit@64" not in text and "random/test_vit@64" in text


def test_fail_fast_stops_at_first_failure(registry_factory, tiny_config):
    tiny_config.backbones = ["random/test_vit@64"]
    tiny_config.protocols = ["explodes", "knn"]
    tiny_config.fail_fast = True
    outcomes = Runner(registry_factory(ExplodingProtocol()), tiny_config).run()
    assert [o.status for o in outcomes] == ["error"]


def test_broken_backbone_fails_its_cells_only(registry_factory, tiny_config):
    tiny_config.backbones = ["random/test_vit@64", "timm/resnet18"]
    tiny_config.options["backbone"]["timm/resnet18"] = {"weights": "/nonexistent/weights.safetensors"}
    tiny_config.protocols = ["knn"]
    outcomes = Runner(registry_factory(), tiny_config).run()
    by_backbone = {o.cell.backbone.name: o for o in outcomes}
    assert by_backbone["random/test_vit@64"].status == "ok"
    assert by_backbone["timm/resnet18"].status == "error"
    assert "/nonexistent/weights.safetensors" in by_backbone["timm/resnet18"].message


def test_resume_skips_current_records_and_rerun_forces(registry_factory, tiny_config):
    counting = CountingProtocol()
    tiny_config.protocols = ["counting"]
    tiny_config.backbones = ["random/test_vit@64"]
    first = Runner(registry_factory(counting), tiny_config).run()
    assert [o.status for o in first] == ["ok"] and counting.calls == 1
    second = Runner(registry_factory(counting), tiny_config).run()
    assert [o.status for o in second] == ["cached"] and counting.calls == 1
    tiny_config.rerun = True
    third = Runner(registry_factory(counting), tiny_config).run()
    assert [o.status for o in third] == ["ok"] and counting.calls == 2


def test_changed_options_invalidate_the_record(registry_factory, tiny_config):
    tiny_config.backbones = ["random/test_vit@64"]
    tiny_config.protocols = ["knn"]
    Runner(registry_factory(), tiny_config).run()
    tiny_config.options["protocol"]["knn"] = {"k_grid": [3, 5]}
    outcomes = Runner(registry_factory(), tiny_config).run()
    assert outcomes[0].status == "ok"
    record = load_record(outcomes[0].record_path)
    assert record["config"]["protocol"]["options"]["k_grid"] == [3, 5]
    assert record["selected"]["k"] in (3, 5)


def test_features_are_extracted_once_and_reused(registry_factory, tiny_config):
    tiny_config.backbones = ["random/test_resnet@64"]
    runner = Runner(registry_factory(), tiny_config)
    runner.run()
    extracted = runner.cache.stats.misses
    assert runner.cache.info()["entries"] == 3  # train, val, test of one kind, shared by both protocols
    tiny_config.rerun = True
    again = Runner(registry_factory(), tiny_config)
    again.run()
    assert again.cache.stats.misses == 0 and again.cache.stats.hits == 3
    assert extracted >= 3


def test_corrupt_cache_file_is_recomputed(registry_factory, tiny_config):
    tiny_config.backbones = ["random/test_resnet@64"]
    tiny_config.protocols = ["knn"]
    Runner(registry_factory(), tiny_config).run()
    before = _metrics(Path(tiny_config.results_dir))
    files = sorted(Path(tiny_config.cache_dir).rglob("*.safetensors"))
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 2])  # truncated
    blob = bytearray(files[1].read_bytes())
    blob[-5] ^= 0xFF  # one flipped byte in the tensor data
    files[1].write_bytes(bytes(blob))
    tiny_config.rerun = True
    runner = Runner(registry_factory(), tiny_config)
    runner.run()
    assert runner.cache.stats.corrupt == 2
    assert _metrics(Path(tiny_config.results_dir)) == before


def test_same_command_twice_gives_identical_metrics(registry_factory, tiny_config, tmp_path):
    Runner(registry_factory(), tiny_config).run()
    first = _metrics(Path(tiny_config.results_dir))
    tiny_config.results_dir = str(tmp_path / "results2")
    tiny_config.cache_dir = str(tmp_path / "cache2")  # cold cache: extraction is deterministic too
    Runner(registry_factory(), tiny_config).run()
    assert _metrics(Path(tiny_config.results_dir)) == first
    assert len(first) == 4


def test_record_contents(registry_factory, tiny_config):
    tiny_config.backbones = ["random/test_vit@64"]
    tiny_config.protocols = ["linear_probe"]
    outcome = Runner(registry_factory(), tiny_config).run()[0]
    record = load_record(outcome.record_path, verify=True)
    assert record["versions"]["torch"] and record["versions"]["timm"] and record["versions"]["medfm"]
    assert record["backbone"]["plugin"]["name"] == "timm_family"
    assert record["dataset"]["fingerprint"] and record["dataset"]["split_sizes"]["test"] > 0
    assert record["backbone"]["preprocessing"]["size"] == 64
    assert record["ci"]["unit"] == "patient"  # synthetic set has patient ids
    auroc = record["metrics"]["auroc"]
    assert auroc["ci_low"] <= auroc["value"] <= auroc["ci_high"]
    assert set(record["timings"]) >= {"extraction_s", "fit_s", "total_s"}
    assert record["seed"] != tiny_config.seed  # derived per cell


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "medfm"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _kill_inside_a_cell(argv: list[str], cwd: Path, log: Path, nth_cell: int, settle_s: float) -> tuple[int, int]:
    """Start ``medfm run``, SIGKILL it ``settle_s`` after it announced its ``nth_cell``-th cell
    (counting this run's own starts), and return (cells started, cells finished) by its log."""
    with open(log, "w") as err:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 300
        while log.read_text().count("▶") < nth_cell:
            assert proc.poll() is None, f"the run ended before its cell {nth_cell} started:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no cell started in 300 s"
            time.sleep(0.002)
        time.sleep(settle_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    text = log.read_text()
    finished = text.count("  done ") + text.count("  error ")  # of the started ones (up to date never start)
    return text.count("▶"), finished


def test_kill_9_then_resume_gives_same_results(tmp_path):
    """A run killed with SIGKILL inside a cell, several times, then restarted, ends like an
    uninterrupted one. Each kill lands while a cell is running (the log says which started and
    none of them finished after it), not between runs."""
    toml = tmp_path / "run.toml"
    toml.write_text(
        'backbones = ["random/test_vit@64", "random/test_resnet@64"]\n'
        'datasets = ["synthetic/cxr-nodules"]\nprotocols = ["knn", "linear_probe", "logistic_regression"]\n'
        'device = "cpu"\nbootstrap = 200\n'
        '[dataset."synthetic/cxr-nodules"]\npatients = 40\nsize = 64\n'
        "[protocol.linear_probe]\nepochs = 10\n"
    )
    reference = tmp_path / "ref"
    reference.mkdir()
    done = _cli("run", "--config", str(toml), "--cache-dir", str(reference / "cache"), cwd=reference)
    assert done.returncode == 0, done.stderr
    interrupted = tmp_path / "killed"
    interrupted.mkdir()
    exe = Path(sys.executable).parent / "medfm"
    argv = [str(exe), "run", "--config", str(toml), "--cache-dir", str(interrupted / "cache")]
    interrupted_cells = []
    for attempt in range(12):  # until three kills have landed inside a cell (cells take ~0.1 s)
        log = tmp_path / f"kill{attempt}.log"
        started, finished = _kill_inside_a_cell(argv, interrupted, log, 2, settle_s=0.0)
        assert finished <= started <= finished + 1, log.read_text()
        if started == finished + 1:
            interrupted_cells.append(log.read_text().rsplit("▶", 1)[1].splitlines()[0].strip())
        if len(interrupted_cells) == 3:
            break
    assert len(interrupted_cells) == 3, interrupted_cells
    assert len(list((interrupted / "results").rglob("*.seed0.json"))) < 6  # the last kill left work to do
    final = _cli("run", "--config", str(toml), "--cache-dir", str(interrupted / "cache"), cwd=interrupted)
    assert final.returncode == 0, final.stderr
    for path in (interrupted / "results").rglob("*.json"):
        json.loads(path.read_text())  # every record parses
    assert _metrics(interrupted / "results") == _metrics(reference / "results")
    assert (interrupted / "leaderboard.md").read_text() == (reference / "leaderboard.md").read_text()
