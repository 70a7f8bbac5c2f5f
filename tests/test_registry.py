"""Registry and plugin discovery: provenance, isolation of broken plugins, duplicates, lookups."""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import itertools
import re
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

import medfm
import medfm.plugins as medfm_plugins_mod
from medfm import hookspecs
from medfm.errors import DuplicateSpecError, UnknownNameError, UserError
from medfm.plugins import BLOCK_ENV, load_entry_point_plugins, make_plugin_manager
from medfm.registry import Registry

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"timm", "medmnist", "knn", "linear_probe", "synthetic_cxr", "efficientnet_lite", "torchvision"}
_counter = itertools.count()


# ------------------------------------------------------------------ helpers
class LoadCalled(AssertionError):
    """Raised by factories that listing must never call."""


def _forbidden_load(spec, **options):
    raise LoadCalled(f"load() of {spec.name!r} was called")


def _never_run(ctx):
    raise LoadCalled("protocol run() was called")


def backbone(name: str, **kw) -> medfm.BackboneSpec:
    return medfm.BackboneSpec(name=name, load=_forbidden_load, **kw)


def dataset(name: str, **kw) -> medfm.DatasetSpec:
    return medfm.DatasetSpec(name=name, load=_forbidden_load, **kw)


def protocol(name: str, **kw) -> medfm.ProtocolSpec:
    return medfm.ProtocolSpec(name=name, run=_never_run, **kw)


class Plugin:
    """A test plugin registering the given specs from the matching hooks."""

    def __init__(self, backbones=(), datasets=(), protocols=(), raise_in=None, raise_after=0):
        self.backbones, self.datasets, self.protocols = list(backbones), list(datasets), list(protocols)
        self.raise_in, self.raise_after = raise_in, raise_after

    def _emit(self, hook, specs, register):
        for i, spec in enumerate(specs):
            if self.raise_in == hook and i == self.raise_after:
                raise RuntimeError(f"kaboom in {hook}")
            register(spec)
        if self.raise_in == hook and self.raise_after >= len(specs):
            raise RuntimeError(f"kaboom in {hook}")

    @medfm.hookimpl
    def register_backbones(self, register):
        self._emit("register_backbones", self.backbones, register)

    @medfm.hookimpl
    def register_datasets(self, register):
        self._emit("register_datasets", self.datasets, register)

    @medfm.hookimpl
    def register_protocols(self, register):
        self._emit("register_protocols", self.protocols, register)


def build(**plugins) -> Registry:
    pm = make_plugin_manager()
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    return Registry.from_plugin_manager(pm)


def errors_of(registry: Registry, plugin_name: str) -> list[str]:
    return next(p.errors for p in registry.plugins if p.name == plugin_name)


# ------------------------------------------------------------------ registration and provenance
def test_specs_are_registered_with_provenance():
    registry = build(
        alpha=Plugin(backbones=[backbone("net-a"), backbone("net-b")], protocols=[protocol("probe")]),
        beta=Plugin(datasets=[dataset("data/x")]),
    )
    assert registry.names("backbone") == ["net-a", "net-b"]
    assert registry.names("dataset") == ["data/x"]
    assert registry.names("protocol") == ["probe"]
    assert registry.provenance("backbone", "net-a").name == "alpha"
    assert registry.provenance("protocol", "probe").name == "alpha"
    assert registry.provenance("dataset", "data/x").name == "beta"
    assert registry.provenance("backbone", "unknown") is None
    alpha = next(p for p in registry.plugins if p.name == "alpha")
    assert sorted(alpha.specs) == [("backbone", "net-a"), ("backbone", "net-b"), ("protocol", "probe")]
    assert registry.load_errors == []
    registry.check_duplicates()  # no duplicates: must not raise


@pytest.mark.parametrize("broken_first", [True, False])
def test_raising_hook_is_recorded_and_does_not_hide_other_plugins(broken_first):
    good = Plugin(backbones=[backbone("good-net")], datasets=[dataset("good-data")])
    broken = Plugin(
        backbones=[backbone("half-net"), backbone("never-net")],
        raise_in="register_backbones",
        raise_after=1,
        datasets=[dataset("broken-data")],
    )
    plugins = {"broken": broken, "good": good} if broken_first else {"good": good, "broken": broken}
    registry = build(**plugins)
    # the good plugin's specs are all there, whatever the order
    assert "good-net" in registry.names("backbone")
    assert "good-data" in registry.names("dataset")
    # the broken plugin's other hooks still ran; specs after the exception were never registered
    assert "broken-data" in registry.names("dataset")
    assert "never-net" not in registry.names("backbone")
    errors = [e for e in registry.load_errors if "kaboom" in e]
    assert len(errors) == 1
    assert "'broken'" in errors[0] and "register_backbones" in errors[0] and "RuntimeError" in errors[0]
    assert "\n" not in errors[0]
    assert errors_of(registry, "good") == []


def test_duplicate_names_across_plugins_name_both_and_check_raises():
    registry = build(
        alpha=Plugin(backbones=[backbone("same-net"), backbone("only-alpha")]),
        beta=Plugin(backbones=[backbone("same-net")]),
    )
    assert len(registry.duplicates) == 1
    message = registry.duplicates[0]
    assert "same-net" in message and "'alpha'" in message and "'beta'" in message
    assert any("same-net" in e for e in registry.load_errors)
    assert "only-alpha" in registry.names("backbone")
    with pytest.raises(DuplicateSpecError) as info:
        registry.check_duplicates()
    assert isinstance(info.value, UserError)
    assert "alpha" in str(info.value) and "beta" in str(info.value)


def test_duplicate_family_prefix_is_a_duplicate():
    fam = lambda: medfm.BackboneFamily("fam/", lambda s: backbone("fam/" + s))  # noqa: E731
    registry = build(alpha=Plugin(backbones=[fam()]), beta=Plugin(backbones=[fam()]))
    with pytest.raises(DuplicateSpecError, match="alpha.*beta|beta.*alpha"):
        registry.check_duplicates()
    assert len(registry.families["backbone"]) == 1


def test_same_name_in_different_kinds_is_not_a_duplicate():
    registry = build(alpha=Plugin(backbones=[backbone("thing")]), beta=Plugin(datasets=[dataset("thing")]))
    registry.check_duplicates()
    assert registry.get("backbone", "thing").name == registry.get("dataset", "thing").name == "thing"


def test_wrong_kind_registration_is_an_error_of_that_plugin():
    registry = build(
        sloppy=Plugin(backbones=[backbone("ok-net"), dataset("smuggled-data")]),
        other=Plugin(datasets=[dataset("fine-data")]),
    )
    assert "smuggled-data" not in registry.names("dataset")
    assert "fine-data" in registry.names("dataset")
    assert "ok-net" in registry.names("backbone")  # registered before the mistake
    errs = errors_of(registry, "sloppy")
    assert len(errs) == 1 and "register_backbones" in errs[0] and "dataset" in errs[0]
    assert errors_of(registry, "other") == []
    assert any(e.startswith("plugin 'sloppy'") for e in registry.load_errors)


def test_registering_a_non_spec_is_an_error():
    registry = build(weird=Plugin(protocols=["not a spec"]))
    assert registry.names("protocol") == []
    assert any("weird" in e and "TypeError" in e for e in registry.load_errors)


# ------------------------------------------------------------------ lookups
def test_unknown_name_suggests_close_match():
    registry = build(alpha=Plugin(backbones=[backbone("resnet50"), backbone("vit_small")]))
    with pytest.raises(UnknownNameError) as info:
        registry.get("backbone", "resnet05")
    message = str(info.value)
    assert "did you mean" in message and "'resnet50'" in message and "resnet05" in message
    assert isinstance(info.value, UserError) and isinstance(info.value, KeyError)
    # nothing close: says how to list the names instead
    with pytest.raises(UnknownNameError, match="medfm list backbones"):
        registry.get("backbone", "qqqqqqqqqq")


def test_glob_match_in_pattern_order_without_repeats():
    registry = build(alpha=Plugin(backbones=[backbone(n) for n in ("res18", "res50", "vit_s", "vit_b", "conv")]))
    got = [s.name for s in registry.match("backbone", ["vit*", "res*", "res50", "vit_?"])]
    assert got == ["vit_b", "vit_s", "res18", "res50"]
    assert [s.name for s in registry.match("backbone", ["[cr]*"])] == ["conv", "res18", "res50"]
    assert [s.name for s in registry.match("backbone", ["conv"])] == ["conv"]


def test_pattern_matching_nothing_is_a_user_error():
    registry = build(alpha=Plugin(backbones=[backbone("res18")]))
    with pytest.raises(UserError, match="zzz\\*.*matches nothing"):
        registry.match("backbone", ["res18", "zzz*"])
    with pytest.raises(UnknownNameError):
        registry.match("backbone", ["res81"])


def test_resolution_suffix_gives_input_size():
    registry = build(alpha=Plugin(backbones=[backbone("net", input_size=224, mean=(0.5, 0.5, 0.5), family="f")]))
    spec = registry.get("backbone", "net@448")
    assert spec.name == "net@448" and spec.input_size == 448
    assert (spec.mean, spec.family) == ((0.5, 0.5, 0.5), "f")
    assert registry.get("backbone", "net").input_size == 224  # the registered spec is untouched
    assert [s.input_size for s in registry.match("backbone", ["net@448", "net"])] == [448, 224]
    assert registry.provenance("backbone", "net@448").name == "alpha"
    with pytest.raises(UnknownNameError):
        registry.get("backbone", "other@448")


# ------------------------------------------------------------------ families
def test_family_resolves_on_demand_and_listing_never_loads():
    calls: list[str] = []

    def resolve(suffix):
        calls.append(suffix)
        if suffix not in ("small", "base"):
            raise KeyError(f"no member {suffix}")
        return backbone("fam/" + suffix, input_size=196)

    fam = medfm.BackboneFamily("fam/", resolve, candidates=lambda: ["small", "base"], description="a family")
    registry = build(
        alpha=Plugin(backbones=[fam, backbone("plain")], datasets=[dataset("d")], protocols=[protocol("p")])
    )
    # listing: names, specs, metadata, glob match, provenance never resolve members nor call load
    assert registry.names("backbone") == ["plain"]
    for kind in ("backbone", "dataset", "protocol"):
        for spec in registry.specs(kind):
            spec.metadata()
    assert [f.spec.metadata()["name"] for f in registry.families["backbone"]] == ["fam/<name>"]
    assert [s.name for s in registry.match("backbone", ["*"])] == ["plain"]
    assert registry.provenance("backbone", "fam/small").name == "alpha"
    assert calls == []
    # resolving a member calls resolve with the suffix only, and still not load
    spec = registry.get("backbone", "fam/small")
    assert spec.name == "fam/small" and calls == ["small"]
    big = registry.get("backbone", "fam/base@448")
    assert big.name == "fam/base@448" and big.input_size == 448
    # an unknown member is a user error with a suggestion from candidates()
    with pytest.raises(UnknownNameError) as info:
        registry.get("backbone", "fam/smal")
    assert "fam/small" in str(info.value)
    with pytest.raises(UnknownNameError):
        registry.get("backbone", "fam/")


def test_family_of_the_wrong_kind_is_rejected():
    fam = medfm.DatasetFamily("dfam/", lambda s: dataset("dfam/" + s))
    registry = build(alpha=Plugin(backbones=[fam]))
    assert registry.families["backbone"] == [] and registry.families["dataset"] == []
    assert any("alpha" in e and "register_backbones" in e for e in registry.load_errors)


# ------------------------------------------------------------------ entry-point discovery
def _fake_entry_points(monkeypatch, tmp_path, modules: dict[str, str], names: list[tuple[str, str]]):
    """Make ``medfm.plugins`` see the given (entry-point name, module) pairs; write the modules."""
    suffix = next(_counter)
    mapping = {}
    for mod, source in modules.items():
        real = f"medfm_test_ep_{mod}_{suffix}"
        (tmp_path / f"{real}.py").write_text(textwrap.dedent(source))
        mapping[mod] = real
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [importlib_metadata.EntryPoint(name, mapping.get(mod, mod), "medfm") for name, mod in names]
    fake = SimpleNamespace(entry_points=lambda group: [e for e in eps if e.group == group])
    monkeypatch.setattr(medfm_plugins_mod, "importlib_metadata", fake)


GOOD_MODULE = """
    from medfm import BackboneSpec, hookimpl
    def _load(spec, **kw):
        raise AssertionError("never")
    @hookimpl
    def register_backbones(register):
        register(BackboneSpec(name=__name__ + "-net", load=_load))
"""


def test_entry_point_import_failure_is_recorded(monkeypatch, tmp_path):
    _fake_entry_points(
        monkeypatch,
        tmp_path,
        {"good": GOOD_MODULE, "bad": "raise ImportError('no deps here')\n"},
        [("good", "good"), ("bad", "bad"), ("ghost", "medfm_no_such_module_xyz")],
    )
    pm = make_plugin_manager()
    infos = {i.name: i for i in load_entry_point_plugins(pm)}
    assert infos["good"].errors == []
    assert len(infos["bad"].errors) == 1 and "no deps here" in infos["bad"].errors[0]
    assert "ModuleNotFoundError" in infos["ghost"].errors[0]
    registry = Registry.from_plugin_manager(pm, infos.values())
    assert len(registry.names("backbone")) == 1
    assert registry.provenance("backbone", registry.names("backbone")[0]).name == "good"


def test_blocked_plugin_is_marked_and_not_loaded(monkeypatch, tmp_path):
    _fake_entry_points(monkeypatch, tmp_path, {"a": GOOD_MODULE, "b": GOOD_MODULE}, [("a", "a"), ("b", "b")])
    monkeypatch.setenv(BLOCK_ENV, " b , unrelated")
    pm = make_plugin_manager()
    infos = {i.name: i for i in load_entry_point_plugins(pm)}
    assert infos["b"].blocked and not infos["a"].blocked
    assert [pm.get_name(p) for p in pm.get_plugins()] == ["a"]
    registry = Registry.from_plugin_manager(pm, infos.values())
    assert len(registry.names("backbone")) == 1


TWIN_MODULE = """
    from medfm import BackboneSpec, hookimpl
    def _load(spec, **kw):
        raise AssertionError("never")
    @hookimpl
    def register_backbones(register):
        register(BackboneSpec(name="twin-net", load=_load, description=__name__))
"""


def test_two_entry_points_with_the_same_name(monkeypatch, tmp_path):
    _fake_entry_points(monkeypatch, tmp_path, {"a": TWIN_MODULE, "b": TWIN_MODULE}, [("twin", "a"), ("twin", "b")])
    pm = make_plugin_manager()
    infos = load_entry_point_plugins(pm)
    assert len(infos) == 2
    # the second is loaded under a qualified name, so that what it registers can clash visibly
    assert infos[0].name == "twin" and infos[1].name == "unknown:twin"
    assert infos[0].errors == [] == infos[1].errors and len(pm.get_plugins()) == 2
    registry = Registry.from_plugin_manager(pm, infos)
    with pytest.raises(DuplicateSpecError, match="--source backbone:twin-net="):
        registry.check_duplicates()
    with pytest.raises(UserError, match="provided by 'twin', 'unknown:twin'; name one of them"):
        registry.choose_sources({"backbone:twin-net": "nobody"})
    registry.choose_sources({"backbone:twin-net": "unknown:twin"})  # the run says which one to use
    registry.check_duplicates()
    assert registry.get("backbone", "twin-net").description.startswith("medfm_test_ep_b_")


MISSPELLED_A = """
    from medfm import hookimpl
    @hookimpl
    def register_backbone(register):
        pass
"""
MISSPELLED_B = """
    from medfm import hookimpl
    @hookimpl
    def register_dataset(register):
        pass
"""


def test_misspelled_hook_is_reported(monkeypatch, tmp_path):
    _fake_entry_points(monkeypatch, tmp_path, {"a": MISSPELLED_A, "g": GOOD_MODULE}, [("typo_a", "a"), ("g", "g")])
    pm = make_plugin_manager()
    infos = {i.name: i for i in load_entry_point_plugins(pm)}
    assert any("register_backbone" in e for e in infos["typo_a"].errors)
    assert infos["g"].errors == []


def test_every_misspelled_hook_is_reported(monkeypatch, tmp_path):
    _fake_entry_points(
        monkeypatch, tmp_path, {"a": MISSPELLED_A, "b": MISSPELLED_B}, [("typo_a", "a"), ("typo_b", "b")]
    )
    pm = make_plugin_manager()
    infos = {i.name: i for i in load_entry_point_plugins(pm)}
    assert any("register_backbone" in e for e in infos["typo_a"].errors)
    assert any("register_dataset" in e for e in infos["typo_b"].errors)


def test_real_entry_points_include_first_party_plugins():
    pm = make_plugin_manager()
    infos = {i.name: i for i in load_entry_point_plugins(pm)}
    assert FIRST_PARTY <= set(infos)
    for name in FIRST_PARTY:
        assert infos[name].distribution == "medfm", name
        assert infos[name].errors == [], infos[name].errors
        assert not infos[name].blocked
    registry = Registry.from_plugin_manager(pm, infos.values())
    assert registry.load_errors == []
    registry.check_duplicates()
    assert {"knn", "linear_probe"} <= set(registry.names("protocol"))
    assert registry.provenance("protocol", "knn").distribution == "medfm"


def test_real_entry_points_respect_block_env(monkeypatch):
    monkeypatch.setenv(BLOCK_ENV, "knn")
    pm = make_plugin_manager()
    infos = {i.name: i for i in load_entry_point_plugins(pm)}
    assert infos["knn"].blocked
    assert not infos["linear_probe"].blocked
    registry = Registry.from_plugin_manager(pm, infos.values())
    assert "knn" not in registry.names("protocol")
    assert "linear_probe" in registry.names("protocol")


# ------------------------------------------------------------------ docs
DOC = REPO / "docs" / "plugins.md"


@pytest.mark.xfail(not DOC.exists(), reason="docs/plugins.md is not written yet", strict=False)
def test_every_hook_is_documented():
    hooks = [
        name
        for name in dir(hookspecs)
        if callable(getattr(hookspecs, name)) and hasattr(getattr(hookspecs, name), "medfm_spec")
    ]
    assert set(hooks) == set(medfm_plugins_mod.HOOKS)
    text = DOC.read_text(encoding="utf-8")
    missing = [h for h in hooks if not re.search(rf"\b{re.escape(h)}\b", text)]
    assert missing == []
