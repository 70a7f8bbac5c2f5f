"""The CLI answers at once: commands that print help, versions or listings import no heavy library.

Speed itself is measured in ``benchmarks/bench_cli.py``; here the cause is pinned down: which
modules a command imports. torch, scikit-learn and scipy take seconds to import, so a command
that lists specs or prints help must not load them (a plugin that does is a regression).
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

from medfm.console_events import OverallProgress, duration_text

HEAVY = ("torch", "torchvision", "timm", "sklearn", "scipy", "transformers", "open_clip", "datasets", "pydicom")

PROBE = """
import sys
from medfm.cli import main
try:
    main({argv!r})
except SystemExit as exc:
    code = exc.code
print("\\nHEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules))
print("CODE=" + str(code))
"""


def _run(argv: list[str]) -> tuple[str, str, int]:
    run = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True, timeout=300
    )
    assert "HEAVY=" in run.stdout, run.stderr
    body, _, tail = run.stdout.rpartition("\nHEAVY=")
    heavy, _, code = tail.partition("\nCODE=")
    return body, heavy.strip(), int(code.strip() or 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["list", "backbones"],
        ["list", "datasets"],
        ["list", "protocols"],
        ["plugins"],
        ["run", "--help"],
        ["cache", "info", "--json"],
    ],
    ids=lambda a: " ".join(a),
)
def test_command_imports_no_heavy_library(argv):
    out, heavy, code = _run(argv)
    assert code == 0, out
    assert heavy == "", f"`medfm {' '.join(argv)}` imported {heavy}"


def test_version_is_the_installed_distributions():
    out, _, code = _run(["--version"])
    assert code == 0 and out.strip() == f"medfm {importlib.metadata.version('medfm')}"


def test_shell_completion_is_offered():
    out, _, _ = _run(["--help"])
    assert "--install-completion" in out and "--show-completion" in out


def test_cache_info_json(tmp_path):
    (tmp_path / "features").mkdir()
    out, _, code = _run(["cache", "info", "--json", "--cache-dir", str(tmp_path)])
    info = json.loads(out)
    assert code == 0 and info["entries"] == 0 and info["bytes"] == 0 and str(tmp_path) in info["root"]


def test_overall_progress_counts_cells_and_estimates_from_cells_that_worked():
    now = [100.0]
    progress = OverallProgress(4, clock=lambda: now[0])
    assert progress.eta_seconds() is None and progress.line() == "0/4 cells, 0s elapsed"
    now[0] += 1
    progress.finished(0.01, did_work=False)  # up to date: says nothing about the pace
    assert progress.eta_seconds() is None
    now[0] += 30
    progress.finished(30.0, did_work=True)
    assert progress.eta_seconds() == pytest.approx(60.0)
    assert progress.line() == "2/4 cells, 31s elapsed, about 1m00s left"
    progress.finished(90.0, did_work=True)
    progress.finished(0.0, did_work=False)
    assert progress.eta_seconds() == 0.0 and progress.line().startswith("4/4 cells")
    assert duration_text(3725) == "1h02m" and duration_text(59.6) == "1m00s"


def test_run_json_prints_every_cell_outcome(tmp_path):
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "medfm")
    argv = [exe, "run", "-b", "random/test_vit@64", "-d", "synthetic/cxr-nodules", "-p", "knn", "--json",
            "--results", str(tmp_path / "r"), "--leaderboard", str(tmp_path / "lb.md"), "--cache-dir",
            str(tmp_path / "c"), "--set", "dataset.synthetic/cxr-nodules.patients=40",
            "--set", "dataset.synthetic/cxr-nodules.size=64"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (cell,) = json.loads(done.stdout)  # stdout holds only the JSON; progress goes to stderr
    assert (cell["backbone"], cell["protocol"], cell["status"], cell["metric"]) == (
        "random/test_vit@64", "knn", "ok", "auroc")  # fmt: skip
    assert cell["ci_low"] <= cell["value"] <= cell["ci_high"] and Path(cell["record"]).is_file()
    assert "1/1 cells" in done.stderr
