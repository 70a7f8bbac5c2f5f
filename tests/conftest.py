"""Shared fixtures: registries built without entry points, tiny run configs, real assets."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from medfm.config import RunConfig
from medfm.plugins import make_plugin_manager
from medfm.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
SHARED_ASSETS = ROOT.parent / "shared" / "assets"
FIRST_PARTY = [
    "medfm_plugins.backbones.timm_family",
    "medfm_plugins.backbones.torchvision_models",
    "medfm_plugins.backbones.efficientnet_lite",
    "medfm_plugins.backbones.dino",
    "medfm_plugins.backbones.supervised",
    "medfm_plugins.backbones.sam",
    "medfm_plugins.backbones.seem",
    "medfm_plugins.backbones.open_clip_models",
    "medfm_plugins.backbones.hf_models",
    "medfm_plugins.backbones.blip",
    "medfm_plugins.datasets.synthetic_cxr",
    "medfm_plugins.datasets.medmnist",
    "medfm_plugins.datasets.nih_chestxray14",
    "medfm_plugins.datasets.chexpert",
    "medfm_plugins.datasets.aptos2019",
    "medfm_plugins.datasets.isic2019",
    "medfm_plugins.datasets.cbis_ddsm",
    "medfm_plugins.datasets.tb_cxr",
    "medfm_plugins.datasets.brain_tumor_mri",
    "medfm_plugins.datasets.sars_cov2_ct",
    "medfm_plugins.datasets.image_folder",
    "medfm_plugins.datasets.manifest",
    "medfm_plugins.datasets.dicom_folder",
    "medfm_plugins.datasets.huggingface",
    "medfm_plugins.datasets.volumes_seg",
    "medfm_plugins.protocols.knn",
    "medfm_plugins.protocols.linear_probe",
    "medfm_plugins.protocols.logistic_regression",
    "medfm_plugins.protocols.few_shot",
    "medfm_plugins.protocols.train_linear",
    "medfm_plugins.protocols.train_deit",
    "medfm_plugins.protocols.train_peft",
    "medfm_plugins.protocols.seg_linear",
    "medfm_plugins.protocols.seg_unet",
]


def build_registry(*extra: object) -> Registry:
    """First-party plugin modules plus test plugins, registered directly (no entry points)."""
    pm = make_plugin_manager()
    for name in FIRST_PARTY:
        pm.register(importlib.import_module(name), name=name.rsplit(".", 1)[-1])
    for i, plugin in enumerate(extra):
        pm.register(plugin, name=getattr(plugin, "plugin_name", f"test_plugin_{i}"))
    return Registry.from_plugin_manager(pm)


@pytest.fixture
def registry_factory():
    """``registry_factory(TestPlugin(), ...)`` -> Registry."""
    return build_registry


@pytest.fixture
def tiny_config(tmp_path: Path) -> RunConfig:
    """A fast run: tiny random timm models on a small synthetic set."""
    cfg = RunConfig(
        backbones=["random/test_vit@64", "random/test_resnet@64"],
        datasets=["synthetic/cxr-nodules"],
        protocols=["knn", "linear_probe"],
        results_dir=str(tmp_path / "results"),
        cache_dir=str(tmp_path / "cache"),
        leaderboard=str(tmp_path / "leaderboard.md"),
        bootstrap=200,
        batch_size=32,
        device="cpu",
    )
    cfg.options["dataset"]["synthetic/cxr-nodules"] = {"patients": 40, "size": 64}
    cfg.options["protocol"]["linear_probe"] = {"epochs": 10, "lrs": [1e-3, 1e-2], "weight_decays": [0.0, 1e-3]}
    return cfg


@pytest.fixture
def shared_assets() -> Path:
    """``../shared/assets``; tests using it skip with a reason when it is absent."""
    if not SHARED_ASSETS.is_dir():
        pytest.skip(f"real assets not found at {SHARED_ASSETS} (CI has them; a user's clone may not)")
    return SHARED_ASSETS


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared CPU OpenMP threads thrash."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def test_submitter():
    """Records written by tests carry a fixed submitter (``tester``), whatever git or the login say."""
    import os

    previous = os.environ.get("MEDFM_SUBMITTER")
    os.environ["MEDFM_SUBMITTER"] = "tester"
    yield "tester"
    if previous is None:
        os.environ.pop("MEDFM_SUBMITTER", None)
    else:
        os.environ["MEDFM_SUBMITTER"] = previous


CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()
