"""Mistakes in a run's settings are one line before any cell runs, never a silent default.

Each case is checked twice: by ``Runner.check`` (nothing is written) and, for the CLI, by the
exit status and the one line it prints.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medfm.api import Runner, with_overrides
from medfm.errors import UserError


def _check(registry, config, overrides):
    runner = Runner(registry, with_overrides(config, set=overrides))
    runner.check(runner.plan())


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("protocol.knnn.k_grid=[3]", "unknown protocol 'knnn'; did you mean 'knn'?"),
        ("backbone.random/test_vitt@64.pretrained=false", "unknown backbone"),
        ("dataset.synthetic/cxr-nodule.patients=10", "did you mean 'synthetic/cxr-nodules'"),
        ("protocol.lin*_prob.epochs=3", "the pattern matches no registered protocol"),
    ],
    ids=["misspelt protocol", "misspelt backbone", "misspelt data set", "glob matching nothing"],
)
def test_an_options_table_for_a_name_nobody_registered_is_an_error(registry_factory, tiny_config, override, expected):
    with pytest.raises(UserError) as caught:
        _check(registry_factory(), tiny_config, [override])
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert "--set" in message  # says where such a table comes from
    assert not Path(tiny_config.results_dir).exists()  # nothing ran, nothing was written


def test_options_for_registered_names_and_matching_globs_pass(registry_factory, tiny_config):
    _check(
        registry_factory(),
        tiny_config,
        [
            "protocol.knn.k_grid=[3]",
            "protocol.linear*.epochs=3",
            "backbone.random/test_vit@64.pretrained=false",
            "backbone.timm/resnet18.pretrained=false",
        ],  # a name this run does not plan is fine when it exists
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("protocol.few_shot_prototype.shots=[0]", "protocol 'few_shot_prototype': option 'shots' must be at least 1"),
        ("backbone.timm/resnet18.pretraind=false", "unknown option 'pretraind'; did you mean 'pretrained'?"),
        ("dataset.medmnist/breastmnist.roott='/data'", "unknown option 'roott'; did you mean 'root'?"),
    ],
    ids=["protocol value", "backbone option name", "data set option name"],
)
def test_options_of_a_plugin_the_run_does_not_plan_are_checked_too(registry_factory, tiny_config, override, expected):
    # a run file kept for several plans: its tables for the other plugins still get checked
    with pytest.raises(UserError) as caught:
        _check(registry_factory(), tiny_config, [override])
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert not Path(tiny_config.results_dir).exists()


def test_cli_misspelt_protocol_name_exits_2_with_one_line(tmp_path):
    exe = str(Path(sys.executable).parent / "medfm")
    done = subprocess.run(
        [
            exe,
            "run",
            "-b",
            "random/test_vit@64",
            "-d",
            "synthetic/cxr-nodules",
            "-p",
            "knn",
            "--results",
            str(tmp_path / "results"),
            "--leaderboard",
            str(tmp_path / "lb.md"),
            "--set",
            "protocol.knnn.k_grid=[3]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean 'knn'?" in lines[0], done.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("protocol.knn.k_grid=[0]", "option 'k_grid' must be at least 1, not 0"),
        ("protocol.knn.k_grid=[]", "option 'k_grid' is an empty list"),
        ("protocol.knn.k_grid='five'", "option 'k_grid' must be a list of integers"),
        ("protocol.knn.temperature=-1.0", "option 'temperature' must be greater than 0, not -1.0"),
        ("protocol.linear_probe.lrs=[0.01, 0]", "option 'lrs' must be greater than 0, not 0"),
        ("protocol.linear_probe.representation='dense'", "must be one of 'auto', 'primal', 'dual'"),
        ("protocol.few_shot_knn.shots=[0, 1]", "option 'shots' must be at least 1, not 0"),
        ("protocol.finetune_linear.keep_checkpoints='some'", "protocol 'finetune_linear': keep_checkpoints must be"),
        ("protocol.lora.lora_r=0", "protocol 'lora': lora_r must be an integer >= 1"),
    ],
    ids=["k 0", "empty grid", "k not a number", "negative temperature", "zero learning rate", "unknown choice",
         "zero shots", "training choice", "training range"],
)  # fmt: skip
def test_option_values_out_of_range_are_errors_before_anything_runs(registry_factory, tiny_config, override, expected):
    tiny_config.protocols = ["knn", "linear_probe", "few_shot_knn", "finetune_linear", "lora"]
    with pytest.raises(UserError) as caught:
        _check(registry_factory(), tiny_config, [override])
    assert expected in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    assert not Path(tiny_config.results_dir).exists()


def test_a_single_value_for_a_grid_runs_as_a_one_element_grid(registry_factory, tiny_config):
    runner = Runner(registry_factory(), with_overrides(tiny_config, set=["protocol.knn.k_grid=5"]))
    cells = [c for c in runner.plan() if c.protocol.name == "knn"]
    runner.check(cells)
    assert runner.cell_config(cells[0])["protocol"]["options"]["k_grid"] == [5]


def test_knn_says_when_k_exceeds_the_training_set(registry_factory, tiny_config):
    tiny_config.backbones, tiny_config.protocols = ["random/test_vit@64"], ["knn"]
    tiny_config.options["protocol"]["knn"] = {"k_grid": [3, 5000]}
    (outcome,) = Runner(registry_factory(), tiny_config).run()
    from medfm.api import load_record

    record = load_record(outcome.record_path)
    bank = record["extra"]["bank_size"]
    assert record["extra"]["k_clipped_to_bank"] == [5000] and bank < 5000
    assert sorted(int(k) for k in record["extra"]["validation"]["by_k"]) == [3, bank]


def test_too_few_bootstrap_resamples_are_a_flag_in_the_record(registry_factory, tiny_config):
    tiny_config.backbones, tiny_config.protocols, tiny_config.bootstrap = ["random/test_vit@64"], ["knn"], 200
    (outcome,) = Runner(registry_factory(), tiny_config).run()
    assert "few_resamples" in outcome.flags
