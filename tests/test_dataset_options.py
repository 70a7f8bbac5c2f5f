"""Data set options are checked before any cell runs: every first-party data set declares them.

A misspelt option, a value of the wrong type or out of range is one ``UserError`` line from
``Runner.check`` (nothing is loaded, nothing is written), not an error record per cell. The
declared options are what ``load`` accepts: for file-based sets the list ``parse_options``
gives for an unknown option, for the others ``load``'s keyword parameters.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from medfm.api import Runner, with_overrides
from medfm.errors import UserError
from medfm_plugins.datasets.huggingface import NOT_FOR_HUB

FOLDER = "folder/binary/x"


def _check(registry, config, dataset, overrides):
    config = with_overrides(
        config, datasets=[dataset], backbones=["random/test_vit@64"], protocols=["knn"], set=overrides
    )
    runner = Runner(registry, config)
    runner.check(runner.plan())


@pytest.mark.parametrize(
    ("dataset", "override", "expected"),
    [
        ("synthetic/cxr-nodules", "patiens=10", "did you mean 'patients'?"),
        ("medmnist/breastmnist", "roott='/data'", "unknown option 'roott'; did you mean 'root'?"),
        (FOLDER, "val_fraction='a lot'", "option 'val_fraction' must be a number, not 'a lot'"),
        (FOLDER, "test_fraction=1.5", "option 'test_fraction' must be in (0, 1), not 1.5"),
        (FOLDER, "on_error='ignore'", "option 'on_error' must be one of 'fail', 'skip', not 'ignore'"),
        (FOLDER, "group_regexp='x'", "did you mean 'group_regex'?"),
        ("synthetic/cxr-nodules", "patients=2", "option 'patients' must be at least 5, not 2"),
        ("chexpert/small", "uncertain='maybe'", "option 'uncertain' must be one of 'ones', 'zeros', 'ignore'"),
        ("chexpert/small", "frontal_only='yes'", "option 'frontal_only' must be true or false"),
        ("csv/binary/x", "max_side=-1", "option 'max_side' must be at least 0, not -1"),
        ("hf/multiclass/user/set", "root='/data'", "unknown option 'root'"),
    ],
    ids=[
        "misspelt synthetic",
        "misspelt medmnist",
        "wrong type",
        "fraction out of range",
        "on_error not a choice",
        "misspelt folder",
        "too few synthetic patients",
        "chexpert policy",
        "chexpert flag type",
        "negative max_side",
        "root on a hub set",
    ],
)
def test_a_bad_data_set_option_is_one_line_before_anything_runs(
    registry_factory, tiny_config, dataset, override, expected
):
    with pytest.raises(UserError) as caught:
        _check(registry_factory(), tiny_config, dataset, [f"dataset.{dataset}.{override}"])
    message = str(caught.value)
    assert expected in message and "\n" not in message, message
    assert f"dataset {dataset!r}" in message
    assert not Path(tiny_config.results_dir).exists()  # nothing ran, nothing was written


@pytest.mark.parametrize(
    ("dataset", "overrides"),
    [
        ("synthetic/cxr-nodules", ["patients=40", "size=64", "seed=3"]),
        ("medmnist/breastmnist", ["root='/no/such/folder'", "download=false", "verify_md5=true"]),
        (FOLDER, ["root='/no/such/folder'", "classes=['a', 'b']", "group_regex=false", "val_fraction=0.25"]),
        (FOLDER, ["root='/no/such/folder'", "image_cache=false", "on_error='skip'", "max_side=0"]),
        ("chexpert/small-14", ["root='/no/such/folder'", "uncertain='zeros'", "frontal_only=false"]),
        ("csv/multilabel/x", ["csv_file='/no/such.csv'", "label_columns=['a', 'b']", "patient_column=false"]),
        ("dicom/binary/x", ["root='/no/such/folder'", "key_column='SOPInstanceUID'", "window='lung'"]),
        ("hf/multiclass/user/set", ["path='/no/such/folder'", "splits={train='tr', test='te'}", "max_side=64"]),
    ],
    ids=["synthetic", "medmnist", "folder", "folder common", "chexpert", "csv", "dicom", "hf"],
)
def test_valid_data_set_options_pass_without_loading(registry_factory, tiny_config, dataset, overrides):
    # the paths do not exist: the check passes because it loads nothing
    _check(registry_factory(), tiny_config, dataset, [f"dataset.{dataset}.{o}" for o in overrides])


def _first_party_specs(registry):
    specs = list(registry.specs("dataset"))
    families = [entry.spec for entry in registry.families["dataset"]]
    assert families, "the first-party families (folder/, csv/, dicom/, hf/) are registered"
    for family in families:
        assert family.examples, family.prefix
        specs += [registry.get("dataset", name) for name in family.examples]
    return specs


def _takes_any_keyword(load) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(load).parameters.values())


#: options a load needs before it gets to ``parse_options`` (csv/ reads ``csv_file`` first)
REQUIRED_FIRST = {"csv/": {"csv_file": "/no/such/manifest.csv"}}
OPTIONS_ARE = re.compile(r"unknown option 'no_such_option'; options are (\[.*\])$")


def test_every_first_party_data_set_declares_what_its_load_takes(registry_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_DATA", str(tmp_path / "data"))
    checked_files = checked_keywords = 0
    for spec in _first_party_specs(registry_factory()):
        assert spec.options is not None, f"{spec.name} declares no options"
        assert set(spec.limits) <= set(spec.options), spec.name
        if not _takes_any_keyword(spec.load):
            # non-file sets: exactly load's keyword parameters, with their defaults
            params = list(inspect.signature(spec.load).parameters.values())[1:]
            assert dict(spec.options) == {p.name: p.default for p in params}, spec.name
            checked_keywords += 1
            continue
        given = {**next((v for k, v in REQUIRED_FIRST.items() if spec.name.startswith(k)), {}), "no_such_option": 1}
        with pytest.raises(UserError) as caught:
            spec.load(spec, **given)
        found = OPTIONS_ARE.search(str(caught.value))
        assert found, f"{spec.name}: load did not list its options first: {caught.value}"
        accepted = set(ast.literal_eval(found.group(1)))
        if spec.name.startswith("hf/"):
            # parse_options lists the common options, but load refuses those that do not apply to a hub set
            assert set(NOT_FOR_HUB) <= accepted
            accepted -= set(NOT_FOR_HUB)
        assert set(spec.options) == accepted, spec.name
        checked_files += 1
    assert not (tmp_path / "data").exists()  # the probes touched no data folder
    assert checked_files >= 20 and checked_keywords >= 40


def test_a_hub_set_refuses_the_file_options_it_does_not_declare(registry_factory):
    spec = registry_factory().get("dataset", "hf/multiclass/user/set")
    for key in NOT_FOR_HUB:
        assert key not in spec.options
        with pytest.raises(UserError, match="does not apply to Hugging Face"):
            spec.load(spec, **{key: "x"})
