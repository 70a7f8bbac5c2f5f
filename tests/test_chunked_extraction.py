"""Long extractions are cached a chunk at a time: a kill loses at most one chunk, and the
features equal those of one pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import medfm.runner as runner_module
from medfm.api import Runner, load_record
from medfm.cache import FeatureCache


def _features(results_cache: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {p.name: load_file(str(p))["features"] for p in sorted((results_cache / "features").glob("*/*.safetensors"))}


def test_chunked_features_equal_one_pass_and_chunks_are_dropped(registry_factory, tiny_config, tmp_path):
    tiny_config.backbones, tiny_config.protocols = ["random/test_vit@64"], ["knn"]
    whole = Runner(registry_factory(), tiny_config)
    whole.run()
    reference = _features(Path(tiny_config.cache_dir))

    tiny_config.cache_dir = str(tmp_path / "chunked-cache")
    tiny_config.results_dir = str(tmp_path / "chunked-results")
    tiny_config.batch_size, tiny_config.extraction_chunk = 8, 20  # chunks of 16 images: whole batches
    Runner(registry_factory(), tiny_config).run()
    chunked = _features(Path(tiny_config.cache_dir))
    assert chunked.keys() == reference.keys()  # only whole-split entries are left
    for name in reference:
        assert torch.allclose(chunked[name], reference[name], atol=1e-5), name


def test_a_kill_during_extraction_keeps_the_finished_chunks(registry_factory, tiny_config, monkeypatch):
    tiny_config.backbones, tiny_config.protocols = ["random/test_vit@64"], ["knn"]
    tiny_config.batch_size, tiny_config.extraction_chunk = 4, 8
    calls = {"n": 0}
    real = runner_module.extract_features

    def killed_on_third_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "extract_features", killed_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        Runner(registry_factory(), tiny_config).run()
    cache = Path(tiny_config.cache_dir)
    assert len(list((cache / "features").glob("*/*.safetensors"))) == 2  # two chunks of one kind survived

    calls["n"] = -(10**6)  # the resumed run is not killed
    seen = []
    monkeypatch.setattr(runner_module, "extract_features", lambda *a, **k: seen.append(len(a[1])) or real(*a, **k))
    (outcome,) = Runner(registry_factory(), tiny_config).run()
    assert outcome.status == "ok"
    sizes = load_record(outcome.record_path)["dataset"]["split_sizes"]
    assert sum(seen) == sum(sizes.values()) - 16  # the two cached chunks (8 images each) were not redone
    assert FeatureCache(cache).info()["entries"] == 3  # train, val, test; the chunks were removed
