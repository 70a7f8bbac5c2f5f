"""The CLI: user mistakes are one line on stderr with exit status 2; JSON outputs parse."""

from __future__ import annotations

import json

import pytest

from medfm import cli

FIRST_PARTY = {"timm", "medmnist", "knn", "linear_probe", "synthetic_cxr", "efficientnet_lite", "torchvision"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run every command in an empty folder with a private cache, so nothing leaks out."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDFM_BLOCK_PLUGINS", raising=False)


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def assert_one_line_user_error(code: int, out: str, err: str) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]


def test_unknown_backbone(capsys):
    line = assert_one_line_user_error(*run_cli(["run", "-b", "no-such-backbone"], capsys))
    assert "no-such-backbone" in line


def test_misspelled_backbone_gets_a_suggestion(capsys):
    line = assert_one_line_user_error(*run_cli(["run", "-b", "efficientnet_lite0.in1", "-p", "knn"], capsys))
    assert "did you mean" in line and "efficientnet_lite0.in1k" in line


def test_pattern_matching_nothing(capsys, tmp_path):
    line = assert_one_line_user_error(*run_cli(["run", "-b", "zzz*"], capsys))
    assert "zzz*" in line and "matches nothing" in line
    assert list(tmp_path.iterdir()) == []  # nothing was run or written


def test_unknown_protocol(capsys):
    line = assert_one_line_user_error(*run_cli(["run", "-p", "knnn"], capsys))
    assert "knnn" in line and "'knn'" in line


def test_missing_config(capsys):
    line = assert_one_line_user_error(*run_cli(["run", "--config", "missing.toml"], capsys))
    assert "missing.toml" in line


def test_invalid_config(capsys, tmp_path):
    (tmp_path / "bad.toml").write_text("seeds = 3\n")
    line = assert_one_line_user_error(*run_cli(["run", "--config", "bad.toml"], capsys))
    assert "bad.toml" in line and "seeds" in line


def test_malformed_set_option(capsys):
    line = assert_one_line_user_error(*run_cli(["run", "--set", "knn.k=3"], capsys))
    assert "KIND.NAME.KEY=VALUE" in line


def test_unknown_list_kind(capsys):
    line = assert_one_line_user_error(*run_cli(["list", "foo"], capsys))
    assert "'foo'" in line and "backbones" in line


def test_non_utf8_config_is_a_user_error(capsys, tmp_path):
    (tmp_path / "latin1.toml").write_bytes('device = "cpu"  # caf\xe9\n'.encode("latin-1"))
    line = assert_one_line_user_error(*run_cli(["run", "--config", "latin1.toml"], capsys))
    assert "latin1.toml" in line


def test_plugins_json_lists_first_party_plugins(capsys):
    code, out, err = run_cli(["plugins", "--json"], capsys)
    assert code == 0
    plugins = {p["name"]: p for p in json.loads(out)}
    assert FIRST_PARTY <= set(plugins)
    for name in FIRST_PARTY:
        assert plugins[name]["distribution"] == "medfm"
        assert plugins[name]["errors"] == [] and plugins[name]["blocked"] is False
        assert plugins[name]["specs"], name
    assert {"kind": "protocol", "name": "knn"} in plugins["knn"]["specs"]


def test_list_backbones_json_includes_params(capsys):
    code, out, err = run_cli(["list", "backbones", "--json"], capsys)
    assert code == 0
    entries = {e["name"]: e for e in json.loads(out)}
    lite = entries["efficientnet_lite0.in1k"]
    assert isinstance(lite["params"], int) and lite["params"] > 1_000_000
    assert lite["input_size"] > 0 and "load" not in lite
    assert any(e.get("kind") == "backbone" and e["name"].endswith("<name>") for e in entries.values())


def test_list_with_pattern_filters(capsys):
    code, out, _ = run_cli(["list", "protocols", "kn*", "--json"], capsys)
    assert code == 0
    assert [e["name"] for e in json.loads(out)] == ["knn"]


def test_blocked_plugin_disappears_from_listing(capsys, monkeypatch):
    monkeypatch.setenv("MEDFM_BLOCK_PLUGINS", "knn")
    code, out, _ = run_cli(["list", "protocols", "--json"], capsys)
    names = [e["name"] for e in json.loads(out)]
    assert code == 0 and "knn" not in names and "linear_probe" in names
    code, out, _ = run_cli(["plugins", "--json"], capsys)
    assert {p["name"]: p for p in json.loads(out)}["knn"]["blocked"] is True


@pytest.mark.parametrize(
    "args,needle",
    [
        (["run", "--bogus"], "No such option: --bogus"),
        (["lst"], "Did you mean 'list'?"),
        (["run", "--seed", "abc"], "--seed"),
        (["plot", "few-shot", "--bogus"], "No such option"),
    ],
)
def test_usage_errors_are_click_messages_not_tracebacks(capsys, args, needle):
    code, out, err = run_cli(args, capsys)
    assert code == 2 and "Traceback" not in out + err
    assert needle in err


@pytest.mark.parametrize(
    "setting,needle",
    [
        ("protocol.linear_probe.epoch=5", "unknown option 'epoch'; did you mean 'epochs'?"),
        ("protocol.linear_probe.epochs=abc", "option 'epochs' must be an integer, not 'abc'"),
        ("protocol.knn.k_grid=[1,2.5]", "option 'k_grid' must be a list of integers"),
    ],
)
def test_bad_protocol_options_stop_the_run_before_anything_runs(capsys, tmp_path, setting, needle):
    line = assert_one_line_user_error(
        *run_cli(
            [
                "run",
                "-b",
                "random/test_vit@64",
                "-d",
                "synthetic/cxr-nodules",
                "-p",
                "knn",
                "-p",
                "linear_probe",
                "--set",
                setting,
            ],
            capsys,
        )
    )
    assert needle in line
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_leaderboard_and_validate_refuse_missing_or_empty_folders(capsys, tmp_path):
    (tmp_path / "leaderboard.md").write_text("keep me")
    line = assert_one_line_user_error(*run_cli(["leaderboard", "--results", "reslts"], capsys))
    assert "reslts" in line and "no such results folder" in line
    assert (tmp_path / "leaderboard.md").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert "nothing to validate" in assert_one_line_user_error(*run_cli(["validate", "empty"], capsys))
    assert "no such record file or folder" in assert_one_line_user_error(*run_cli(["validate", "nope"], capsys))


def test_leaderboard_check_fails_on_an_invalid_record(capsys, tmp_path):
    (tmp_path / "results" / "b" / "d" / "knn").mkdir(parents=True)
    (tmp_path / "results" / "b" / "d" / "knn" / "tester.seed0.json").write_text("{not json")
    code, out, err = run_cli(["leaderboard", "--check"], capsys)
    assert code == 1 and "invalid record" in err
