"""The example third-party plugin (examples/medfm-tiny-vit) installs, is discovered and runs.

The unit tests import the example straight from its source folder. The end-to-end test
pip-installs it into this interpreter's environment (offline: no index, no build isolation,
no dependencies), drives the ``medfm`` console script of the same environment in
subprocesses, and uninstalls the distribution again in a finalizer.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medfm import UserError
from medfm.records import cell_paths, load_record

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "medfm-tiny-vit"
DIST = "medfm-tiny-vit"
PLUGIN = "tiny_vit"
SPEC = "example/tiny-vit"
DATASET = "synthetic/cxr-nodules"
MEDFM = Path(sys.executable).parent / ("medfm.exe" if os.name == "nt" else "medfm")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MEDFM_BLOCK_PLUGINS", None)
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PYTHONIOENCODING": "utf-8"})
    return env


def _run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _installed() -> bool:
    try:
        importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# ---------------------------------------------------------------------- the module itself
@pytest.fixture()
def tiny_vit(monkeypatch):
    """The example's module, imported from its source folder (no install needed)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    return importlib.import_module("medfm_tiny_vit")


@pytest.fixture()
def spec(tiny_vit):
    specs = []
    tiny_vit.register_backbones(specs.append)
    assert [s.name for s in specs] == [SPEC]
    return specs[0]


def test_params_constant_matches_built_model(tiny_vit, spec):
    torch.manual_seed(0)
    backbone = spec.load(spec)
    assert spec.params == tiny_vit.PARAMS == backbone.num_parameters
    assert spec.embed_dim == backbone.module.num_features
    assert spec.objective == "none" and spec.license and spec.citation


def test_offered_feature_kinds_all_work(spec):
    torch.manual_seed(0)
    backbone = spec.load(spec)
    assert sorted(backbone.feature_dims) == sorted(spec.feature_kinds)
    assert backbone.preprocessing.size == spec.input_size == 64
    images = torch.randn(2, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        feats = backbone.features(images, list(backbone.feature_dims))
    for kind, dim in backbone.feature_dims.items():
        assert feats[kind].shape[:2] == (2, dim), kind


def test_random_init_is_seeded_by_the_caller(spec):
    states = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        states.append(spec.load(spec).module.state_dict()["blocks.0.attn.qkv.weight"])
    assert torch.equal(states[0], states[1]) and not torch.equal(states[0], states[2])


def test_weights_option_loads_a_local_safetensors_file(spec, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    trained = spec.load(spec).module
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    torch.manual_seed(2)
    for weights in (path, tmp_path):  # a file, or a folder holding one
        backbone = spec.load(spec, weights=str(weights))
        assert backbone.weights_sha256 and str(path) in backbone.weights_source
        for key, value in trained.state_dict().items():
            assert torch.equal(backbone.module.state_dict()[key], value), key
    with pytest.raises(UserError, match="does not exist"):
        spec.load(spec, weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(UserError, match="unknown options"):
        spec.load(spec, depth=3)


# ---------------------------------------------------------------------- installed, end to end
@pytest.fixture(scope="module")
def installed_example(request, tmp_path_factory):
    """pip-install a copy of the example (the build leaves no files in the repository)."""
    was_installed = _installed()
    workdir = tmp_path_factory.mktemp("tiny-vit-install")
    source = workdir / "medfm-tiny-vit"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))

    def uninstall() -> None:
        if not was_installed:
            _run([sys.executable, "-m", "pip", "uninstall", "-y", DIST], cwd=workdir)

    request.addfinalizer(uninstall)  # before installing: a half-done install is cleaned up too
    proc = _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", str(source)],
        cwd=workdir,
        timeout=180,
    )
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    importlib.invalidate_caches()
    return workdir


def test_installed_plugin_is_listed_and_runs(installed_example, tmp_path):
    assert MEDFM.exists(), f"no medfm console script beside {sys.executable}"

    proc = _run([MEDFM, "plugins", "--json"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in json.loads(proc.stdout)}
    assert PLUGIN in plugins, sorted(plugins)
    info = plugins[PLUGIN]
    assert info["distribution"] == DIST
    assert info["version"] == "0.1.0"
    assert info["module"] == "medfm_tiny_vit"
    assert info["errors"] == [] and not info["blocked"]
    assert {"kind": "backbone", "name": SPEC} in info["specs"]

    results, lb = tmp_path / "results", tmp_path / "lb.md"
    proc = _run(
        [
            MEDFM,
            "run",
            "-b",
            SPEC,
            "-d",
            DATASET,
            "-p",
            "knn",
            "--results",
            results,
            "--cache-dir",
            tmp_path / "cache",
            "--leaderboard",
            lb,
            "--set",
            f"dataset.{DATASET}.patients=40",
            "--bootstrap",
            "200",
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, f"medfm run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    path = cell_paths(results, SPEC, DATASET, "knn", "tester", 0).record
    assert path.exists(), sorted(str(p.relative_to(results)) for p in results.rglob("*"))
    record = load_record(path, verify=True)
    assert record["status"] == "ok"
    assert record["backbone"]["name"] == SPEC
    assert record["backbone"]["plugin"] == {"name": PLUGIN, "distribution": DIST, "version": "0.1.0"}
    assert record["backbone"]["params"] == 1_041_216
    assert record["backbone"]["weights_sha256"] is None
    assert record["config"]["dataset"]["options"] == {"patients": 40}
    assert record["dataset"]["split_sizes"] == {"train": 48, "val": 16, "test": 16}
    assert SPEC in lb.read_text(encoding="utf-8")
