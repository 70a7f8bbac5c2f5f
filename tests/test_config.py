"""Run configuration: TOML files, option tables with glob precedence, command-line overrides."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from medfm.config import RunConfig, load_config, parse_override, with_overrides
from medfm.errors import UserError

CONFIG = """
backbones = ["timm/vit_small_patch14_dinov2", "efficientnet_lite0.in1k"]
datasets = "medmnist/breastmnist"
protocols = ["knn", "linear_probe"]
seed = 7
device = "cpu"
amp = false
bootstrap = 200
results_dir = "out/results"

[backbone."timm/vit_small_patch14_dinov2"]
weights = "weights/dinov2.safetensors"

[dataset."*"]
root = "/data"
size = 28
cache = true

[dataset."medmnist/*"]
root = "/data/medmnist"
size = 64

[dataset."medmnist/breast*"]
size = 128

[dataset."medmnist/breastmnist"]
size = 224
download = false

[protocol.knn]
k_grid = [5, 10, 20]
metric = "cosine"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "sub" / "run.toml"
    path.parent.mkdir()
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_load_scalars_lists_and_tables(config_file):
    cfg = load_config(config_file)
    assert cfg.backbones == ["timm/vit_small_patch14_dinov2", "efficientnet_lite0.in1k"]
    assert cfg.datasets == ["medmnist/breastmnist"]  # a single string becomes a list
    assert cfg.protocols == ["knn", "linear_probe"]
    assert (cfg.seed, cfg.device, cfg.amp, cfg.bootstrap) == (7, "cpu", False, 200)
    assert cfg.batch_size == RunConfig().batch_size  # untouched keys keep their defaults
    assert cfg.options["protocol"]["knn"] == {"k_grid": [5, 10, 20], "metric": "cosine"}
    assert cfg.options_for("backbone", "efficientnet_lite0.in1k") == {}
    # relative paths written in the file are relative to the file's folder, not the working directory
    base = config_file.parent.resolve()
    assert (
        Path(cfg.options_for("backbone", "timm/vit_small_patch14_dinov2")["weights"])
        == base / "weights" / "dinov2.safetensors"
    )
    assert cfg.path(cfg.results_dir) == base / "out" / "results"
    assert cfg.options_for("dataset", "chexpert")["root"] == "/data"  # absolute paths are kept
    assert cfg.options_for("protocol", "knn")["metric"] == "cosine"  # non-path strings are kept
    assert cfg.path("/abs/x") == Path("/abs/x")


def test_options_for_merges_glob_and_exact_by_specificity(config_file):
    cfg = load_config(config_file)
    # every matching table applies; exact beats globs, longer globs beat shorter ones
    assert cfg.options_for("dataset", "medmnist/breastmnist") == {
        "root": "/data/medmnist",
        "size": 224,
        "cache": True,
        "download": False,
    }
    assert cfg.options_for("dataset", "medmnist/breastmnist_v2") == {
        "root": "/data/medmnist",
        "size": 128,
        "cache": True,
    }
    assert cfg.options_for("dataset", "medmnist/pathmnist") == {"root": "/data/medmnist", "size": 64, "cache": True}
    assert cfg.options_for("dataset", "chexpert") == {"root": "/data", "size": 28, "cache": True}
    assert cfg.options_for("protocol", "linear_probe") == {}


def test_options_for_precedence_does_not_depend_on_table_order(tmp_path):
    a = tmp_path / "a.toml"
    b = tmp_path / "b.toml"
    a.write_text('[dataset."x/y"]\nv = "exact"\n[dataset."x/*"]\nv = "glob"\nw = 1\n')
    b.write_text('[dataset."x/*"]\nv = "glob"\nw = 1\n[dataset."x/y"]\nv = "exact"\n')
    for path in (a, b):
        assert load_config(path).options_for("dataset", "x/y") == {"v": "exact", "w": 1}


def test_options_for_returns_a_copy(config_file):
    cfg = load_config(config_file)
    cfg.options_for("protocol", "knn")["metric"] = "changed"
    assert cfg.options_for("protocol", "knn")["metric"] == "cosine"


def test_overrides_replace_file_values_and_ignore_none(config_file):
    cfg = load_config(config_file)
    new = with_overrides(
        cfg, backbones=["random/resnet18"], datasets=[], protocols=None, seed=3, device=None, bootstrap=None
    )
    assert new.backbones == ["random/resnet18"]
    assert new.datasets == cfg.datasets  # empty list = flag not given
    assert new.protocols == cfg.protocols
    assert new.seed == 3 and new.device == "cpu" and new.bootstrap == 200
    assert cfg.seed == 7  # replace() returns a new object


@pytest.mark.parametrize(
    "text, kind, name, key, value",
    [
        ("protocol.knn.k_grid=[5,7]", "protocol", "knn", "k_grid", [5, 7]),
        ("protocol.linear_probe.epochs=10", "protocol", "linear_probe", "epochs", 10),
        ("protocol.linear_probe.lr=1e-3", "protocol", "linear_probe", "lr", 1e-3),
        ("protocol.linear_probe.balanced=true", "protocol", "linear_probe", "balanced", True),
        ("dataset.medmnist/breastmnist.size=28", "dataset", "medmnist/breastmnist", "size", 28),
        ('backbone."timm/vit_b.augreg".weights="/w/a b.pt"', "backbone", "timm/vit_b.augreg", "weights", "/w/a b.pt"),
        (
            "backbone.efficientnet_lite0.in1k.weights=/w/x.pt",
            "backbone",
            "efficientnet_lite0.in1k",
            "weights",
            "/w/x.pt",
        ),
        ("protocol.knn.metric=cosine", "protocol", "knn", "metric", "cosine"),
        ("protocol.knn.note=a=b", "protocol", "knn", "note", "a=b"),
    ],
)
def test_parse_override_is_toml_typed(text, kind, name, key, value):
    got = parse_override(text)
    assert got == (kind, name, key, value)
    assert type(got[3]) is type(value)


def test_set_overrides_merge_into_option_tables(config_file):
    cfg = load_config(config_file)
    new = with_overrides(
        cfg, set=["protocol.knn.k_grid=[5,7]", "protocol.linear_probe.epochs=3", 'dataset."medmnist/*".size=32']
    )
    assert new.options_for("protocol", "knn") == {"k_grid": [5, 7], "metric": "cosine"}
    assert new.options_for("protocol", "linear_probe") == {"epochs": 3}
    assert new.options_for("dataset", "medmnist/pathmnist")["size"] == 32
    assert new.options_for("dataset", "medmnist/breastmnist")["size"] == 224  # exact table still wins


@pytest.mark.parametrize("bad", ["protocol.knn.k", "knn.k=1", "model.x.k=1", "protocol.k=1", "protocol..k=1"])
def test_malformed_override_is_user_error(bad):
    with pytest.raises(UserError, match="KIND.NAME.KEY=VALUE"):
        parse_override(bad)


def test_with_overrides_does_not_mutate_its_input(config_file):
    cfg = load_config(config_file)
    before = copy.deepcopy(cfg.options)
    with_overrides(cfg, set=["protocol.knn.k_grid=[5,7]", "protocol.new.x=1"])
    assert cfg.options == before


@pytest.mark.parametrize("key, suggestion", [("seeds", "seed"), ("bootstrp", "bootstrap"), ("protocl", "protocol")])
def test_unknown_key_names_file_and_suggests(tmp_path, key, suggestion):
    path = tmp_path / "typo.toml"
    path.write_text(f"{key} = 1\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and repr(key) in message and f"did you mean {suggestion!r}" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "text, key",
    [
        ('seed = "zero"', "seed"),
        ("seed = true", "seed"),
        ("amp = 1", "amp"),
        ("backbones = [1, 2]", "backbones"),
        ('[backbone]\nweights = "x"', "backbone"),
    ],
)
def test_wrong_value_type_is_user_error(tmp_path, text, key):
    path = tmp_path / "types.toml"
    path.write_text(text + "\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    assert str(path) in str(info.value) and key in str(info.value)


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('backbones = ["a",\nseed = \n')
    with pytest.raises(UserError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "not valid TOML" in str(info.value)


def test_missing_file_is_user_error(tmp_path):
    path = tmp_path / "missing.toml"
    with pytest.raises(UserError, match="missing.toml"):
        load_config(path)


def test_non_utf8_file_is_user_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('device = "cpu"  # caf\xe9\n'.encode("latin-1"))
    with pytest.raises(UserError, match="latin1.toml"):
        load_config(path)


def test_directory_instead_of_file_is_user_error(tmp_path):
    with pytest.raises(UserError):
        load_config(tmp_path)


def test_a_resolution_variant_inherits_its_base_names_options():
    """``[backbone."timm/x"] weights = ...`` also applies to ``timm/x@112``; the variant's own table wins."""
    cfg = RunConfig(backbones=["timm/x@112"])
    cfg.options["backbone"] = {
        "timm/x": {"weights": "/w/base.safetensors", "revision": "a"},
        "timm/x@112": {"revision": "b"},
        "timm/*": {"pretrained": True, "revision": "c"},
    }
    assert cfg.options_for("backbone", "timm/x@112") == {
        "weights": "/w/base.safetensors",
        "revision": "b",
        "pretrained": True,
    }
    assert cfg.options_for("backbone", "timm/x") == {
        "weights": "/w/base.safetensors",
        "revision": "a",
        "pretrained": True,
    }
    assert cfg.options_for("backbone", "timm/y@112") == {"pretrained": True, "revision": "c"}
