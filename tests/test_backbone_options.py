"""Backbone options are checked before anything runs: every first-party spec declares them.

A first-party backbone declares the options its ``load`` takes (``BackboneSpec.options``),
so ``Runner.check`` finds a misspelt name, a value of the wrong type or out of range as a
one-line ``UserError`` before any cell runs, instead of an error record once the cell runs.
Nothing here loads weights: the checks run on the specs alone.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from medfm.api import Runner, with_overrides
from medfm.backbones import COMMON_OPTIONS
from medfm.errors import UserError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "medfm-tiny-vit"
UNKNOWN = "zzz_not_an_option"


def _check(registry, config, overrides, backbones=None):
    if backbones is not None:
        config.backbones = backbones
    config.protocols = ["knn"]
    runner = Runner(registry, with_overrides(config, set=overrides))
    runner.check(runner.plan())


@pytest.mark.parametrize(
    ("backbone", "override", "expected"),
    [
        ("random/test_vit@64", "pretrainedd=false", "unknown option 'pretrainedd'; did you mean 'pretrained'?"),
        ("random/test_vit@64", "pretrained='yes'", "option 'pretrained' must be true or false, not 'yes'"),
        ("random/test_vit@64", "pretrained=true", "option 'pretrained' must be one of False, not True"),
        ("timm/resnet18", "pretrainedd=false", "did you mean 'pretrained'?"),
        ("timm/resnet18", "weight='/some/path'", "did you mean 'weights'?"),
        ("torchvision/mobilenet_v2", "depth=3", "unknown option 'depth'; it takes pretrained, weights"),
        ("resnet50", "depth=3", "unknown option 'depth'; it takes pretrained, weights"),
        ("dinov2_vits14", "pretrained=1", "option 'pretrained' must be true or false, not 1"),
    ],
    ids=["misspelt", "wrong type", "random cannot be pretrained", "timm misspelt", "timm weight",
         "torchvision family", "torchvision named", "int for bool"],
)  # fmt: skip
def test_backbone_option_mistakes_are_errors_before_anything_runs(
    registry_factory, tiny_config, backbone, override, expected
):
    with pytest.raises(UserError) as caught:
        _check(registry_factory(), tiny_config, [f"backbone.{backbone}.{override}"], [backbone])
    message = str(caught.value)
    assert expected in message and f"backbone {backbone!r}" in message and "\n" not in message, message
    assert not Path(tiny_config.results_dir).exists()  # nothing ran, nothing was written


def test_valid_backbone_options_pass_the_check(registry_factory, tiny_config):
    _check(
        registry_factory(),
        tiny_config,
        [
            "backbone.random/test_vit@64.pretrained=false",
            "backbone.random/test_resnet@64.weights='/some/path'",
            "backbone.timm/resnet18.weights='/some/path'",  # check-time only: nothing is loaded
            "backbone.timm/resnet18.resize='pad'",  # preprocessing options are the runner's, not declared
            "backbone.resnet50.pretrained=false",
        ],
        ["random/test_vit@64", "random/test_resnet@64", "timm/resnet18", "resnet50"],
    )


def _declared_and_taken(spec):
    """The spec's declared options, and those its ``load`` says it takes (an unknown option
    fails before anything is built, naming what it takes and only the unknown one)."""
    assert spec.options is not None, f"{spec.name} declares no options"
    with pytest.raises(UserError) as caught:
        spec.load(spec, **spec.options, **{UNKNOWN: 1})
    message = str(caught.value)
    assert f"unknown options [{UNKNOWN!r}]" in message, message  # the declared ones are accepted
    taken = re.search(r"it takes (.*)$", message)
    assert taken, message
    return set(spec.options), {t.strip(" `") for t in taken.group(1).split(",")}


def _first_party_specs(registry):
    specs = list(registry.specs("backbone"))
    for entry in registry.families["backbone"]:
        family = entry.spec
        specs.append(registry.get("backbone", family.examples[0]))
        assert specs[-1].name.startswith(family.prefix)
    return specs


def test_every_first_party_backbone_declares_the_options_its_load_takes(registry_factory):
    registry = registry_factory()
    specs = _first_party_specs(registry)
    families = {s.name.split("/", 1)[0] for s in specs if "/" in s.name}
    assert {"timm", "random", "torchvision", "open_clip", "hf"} <= families
    for spec in specs:
        declared, taken = _declared_and_taken(spec)
        assert {"weights", "pretrained"} <= declared, spec.name
        assert declared <= set(COMMON_OPTIONS), spec.name
        assert declared == taken, spec.name
        assert spec.options["weights"] is None, spec.name  # any value: a path
        assert isinstance(spec.options["pretrained"], bool), spec.name
        assert not {"resize", "interpolation"} & declared, spec.name  # the runner's, stripped before load
        assert spec.at_resolution(spec.input_size + 16).options == spec.options, spec.name


def test_random_members_declare_pretrained_false(registry_factory):
    registry = registry_factory()
    assert registry.get("backbone", "random/test_vit@64").options["pretrained"] is False
    assert registry.get("backbone", "timm/resnet18").options["pretrained"] is True
    spec = registry.get("backbone", "random/test_vit@64")
    with pytest.raises(UserError, match="randomly initialised"):
        spec.load(spec, pretrained=True)


def test_the_example_plugin_declares_its_options(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    module = importlib.import_module("medfm_tiny_vit")
    specs = []
    module.register_backbones(specs.append)
    (spec,) = specs
    assert spec.options == {"weights": None}
    with pytest.raises(UserError, match=re.escape(f"unknown options [{UNKNOWN!r}]")):
        spec.load(spec, **spec.options, **{UNKNOWN: 1})
