"""Discovery through real entry points: broken third-party plugins are reported, not fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medfm.device import autocast, pin_memory, select_device
from medfm.errors import UserError
from medfm.plugins import load_entry_point_plugins, make_plugin_manager
from medfm.registry import Registry


def _fake_distribution(root: Path, name: str, entry_points: str, modules: dict[str, str]) -> Path:
    """A minimal installed distribution (dist-info with entry points) on a path of its own."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[medfm]\n{entry_points}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source)
    return root


@pytest.fixture
def broken_plugins(tmp_path: Path, monkeypatch) -> Path:
    root = _fake_distribution(
        tmp_path / "site",
        "broken-medfm-plugins",
        "import_fails = broken_import_module\nraises_in_hook = raising_hook_module\n",
        {
            "broken_import_module": "import no_such_dependency_xyz\n",
            "raising_hook_module": "from medfm import hookimpl\n\n@hookimpl\ndef register_backbones(register):\n"
            "    raise RuntimeError('weights server unreachable')\n",
        },
    )
    monkeypatch.syspath_prepend(str(root))
    return root


def test_broken_plugins_are_reported_by_name_and_others_still_load(broken_plugins):
    pm = make_plugin_manager()
    infos = load_entry_point_plugins(pm)
    registry = Registry.from_plugin_manager(pm, infos)
    errors = "\n".join(registry.load_errors)
    assert "'import_fails'" in errors and "no_such_dependency_xyz" in errors
    assert "'raises_in_hook'" in errors and "weights server unreachable" in errors
    # first-party plugins are unaffected
    assert "knn" in registry.names("protocol")
    assert registry.get("backbone", "efficientnet_lite0.in1k").params > 0
    broken = {p.name: p for p in registry.plugins}["import_fails"]
    assert broken.distribution == "broken-medfm-plugins"


def test_cli_reports_broken_plugins_and_keeps_working(broken_plugins, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(broken_plugins)}
    exe = str(Path(sys.executable).parent / "medfm")
    listed = subprocess.run([exe, "plugins", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 1, listed.stderr  # a plugin that failed to load is a failure of `plugins`
    by_name = {p["name"]: p for p in json.loads(listed.stdout)}
    assert by_name["import_fails"]["errors"] and not by_name["knn"]["errors"]
    table = subprocess.run([exe, "plugins"], capture_output=True, text=True, env=env, timeout=120)
    assert table.returncode == 1 and "2 plugin(s) failed to load" in table.stderr, table.stderr
    assert "import_fails" in table.stderr and "raises_in_hook" in table.stderr
    other = subprocess.run([exe, "list", "protocols"], capture_output=True, text=True, env=env, timeout=120)
    assert other.returncode == 0
    warnings = [line for line in other.stderr.splitlines() if line.startswith("warning:")]
    assert any("import_fails" in line for line in warnings) and any("raises_in_hook" in line for line in warnings)
    blocked = subprocess.run(
        [exe, "list", "protocols"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "MEDFM_BLOCK_PLUGINS": "import_fails,raises_in_hook"},
    )
    assert "warning" not in blocked.stderr
    healthy = subprocess.run(
        [exe, "plugins"], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""}
    )
    assert healthy.returncode == 0, healthy.stderr


def test_device_selection(monkeypatch):
    assert select_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto").type in ("cpu", "mps")
    with pytest.raises(UserError, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        select_device("tpu9")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto").type == "cuda"
    assert pin_memory(torch.device("cuda")) and not pin_memory(torch.device("cpu"))
    with autocast(torch.device("cpu")):
        assert not torch.is_autocast_enabled()
