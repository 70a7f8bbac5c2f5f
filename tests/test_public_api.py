"""The plugin-author API is the public modules, and nothing else.

First-party plugins, the example package and the benchmarks are written as an outside author
would write them: a ``medfm.*`` import from any other module fails here, as does a private
module of another plugin package (a helper two plugins share belongs in the public API).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import medfm

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {"medfm", "medfm.backbones", "medfm.datasets", "medfm.protocols", "medfm.api"}
AUTHORED_LIKE_OUTSIDERS = ["plugins", "examples", "benchmarks"]


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, names) of every import in a file."""
    try:
        package: str | None = ".".join(("medfm_plugins",) + path.relative_to(ROOT / "plugins").parent.parts)
    except ValueError:  # not under plugins/: relative imports are not a plugin's
        package = None
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                if package is None:
                    continue
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            found.append((node.lineno, module, [a.name for a in node.names]))
    return found


def _authored_files() -> list[Path]:
    return sorted(
        p for folder in AUTHORED_LIKE_OUTSIDERS for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts
    )


def _violations(path: Path) -> list[str]:
    bad = []
    own_package = path.parent
    for line, module, names in _imports(path):
        where = f"{path.relative_to(ROOT)}:{line}"
        if module == "medfm" or module.startswith("medfm."):
            if module not in PUBLIC:
                bad.append(f"{where}: imports {module} (internal); use {sorted(PUBLIC)}")
            elif module == "medfm":
                internal = [n for n in names if n not in medfm.__all__]
                if internal:
                    bad.append(f"{where}: imports the internal module(s) {internal} from medfm")
        elif module.startswith("medfm_plugins."):
            parts = module.split(".")
            private = [p for p in parts[1:] if p.startswith("_")]
            same_package = len(parts) > 2 and ROOT / "plugins" / Path(*parts[1:-1]) == own_package
            if private and not same_package:
                bad.append(f"{where}: imports {module}, a private module of another plugin package")
    return bad


def test_outsider_code_imports_only_the_public_modules():
    files = _authored_files()
    assert len(files) > 40  # the scan sees the plugins, the example and the benchmarks
    bad = [v for f in files for v in _violations(f)]
    assert not bad, "\n".join(bad)


def test_the_boundary_check_catches_an_internal_import(tmp_path, monkeypatch):
    probe = tmp_path / "plugins" / "datasets" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "from medfm.filesets import build_dataset\n"
        "from medfm import records\n"
        "from medfm.datasets import Sample\n"
        "from medfm_plugins.protocols._heads import HeadStack\n"
        "from ._own_helper import x\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    bad = _violations(probe)
    assert len(bad) == 3, bad
    assert "medfm.filesets" in bad[0] and "records" in bad[1] and "_heads" in bad[2]


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_name_resolves(module):
    mod = __import__(module, fromlist=["__all__"])
    assert mod.__all__, module
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"{module} lists names it cannot provide: {missing}"
    assert len(set(mod.__all__)) == len(mod.__all__)


def test_importing_the_public_modules_loads_no_heavy_library():
    code = (
        "import sys, medfm, medfm.backbones, medfm.datasets, medfm.protocols, medfm.api\n"
        "from medfm import BackboneSpec, DatasetSpec, ProtocolSpec, hookimpl, Preprocessing, Backbone\n"
        "from medfm.datasets import Sample, build_dataset, read_table\n"
        "from medfm.backbones import check_options, load_state_dict\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'scipy', 'timm', 'transformers') if m in sys.modules))\n"
    )
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert got == "[]", got


def test_a_clone_named_medfm_in_the_working_folder_does_not_shadow_the_package(tmp_path):
    """The README installs in setuptools' strict editable mode: the package is a real folder on
    ``sys.path``, which a folder named ``medfm`` in the working directory (a clone, without an
    ``__init__.py``) cannot shadow as a namespace package."""
    clone = tmp_path / "medfm"
    (clone / "harness").mkdir(parents=True)
    (clone / "README.md").write_text("a clone of the repository\n")
    code = "from medfm import BackboneSpec; import medfm; print(medfm.__file__)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert str(clone) not in run.stdout
