"""Submissions: who wrote a record, where it lives, that two contributors never collide, that
records are portable, that writers never interleave, and the paired comparison and reproduction
commands that sit on top."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from protocol_support import feature_task, run_config
from record_support import binary_predictions, make_record, write_submission

from medfm import ProtocolSpec, UserError, hookimpl
from medfm.cli import main
from medfm.config import RunConfig
from medfm.paired import holm, metric_draws, paired_difference, resampling_weights
from medfm.portable import absolute_paths_in
from medfm.records import cell_paths, load_record, read_predictions, write_result
from medfm.runner import Runner
from medfm.submission import check_submitter, resolve_submitter, slug
from medfm.verification import verify_file


# ------------------------------------------------------------------ who submits
def test_submitter_comes_from_the_flag_the_environment_or_git(monkeypatch):
    assert resolve_submitter("jane-doe") == "jane-doe"
    monkeypatch.setenv("MEDFM_SUBMITTER", "lab-7")
    assert resolve_submitter(None) == "lab-7"
    monkeypatch.delenv("MEDFM_SUBMITTER")
    monkeypatch.setattr("medfm.submission._git", lambda *a, **k: "Jane Q. Doe")
    assert resolve_submitter(None) == "jane-q-doe"
    assert slug("  Ünïcode Näme ") == "n-code-n-me" and slug("***") == ""
    for bad in ("Jane", "a.b", "-x", "x" * 65, "evil/../x"):
        with pytest.raises(UserError, match="lower-case letters"):
            check_submitter(bad)


# ------------------------------------------------------------------ two contributors
def _git(*args, cwd):
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


MERGE = feature_task("merge", "binary", 2, margin=1.5)


def _run(registry_factory, root: Path, submitter: str, seed: int) -> list:
    cfg = run_config(root, MERGE, ["knn"], bootstrap=1000, seed=seed)
    cfg.submitter = submitter
    return Runner(registry_factory(MERGE), cfg).run()


def test_two_contributors_of_the_same_cells_merge_without_conflict_and_are_both_shown(
    registry_factory, tmp_path, monkeypatch, capsys
):
    origin = tmp_path / "origin"
    origin.mkdir()
    _git("init", "-q", "-b", "main", cwd=origin)
    _run(registry_factory, origin, "medfm", 0)  # the maintainers' record of the cell
    _git("add", "results", cwd=origin)
    _git("commit", "-q", "-m", "maintainers", cwd=origin)
    first_party = sorted(
        p.relative_to(origin).as_posix()
        for p in (origin / "results").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    before = {p: (origin / p).read_bytes() for p in first_party}
    clones = {}
    for who, seed in (("alice", 0), ("bob", 1)):
        clone = tmp_path / who
        _git("clone", "-q", str(origin), str(clone), cwd=tmp_path)
        _git("checkout", "-q", "-b", who, cwd=clone)
        assert all(o.status == "ok" for o in _run(registry_factory, clone, who, seed))
        _git("add", "results", cwd=clone)
        _git("commit", "-q", "-m", f"{who}'s submission", cwd=clone)
        clones[who] = clone
    _git("pull", "-q", "--no-rebase", "--no-edit", str(clones["alice"]), "alice", cwd=origin)
    _git("pull", "-q", "--no-rebase", "--no-edit", str(clones["bob"]), "bob", cwd=origin)  # no conflict
    assert {p: (origin / p).read_bytes() for p in first_party} == before  # nobody overwrote the maintainers
    folder = cell_paths(origin / "results", MERGE.backbone, MERGE.dataset, "knn", "x", 0).record.parent
    assert sorted(p.name for p in folder.glob("*.json")) == ["alice.seed0.json", "bob.seed1.json", "medfm.seed0.json"]
    monkeypatch.chdir(origin)
    with pytest.raises(SystemExit) as done:
        main(["leaderboard", "--results", "results", "--file", "leaderboard.md", "--json"])
    assert done.value.code == 0
    assert "(n=3)" in (origin / "leaderboard.md").read_text()
    board = json.loads(capsys.readouterr().out)
    cells = [c for t in board["tables"] for b in t["blocks"] for r in b["rows"] for c in r["cells"].values()]
    assert len(cells) == 1 and cells[0]["n"] == 3  # three replicates of one cell, all shown
    assert cells[0]["submitters"] == ["alice", "bob", "medfm"] and sorted(cells[0]["seeds"]) == [0, 0, 1]


# ------------------------------------------------------------------ portable records
def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(16):
            Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(root / cls / f"p{i}_{cls}.png")
    return root


def test_records_hold_no_local_paths_and_hash_the_same_on_every_machine(registry_factory, tmp_path):
    hashes = []
    for machine in ("machine-a/deep/layout", "machine-b"):
        base = tmp_path / machine
        data = _image_folder(base / "images")
        cfg = RunConfig(
            backbones=["random/test_resnet@64"],
            datasets=["folder/binary/toy"],
            protocols=["knn"],
            results_dir=str(base / "results"),
            cache_dir=str(base / "cache"),
            leaderboard=str(base / "lb.md"),
            bootstrap=100,
            device="cpu",
        )
        cfg.options["dataset"]["folder/binary/toy"] = {"root": str(data), "split_dir": str(base / "splits")}
        cfg.options["protocol"]["knn"] = {"k_grid": [3]}
        outcome = Runner(registry_factory(), cfg).run()[0]
        assert outcome.status == "ok", outcome.message
        record = load_record(outcome.record_path, verify=True)
        text = outcome.record_path.read_text()
        assert absolute_paths_in(record) == [] and str(tmp_path) not in text and machine not in text
        assert record["config"]["dataset"]["options"]["root"].startswith(("$WORKDIR", "<local>/"))
        hashes.append(record["config_hash"])
    assert hashes[0] == hashes[1]


# ------------------------------------------------------------------ concurrent writers
def _writer(root: str, value: int, rounds: int) -> None:
    preds = binary_predictions(strength=0.1 + 0.05 * value, seed=value)
    paths = cell_paths(root, "timm/net", "synthetic/cxr-nodules", "knn", "alice", 0)
    for _ in range(rounds):
        record = make_record(preds, options={"k": value}, resamples=200)
        write_result(paths, record, preds)


def test_concurrent_writers_of_one_submission_leave_a_record_that_matches_its_predictions(tmp_path):
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), v, 15)) for v in (1, 2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    path = cell_paths(tmp_path, "timm/net", "synthetic/cxr-nodules", "knn", "alice", 0).record
    checked = verify_file(path, tmp_path)
    assert checked.valid, checked.problem
    k = checked.record["config"]["protocol"]["options"]["k"]
    expected = binary_predictions(strength=0.1 + 0.05 * k, seed=k)
    np.testing.assert_allclose(
        read_predictions(path.with_name("alice.seed0.predictions.npz")).scores, expected.scores, atol=1e-6
    )


def test_two_runs_of_one_cell_with_different_options_at_once(tmp_path):
    """Two ``medfm run`` processes write the same submission with different options concurrently."""
    exe = Path(sys.executable).parent / "medfm"
    common = [
        "run",
        "-b",
        "random/test_vit@64",
        "-d",
        "synthetic/cxr-nodules",
        "-p",
        "knn",
        "--results",
        "results",
        "--cache-dir",
        "cache",
        "--bootstrap",
        "200",
        "--set",
        "dataset.synthetic/cxr-nodules.patients=30",
        "--set",
        "dataset.synthetic/cxr-nodules.size=64",
    ]
    warm = subprocess.run([str(exe), *common], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert warm.returncode == 0, warm.stderr
    procs = [
        subprocess.Popen(
            [str(exe), *common, "--rerun", "--set", f"protocol.knn.k_grid=[{k}]"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (3, 5)
    ]
    for p in procs:
        assert p.wait(600) == 0, p.stderr.read()
    record_path = next((tmp_path / "results").rglob("tester.seed0.json"))
    checked = verify_file(record_path, tmp_path / "results")
    assert checked.valid, checked.problem
    assert checked.record["config"]["protocol"]["options"]["k_grid"] in ([3], [5])
    assert not [p for p in (tmp_path / "results").rglob("*.tmp")]


# ------------------------------------------------------------------ medfm compare
def test_compare_prints_the_paired_difference_on_every_shared_cell(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    a1, b1 = binary_predictions(strength=0.35, seed=1), binary_predictions(strength=0.2, seed=2)
    a2, b2 = binary_predictions(n=150, strength=0.3, seed=3), binary_predictions(n=150, strength=0.28, seed=4)
    for name, p1, p2 in (("model-a", a1, a2), ("model-b", b1, b2)):
        write_submission(results, p1, backbone=name)
        write_submission(
            results,
            p2,
            backbone=name,
            dataset="medmnist/pneumoniamnist",
            dataset_revision="v2",
            classes=("normal", "pneumonia"),
        )
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["compare", "model-a", "model-b", "--results", "results", "--json"])
    assert done.value.code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["dataset"] for r in rows] == ["medmnist/pneumoniamnist", "synthetic/cxr-nodules"]
    for row, (pa, pb) in zip(rows, ((a2, b2), (a1, b1))):
        identity = __import__("medfm.test_set", fromlist=["x"]).split_identity(pa.ids, pa.labels)
        w = resampling_weights(identity, len(pa.ids), None)
        da = metric_draws("binary", "auroc", pa.labels, pa.scores.astype(np.float32).astype(float), w)
        db = metric_draws("binary", "auroc", pb.labels, pb.scores.astype(np.float32).astype(float), w)
        expected = paired_difference(row["value_a"], row["value_b"], da, db)
        assert row["difference"] == pytest.approx(row["value_a"] - row["value_b"], abs=1e-6)
        assert row["ci_low"] == pytest.approx(expected.ci_low, abs=1e-6) and row["p"] == pytest.approx(
            expected.p, abs=1e-6
        )
    assert [r["p_holm"] for r in rows] == pytest.approx(holm([r["p"] for r in rows]), abs=3e-6)
    with pytest.raises(SystemExit):
        main(["compare", "model-a", "nobody", "--results", "results"])
    assert "share no ranked cell" in capsys.readouterr().err


def test_holm_adjustment():
    # Holm (1979): sorted p (0.01, 0.02, 0.03, 0.04) with m = 4 -> 0.04, 0.06, 0.06, 0.06
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, float("nan")])[0] == 0.5


# ------------------------------------------------------------------ medfm verify
class NoisyKnn:
    """A protocol that, like a forger, reports scores the backbone did not produce."""

    plugin_name = "noisy"

    @hookimpl
    def register_protocols(self, register):
        from medfm import ProtocolOutput

        def run(ctx):
            test = ctx.split("test")
            p = np.asarray(test.labels) * 0.8 + 0.1
            return ProtocolOutput(ids=test.ids, scores=np.c_[1 - p, p])

        register(ProtocolSpec(name="knn", run=run, version="2"))


def test_verify_reruns_a_sample_and_catches_a_record_that_does_not_reproduce(
    registry_factory, tmp_path, monkeypatch, capsys
):
    from medfm import cli

    cfg = RunConfig(
        backbones=["random/test_vit@64"],
        datasets=["synthetic/cxr-nodules"],
        protocols=["knn"],
        results_dir=str(tmp_path / "results"),
        cache_dir=str(tmp_path / "cache"),
        leaderboard=str(tmp_path / "lb.md"),
        bootstrap=200,
        device="cpu",
    )
    cfg.options["dataset"]["synthetic/cxr-nodules"] = {"patients": 30, "size": 64}
    assert Runner(registry_factory(), cfg).run()[0].status == "ok"
    # a second submitter's record of the same cell, made by a protocol that invented its scores
    cfg.submitter = "mallory"
    forged_registry = registry_factory(NoisyKnn())
    forged_registry.entries["protocol"]["knn"] = forged_registry.clashes[("protocol", "knn")][1]
    forged_registry.duplicates.clear()
    assert Runner(forged_registry, cfg).run()[0].status == "ok"
    monkeypatch.setattr(cli, "_registry", lambda warn=True: registry_factory())
    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "cache"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["verify", "--sample", "2", "--results", str(tmp_path / "results"), "--json", "--device", "cpu"])
    assert done.value.code == 1  # one of the two did not reproduce
    outcomes = {r["record"].split("/")[-1]: r for r in json.loads(capsys.readouterr().out)}
    assert outcomes["tester.seed0.json"]["status"] == "reproduced"
    assert all(m["ok"] for m in outcomes["tester.seed0.json"]["metrics"])
    assert outcomes["mallory.seed0.json"]["status"] == "differs"
    assert any(not m["ok"] for m in outcomes["mallory.seed0.json"]["metrics"])


def test_verify_skips_cells_whose_plugins_or_data_are_not_here(tmp_path, monkeypatch, capsys):
    write_submission(tmp_path / "results", binary_predictions(), backbone="not-installed/model")
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["verify", "--sample", "1", "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert done.value.code == 0 and "unavailable" in err and "only 0 of the 1 requested" in err


def test_portable_paths_name_a_root_or_only_the_file(tmp_path):
    from medfm.portable import hash_view, local_path, portable

    roots = {"WORKDIR": tmp_path / "project", "CACHE": tmp_path / "cache", "HOME": tmp_path}
    record = {
        "root": str(tmp_path / "project" / "data" / "x"),
        "split_file": str(tmp_path / "cache" / "s.json"),
        "weights": "/srv/weights/model.safetensors",
        "home": str(tmp_path / "notes"),
        "message": f"could not read {tmp_path}/project/a.png (see https://example.org/a/b)",
        "name": "timm/vit_small",
        "id": "test/0",
    }
    out = portable(record, roots)
    assert out == {
        "root": "$WORKDIR/data/x",
        "split_file": "$CACHE/s.json",
        "weights": "<local>/model.safetensors",
        "home": "$HOME/notes",
        "message": "could not read $WORKDIR/a.png (see https://example.org/a/b)",
        "name": "timm/vit_small",
        "id": "test/0",
    }
    assert local_path(out["root"], roots) == tmp_path / "project" / "data" / "x"
    assert local_path(out["weights"], roots) is None
    assert hash_view({"root": "/a", "weights": "b.pt", "k": [1], "name": "x"}) == hash_view(
        {"root": "/elsewhere", "weights": "c.pt", "k": [1], "name": "x"}
    )
    assert hash_view({"k": [1]}) != hash_view({"k": [2]})


def test_regular_expressions_in_a_record_are_kept_as_written():
    from medfm.portable import absolute_paths_in, portable

    roots = {"HOME": Path("/home/alice"), "WORKDIR": Path("/home/alice/study")}
    record = {
        "config": {"dataset": {"options": {"group_regex": r"^[^/]+/([^/]+)/", "root": "/home/alice/study/data"}}},
        "dataset": {"info": {"grouped_by": r"/scans/(\d+)/", "note": "read /home/alice/study/data/a.png"}},
    }
    out = portable(record, roots)
    assert out["config"]["dataset"]["options"]["group_regex"] == r"^[^/]+/([^/]+)/"
    assert out["dataset"]["info"]["grouped_by"] == r"/scans/(\d+)/"
    assert out["config"]["dataset"]["options"]["root"] == "$WORKDIR/data"  # paths are still made portable
    assert out["dataset"]["info"]["note"] == "read $WORKDIR/data/a.png"
    assert absolute_paths_in(out) == []
