"""The documentation stays true to the code.

- Every name of the five public modules resolves, has a docstring (functions and classes) and
  a ``### `name` `` entry under its module's section of ``docs/api.md``; ``docs/api.md``
  documents no name that is not exported (stale entries fail too).
- The data set and protocol plugins of ``docs/plugins.md`` are complete and working: their
  code blocks (marked ``# docs-example: <kind>`` on their first line) are written out as
  modules, registered on a plugin manager and run, the data set on real PNG files and the
  protocol end to end in a small ``Runner`` run with a randomly initialised backbone.
- Paths of the repository that these three docs name exist.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PUBLIC = ("medfm", "medfm.backbones", "medfm.datasets", "medfm.protocols", "medfm.api")
#: what a plugin example may import (``medfm.api`` is for scripts and tests)
PLUGIN_MODULES = {"medfm", "medfm.backbones", "medfm.datasets", "medfm.protocols"}
SECTION = re.compile(r"^## (\S+)\s*$")
ENTRY = re.compile(r"^### `([^`]+)`\s*$")
EXAMPLE = re.compile(r"^```python\n(# docs-example: ([\w-]+)\n.*?)^```\s*$", re.S | re.M)
EXAMPLE_KINDS = ("dataset", "protocol")
BACKBONE = "random/test_vit@64"  # a tiny timm ViT, randomly initialised
CLASS_FOLDERS = ("normal", "abnormal")  # the layout the data set example documents


def _module(name: str):
    return importlib.import_module(name)


def api_sections() -> dict[str, list[str]]:
    """``{module: [documented names in order]}`` from the ``##`` / ``###`` headings of docs/api.md."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    in_fence = False
    for number, line in enumerate((DOCS / "api.md").read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        section = SECTION.match(line)
        if section:
            current = section.group(1)
            assert current not in sections, f"docs/api.md line {number}: a second section for {current}"
            sections[current] = []
            continue
        entry = ENTRY.match(line)
        if entry:
            assert current is not None, f"docs/api.md line {number}: `{entry.group(1)}` before any module section"
            sections[current].append(entry.group(1))
    return sections


def own_docstring(obj: object) -> str:
    """The object's own docstring: not inherited, not the signature dataclasses put there."""
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj):
        if not vars(obj).get("__doc__"):
            return ""
        if dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
            return ""
    return doc.strip()


# ------------------------------------------------------------------ docs/api.md
@pytest.mark.parametrize("module", PUBLIC)
def test_every_public_name_resolves(module):
    mod = _module(module)
    broken = []
    for name in mod.__all__:
        try:
            getattr(mod, name)
        except Exception as exc:  # a lazy name pointing at a module that lacks it
            broken.append(f"{name} ({type(exc).__name__}: {exc})")
    assert not broken, f"{module}.__all__ lists names that do not resolve: {broken}"


@pytest.mark.parametrize("module", PUBLIC)
def test_every_public_function_and_class_has_a_docstring(module):
    mod = _module(module)
    undocumented = [
        name
        for name in mod.__all__
        if (inspect.isfunction(getattr(mod, name)) or inspect.isclass(getattr(mod, name)))
        and not own_docstring(getattr(mod, name))
    ]
    assert not undocumented, f"public functions/classes of {module} without a docstring: {undocumented}"


@pytest.mark.parametrize("module", PUBLIC)
def test_every_public_name_is_documented_in_api_md(module):
    documented = set(api_sections().get(module, []))
    missing = [name for name in _module(module).__all__ if name not in documented]
    assert not missing, (
        f"docs/api.md has no ### `name` entry under '## {module}' for: {missing}; "
        "add one (what it is, when a plugin uses it) to that section"
    )


def test_api_md_documents_only_exported_names():
    sections = api_sections()
    unknown_sections = sorted(set(sections) - set(PUBLIC))
    assert not unknown_sections, f"docs/api.md has sections for modules that are not public: {unknown_sections}"
    stale = {
        module: [name for name in names if name not in _module(module).__all__] for module, names in sections.items()
    }
    stale = {module: names for module, names in stale.items() if names}
    assert not stale, f"docs/api.md documents names their module does not export (stale docs): {stale}"
    repeated = {module: sorted({n for n in names if names.count(n) > 1}) for module, names in sections.items()}
    repeated = {module: names for module, names in repeated.items() if names}
    assert not repeated, f"docs/api.md documents a name twice in one section: {repeated}"
    entries = (DOCS / "api.md").read_text(encoding="utf-8").split("\n### `")[1:]
    empty = [e.split("`", 1)[0] for e in entries if not e.split("\n", 1)[1].split("\n## ")[0].strip()]
    assert not empty, f"docs/api.md entries without a description: {empty}"


def test_the_checks_catch_an_undocumented_and_a_stale_name(tmp_path, monkeypatch):
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    edited = text.replace("### `build_dataset`\n", "### `build_datasets`\n", 1)
    assert edited != text
    (tmp_path / "api.md").write_text(edited, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "DOCS", tmp_path)
    with pytest.raises(AssertionError, match="build_dataset"):
        test_every_public_name_is_documented_in_api_md("medfm.datasets")
    with pytest.raises(AssertionError, match="build_datasets"):
        test_api_md_documents_only_exported_names()


# ------------------------------------------------------------------ docs/plugins.md examples
def plugin_examples() -> dict[str, str]:
    """``{kind: code}`` of the ``# docs-example: <kind>`` python blocks of docs/plugins.md."""
    found: dict[str, str] = {}
    for match in EXAMPLE.finditer((DOCS / "plugins.md").read_text(encoding="utf-8")):
        assert match.group(2) not in found, f"docs/plugins.md has two '# docs-example: {match.group(2)}' blocks"
        found[match.group(2)] = match.group(1)
    return found


def load_example(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The example written to ``tmp_path`` as a module and imported (removed again after the test)."""
    name = f"medfm_docs_example_{kind}"
    path = tmp_path / "examples" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plugin_examples()[kind], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def make_registry(*plugins):
    """A registry of the first-party timm families plus ``plugins``, as a plugin author tests one."""
    from medfm.api import Registry, make_plugin_manager

    pm = make_plugin_manager()
    pm.register(importlib.import_module("medfm_plugins.backbones.timm_family"), name="timm_family")
    for plugin in plugins:
        pm.register(plugin)
    registry = Registry.from_plugin_manager(pm)
    assert not registry.load_errors, registry.load_errors
    return registry


def registered(registry, plugin, kind: str) -> str:
    """The one name of ``kind`` that ``plugin`` registered."""
    info = next(p for p in registry.plugins if p.module == plugin.__name__)
    names = [n for k, n in info.specs if k == kind]
    assert len(names) == 1, f"the {kind} example should register one {kind}, it registered {names}"
    return names[0]


def write_images(root: Path, patients: int = 10, per_patient: int = 2) -> dict[str, str]:
    """Real PNG files in the documented layout, ``<root>/<class>/<patient>_<n>.png``.

    Mostly 8-bit grey, plus colour, 16-bit and odd-sized files (what a real folder holds);
    the abnormal class has a bright square. Returns ``{sample id: class folder}``.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    written = {}
    for c, folder in enumerate(CLASS_FOLDERS):
        (root / folder).mkdir(parents=True)
        for p in range(patients):
            for n in range(per_patient):
                size = (32, 32) if (p + n) % 3 else (40, 36)
                grey = rng.integers(0, 90, size, dtype=np.uint8)
                if c:
                    grey[8:24, 8:24] += 140
                if p == 0 and n == 0:
                    image = Image.fromarray(np.stack([grey, grey // 2, grey], -1))  # RGB
                elif p == 1 and n == 0:
                    image = Image.fromarray(grey.astype(np.uint16) * 257)  # 16-bit grey
                else:
                    image = Image.fromarray(grey)
                name = f"{folder}/pt{c}{p:02d}_{n}.png"
                image.save(root / name)
                written[name] = folder
    return written


@pytest.fixture
def cache_env(tmp_path, monkeypatch) -> Path:
    """Split files, image cache and verification cache under ``tmp_path``, not ``~/.cache``."""
    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "medfm-cache"))
    return tmp_path / "medfm-cache"


def test_plugins_md_has_both_examples_importing_only_public_modules():
    examples = plugin_examples()
    assert sorted(examples) == sorted(EXAMPLE_KINDS), f"docs/plugins.md examples: {sorted(examples)}"
    for kind, code in examples.items():
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "medfm":
                assert node.module in PLUGIN_MODULES, f"the {kind} example imports {node.module}"
                exported = _module(node.module).__all__
                assert all(a.name in exported for a in node.names), f"the {kind} example imports internal names"
            elif isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.split(".")[0] == "medfm" and a.name not in PLUGIN_MODULES]
                assert not bad, f"the {kind} example imports {bad}"
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    for kind in EXAMPLE_KINDS:
        after = text.split(f"# docs-example: {kind}\n", 1)[1]
        assert "[project.entry-points.medfm]" in after.split("\n## ", 1)[0], f"no entry-point snippet for {kind}"


def test_dataset_example_loads_a_folder_of_png_files(tmp_path, monkeypatch, cache_env):
    from medfm import Dataset, Preprocessing, UserError

    module = load_example("dataset", tmp_path, monkeypatch)
    registry = make_registry(module)
    spec = registry.get("dataset", registered(registry, module, "dataset"))
    files = write_images(tmp_path / "data")
    options = {"root": str(tmp_path / "data"), "image_cache": str(tmp_path / "images")}
    dataset = spec.load(spec, **options)
    assert isinstance(dataset, Dataset)
    assert dataset.task == spec.task == "binary"
    assert tuple(dataset.classes) == CLASS_FOLDERS
    assert set(dataset.split_names) == {"train", "val", "test"}
    seen: dict[str, str] = {}
    patients: dict[str, str] = {}
    for name in dataset.split_names:
        split = dataset.split(name)
        assert split.groups is not None, "the example groups images by patient"
        for sample_id, label, patient in zip(split.ids, split.labels.tolist(), split.groups.tolist()):
            assert sample_id not in seen, f"sample id {sample_id} repeats"
            seen[sample_id] = name
            assert CLASS_FOLDERS[label] == files[sample_id], f"{sample_id} has label {label}"
            assert patients.setdefault(patient, name) == name, f"patient {patient} is in two splits"
            assert sample_id.split("/", 1)[1].startswith(patient + "_")
    assert sorted(seen) == sorted(files), "every PNG file is one sample, keyed by its relative path"
    dataset.check_group_leaks()
    test = dataset.split("test")
    assert set(test.labels.tolist()) == {0, 1}
    preprocessing = Preprocessing(size=64)
    for i in range(len(test)):
        image = np.asarray(test.images[i])
        assert image.dtype == np.uint8 and image.ndim in (2, 3)
        assert tuple(preprocessing.to_uint8(image).shape) == (3, 64, 64)
    # a second load gives the same data and the same split (read back from the split file)
    again = spec.load(spec, **options)
    assert again.fingerprint == dataset.fingerprint
    assert list(again.split("test").ids) == list(test.ids)
    assert any(cache_env.rglob("*.json")), "the generated split is saved to a split file"
    with pytest.raises(UserError, match="unknown option"):
        spec.load(spec, **options, not_an_option=1)
    with pytest.raises(UserError, match="does not exist"):
        spec.load(spec, root=str(tmp_path / "nowhere"))


def test_protocol_example_runs_end_to_end(tmp_path, monkeypatch, cache_env, one_torch_thread):
    from medfm.api import RunConfig, Runner, load_record

    dataset_module = load_example("dataset", tmp_path, monkeypatch)
    protocol_module = load_example("protocol", tmp_path, monkeypatch)
    registry = make_registry(dataset_module, protocol_module)
    dataset = registered(registry, dataset_module, "dataset")
    protocol = registered(registry, protocol_module, "protocol")
    write_images(tmp_path / "data")
    config = RunConfig(
        backbones=[BACKBONE],
        datasets=[dataset],
        protocols=[protocol],
        results_dir=str(tmp_path / "results"),
        cache_dir=str(tmp_path / "features"),
        leaderboard=str(tmp_path / "leaderboard.md"),
        bootstrap=200,
        batch_size=16,
        device="cpu",
    )
    config.options["dataset"][dataset] = {"root": str(tmp_path / "data"), "image_cache": str(tmp_path / "images")}
    outcomes = Runner(registry, config).run()
    assert [o.status for o in outcomes] == ["ok"], [o.message for o in outcomes]
    record = load_record(outcomes[0].record_path, verify=True)  # every number recomputed from the predictions
    assert record["status"] == "ok"
    assert (record["backbone"]["name"], record["dataset"]["name"], record["protocol"]["name"]) == (
        BACKBONE,
        dataset,
        protocol,
    )
    assert record["protocol"]["version"] == registry.get("protocol", protocol).version
    assert record["config"]["protocol"]["options"] == dict(registry.get("protocol", protocol).defaults)
    assert record["ci"]["unit"] == "patient"
    assert record["test_set"]["n"] == record["dataset"]["split_sizes"]["test"]
    assert record["backbone"]["feature_kind"]
    assert record["primary_metric"] in record["metrics"]
    not_finite = {
        name: value
        for name, value in record["metrics"].items()
        if not all(isinstance(v, float) and math.isfinite(v) for v in value.values())
    }
    assert not not_finite, f"metrics that are not finite: {not_finite}"
    assert outcomes[0].record_path.with_name(outcomes[0].record_path.stem + ".predictions.npz").is_file()


# ------------------------------------------------------------------ paths named in the docs
def test_repository_paths_named_in_the_docs_exist():
    pattern = re.compile(r"(?<![\w/.])((?:harness|plugins|tests|examples|benchmarks)/[\w./-]*)")
    missing = []
    for name in ("api.md", "architecture.md", "plugins.md"):
        doc = DOCS / name
        for path in pattern.findall(doc.read_text(encoding="utf-8")):
            path = path.rstrip(".")
            if not (ROOT / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert not missing, f"the docs name paths that do not exist: {missing}"
