"""One forward pass per (backbone, data set, split) per plan: the runner gathers every feature
kind any planned cell on the pair reads and extracts them all the first time a split is needed."""

from __future__ import annotations

import torch

import medfm.runner as runner_module
from medfm.api import Runner, load_record

PROTOCOLS = ["knn", "linear_probe", "logistic_regression", "few_shot_*"]


def _count_forwards(monkeypatch) -> dict[str, list]:
    """Every extraction call and every batch forwarded through the backbone."""
    seen: dict[str, list] = {"calls": [], "forwards": []}
    real = runner_module.extract_features

    def counting(backbone, images, kinds, *args, **kwargs):
        seen["calls"].append(sorted(kinds))
        forward = backbone.features

        def counted(x, wanted):
            seen["forwards"].append(len(x))
            return forward(x, wanted)

        backbone.features = counted  # one call is one forward of a batch through the network
        try:
            return real(backbone, images, kinds, *args, **kwargs)
        finally:
            del backbone.features

    monkeypatch.setattr(runner_module, "extract_features", counting)
    return seen


def test_a_plan_of_many_kinds_costs_one_pass_per_split(registry_factory, tiny_config, monkeypatch):
    tiny_config.backbones, tiny_config.protocols = ["random/test_vit@64"], PROTOCOLS
    seen = _count_forwards(monkeypatch)
    outcomes = Runner(registry_factory(), tiny_config).run()
    assert [o.status for o in outcomes] == ["ok"] * 6
    sizes = load_record(outcomes[0].record_path)["dataset"]["split_sizes"]
    # three extraction calls (train, val, test), each for every kind the six protocols read
    assert len(seen["calls"]) == 3
    assert all(kinds == ["cls", "cls_mean_patch", "last4_cls"] for kinds in seen["calls"])
    # and every image went through the network exactly once
    assert sum(seen["forwards"]) == sum(sizes.values())
    kinds_read = {load_record(o.record_path)["backbone"]["feature_kind"] for o in outcomes}
    assert {"cls", "cls,cls_mean_patch,last4_cls"} <= kinds_read  # the cells did read different kinds


def test_one_pass_features_equal_per_kind_extraction(registry_factory, tiny_config, tmp_path):
    """Extracting kinds together gives the same features (and metrics) as one kind at a time."""
    tiny_config.backbones, tiny_config.protocols = ["random/test_vit@64"], ["knn", "linear_probe"]
    together = Runner(registry_factory(), tiny_config)
    together_outcomes = together.run()

    tiny_config.cache_dir, tiny_config.results_dir = str(tmp_path / "c2"), str(tmp_path / "r2")
    apart_outcomes = []
    for protocol in ["knn", "linear_probe"]:  # two plans: each extracts only its own kinds
        tiny_config.protocols = [protocol]
        apart_outcomes += Runner(registry_factory(), tiny_config).run()
    for a, b in zip(together_outcomes, apart_outcomes):
        assert load_record(a.record_path)["metrics"] == load_record(b.record_path)["metrics"]
    for key, features in together._features.items():
        assert torch.isfinite(features.features).all(), key
