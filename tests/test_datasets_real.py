"""Real data: BreastMNIST and 16 Kermany chest radiographs through the plugins and a full run;
the MedMNIST download verified against the official MD5 (served offline through file:// URLs)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from medfm import UserError
from medfm.config import RunConfig
from medfm.portable import default_roots, local_path
from medfm.records import load_record
from medfm.runner import Runner
from medfm_plugins.datasets import medmnist

KERMANY_GROUPS = r"(person\d+|IM-\d+)"


@pytest.fixture
def registry(registry_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "cache"))
    return registry_factory()


def load(registry, name, **options):
    spec = registry.get("dataset", name)
    return spec.load(spec, **options)


def test_real_breastmnist_through_the_plugin(registry, shared_assets):
    ds = load(registry, "medmnist/breastmnist", root=str(shared_assets / "medmnist"))
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [546, 78, 156]
    assert ds.split("train").images.shape[1:] == (28, 28) and ds.split("test").labels.shape == (156,)
    assert ds.info["split_method"] == "official" and ds.info["url"].startswith("https://zenodo.org/records/10519652/")
    with pytest.raises(UserError, match="MD5"):  # this copy's labels were reshaped: not the published bytes
        load(registry, "medmnist/breastmnist", root=str(shared_assets / "medmnist"), verify_md5=True)


def test_real_kermany_radiographs_through_the_folder_plugin(registry, shared_assets):
    ds = load(
        registry,
        "folder/binary/kermany",
        root=str(shared_assets / "chest_xray_kermany"),
        group_regex=KERMANY_GROUPS,
        max_side=256,
    )
    assert ds.classes == ("NORMAL", "PNEUMONIA")
    assert sum(len(ds.split(s)) for s in ds.split_names) == 16
    ds.check_group_leaks()
    groups = {s: set(ds.split(s).groups) for s in ds.split_names}
    assert "person1946" in set().union(*groups.values())  # two images of patient 1946 stay together
    image = ds.split("test").images[0]
    assert image.dtype == np.uint8 and min(image.shape[:2]) == 256  # full-size JPEG decoded, shrunk


def test_full_pipeline_on_real_data_decodes_each_image_once(registry, shared_assets, tmp_path, monkeypatch):
    from medfm import image_cache

    decoded = []
    real_decode = image_cache.decode

    def counting(path, options, min_side=None):
        decoded.append(path.name)
        return real_decode(path, options, min_side)

    monkeypatch.setattr(image_cache, "decode", counting)
    cfg = RunConfig(
        backbones=["random/test_resnet@64", "random/test_vit@64"],
        datasets=["folder/binary/kermany", "medmnist/breastmnist"],
        protocols=["knn"],
        results_dir=str(tmp_path / "results"),
        cache_dir=str(tmp_path / "features"),
        leaderboard=str(tmp_path / "leaderboard.md"),
        bootstrap=50,
        batch_size=64,
        device="cpu",
    )
    cfg.options["dataset"]["folder/binary/kermany"] = {
        "root": str(shared_assets / "chest_xray_kermany"),
        "group_regex": KERMANY_GROUPS,
        "max_side": 128,
    }
    cfg.options["dataset"]["medmnist/breastmnist"] = {"root": str(shared_assets / "medmnist")}
    cfg.options["protocol"]["knn"] = {"k_grid": [3, 5]}
    outcomes = Runner(registry, cfg).run()
    assert [o.status for o in outcomes] == ["ok"] * 4, [o.message for o in outcomes]
    assert sorted(decoded) == sorted(p.name for p in (shared_assets / "chest_xray_kermany").rglob("*.jpeg"))
    kermany = [o for o in outcomes if o.cell.dataset.name == "folder/binary/kermany"]
    record = load_record(kermany[1].record_path, verify=True)
    info = record["dataset"]["info"]
    assert info["split_seed"] == 0 and info["on_error"] == "fail" and info["skipped"] == 0
    assert info["split_file"].startswith("$CACHE/splits/")  # no local path in the record
    saved = json.loads(local_path(info["split_file"], default_roots(".")).read_text())
    assert {s: len(ids) for s, ids in saved["splits"].items()} == record["dataset"]["split_sizes"]
    assert info["classes"] == ["NORMAL", "PNEUMONIA"] and record["dataset"]["fingerprint"]


# ------------------------------------------------------------------------------ MedMNIST download
def _fake_npz(path):
    rng = np.random.default_rng(0)
    arrays = {
        f"{s}_{k}": (rng.integers(0, 255, (n, 28, 28), dtype=np.uint8) if k == "images" else rng.integers(0, 2, (n, 1)))
        for s, n in (("train", 12), ("val", 4), ("test", 6))
        for k in ("images", "labels")
    }
    np.savez_compressed(path, **arrays)
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_official_urls_and_md5_table():
    assert (
        medmnist.official_url("breastmnist", 28)
        == "https://zenodo.org/records/10519652/files/breastmnist.npz?download=1"
    )
    assert medmnist.official_url("chestmnist", 224).endswith("/chestmnist_224.npz?download=1")
    assert medmnist.official_md5("breastmnist", 28) == "750601b1f35ba3300ea97c75c52ff8f6"
    assert medmnist.official_md5("organsmnist", 64) == "53a6d115339d874c25e309a994ff46d3"
    assert set(medmnist.MD5) == set(medmnist.SETS) and all(len(v) == 4 for v in medmnist.MD5.values())


def test_download_verified_against_md5(registry, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    md5 = _fake_npz(mirror / "breastmnist.npz")
    monkeypatch.setattr(medmnist, "ZENODO", f"file://{mirror}/{{name}}")
    monkeypatch.setitem(medmnist.MD5, "breastmnist", (md5, "0" * 32, "0" * 32, "0" * 32))
    ds = load(registry, "medmnist/breastmnist", root=str(tmp_path / "data"), download=True)
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [12, 4, 6]
    assert (tmp_path / "data" / "breastmnist.npz").is_file()


def test_download_with_wrong_md5_keeps_nothing(registry, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _fake_npz(mirror / "breastmnist_64.npz")
    monkeypatch.setattr(medmnist, "ZENODO", f"file://{mirror}/{{name}}")  # the official MD5 will not match
    with pytest.raises(UserError, match="not the published 742edef2a1fd1524b2efff4bd7ba9364") as exc:
        load(registry, "medmnist/breastmnist_64", root=str(tmp_path / "data"), download=True)
    assert "\n" not in str(exc.value)
    assert list((tmp_path / "data").iterdir()) == []
    monkeypatch.setattr(medmnist, "ZENODO", f"file://{tmp_path}/nowhere/{{name}}")
    with pytest.raises(UserError, match="cannot download"):
        load(registry, "medmnist/breastmnist_64", root=str(tmp_path / "data"), download=True)
