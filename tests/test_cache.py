"""Feature cache: round trip, corruption detection, key sensitivity, atomic writes."""

from __future__ import annotations

import copy

import pytest
import torch

import medfm.cache as cache_mod
from medfm.cache import FeatureCache, feature_key

KEY_PARTS = {
    "backbone": {"name": "timm/vit_small", "revision": "1", "weights": "a" * 64},
    "kind": "cls",
    "preprocessing": {
        "size": 224,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "interpolation": "bicubic",
        "resize": "resize",
    },
    "dataset": {"name": "medmnist/breastmnist", "revision": "1", "fingerprint": "f" * 64},
    "split": "train",
}


def tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "features": torch.randn(12, 16, generator=g),
        "index": torch.arange(12, dtype=torch.int64),
        "half": torch.randn(3, 5, generator=g).to(torch.bfloat16),
    }


def files_under(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------ round trip
def test_put_get_round_trip(tmp_path):
    cache = FeatureCache(tmp_path)
    key = feature_key(KEY_PARTS)
    assert cache.get(key) is None
    assert (cache.stats.hits, cache.stats.misses, cache.stats.corrupt) == (0, 1, 0)
    stored = tensors()
    path = cache.put(key, stored, KEY_PARTS)
    assert path == cache.path(key) and path.exists() and key in path.name
    assert_same(cache.get(key), stored)
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    # a fresh cache object (another process) reads the same entry
    assert_same(FeatureCache(tmp_path).get(key), stored)
    assert cache.info()["entries"] == 1 and cache.info()["bytes"] == path.stat().st_size


def test_put_overwrites_and_clear(tmp_path):
    cache = FeatureCache(tmp_path)
    key = feature_key(KEY_PARTS)
    cache.put(key, tensors(0), KEY_PARTS)
    cache.put(key, tensors(1), KEY_PARTS)
    assert_same(cache.get(key), tensors(1))
    cache.put(feature_key({**KEY_PARTS, "split": "test"}), tensors(2), KEY_PARTS)
    assert cache.clear() == 2
    assert cache.get(key) is None and cache.info()["entries"] == 0


# ------------------------------------------------------------------ corruption
def _stored(tmp_path):
    cache = FeatureCache(tmp_path)
    key = feature_key(KEY_PARTS)
    path = cache.put(key, tensors(), KEY_PARTS)
    return cache, key, path


@pytest.mark.parametrize("keep", [0, 4, 8, 40, 0.5, -1])
def test_truncated_file_is_detected_and_removed(tmp_path, keep):
    cache, key, path = _stored(tmp_path)
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    path.write_bytes(data[:n])
    assert cache.get(key) is None
    assert not path.exists()
    assert cache.stats.corrupt == 1 and cache.stats.hits == 0
    assert cache.get(key) is None and cache.stats.corrupt == 1  # now simply a miss


@pytest.mark.parametrize("where", ["first_data_byte", "middle", "last"])
def test_flipped_data_byte_is_detected_and_removed(tmp_path, where):
    cache, key, path = _stored(tmp_path)
    data = bytearray(path.read_bytes())
    data_start = 8 + int.from_bytes(data[:8], "little")
    pos = {"first_data_byte": data_start, "middle": (data_start + len(data)) // 2, "last": len(data) - 1}[where]
    data[pos] ^= 0x01  # a single bit: tensors still parse, but with wrong values
    path.write_bytes(bytes(data))
    assert cache.get(key) is None
    assert not path.exists() and cache.stats.corrupt == 1


def test_any_flipped_byte_never_yields_wrong_tensors(tmp_path):
    """Flip every byte in turn: get() returns the original tensors or None, and never raises."""
    cache, key, path = _stored(tmp_path)
    original = path.read_bytes()
    expected = tensors()
    detected = 0
    for pos in range(len(original)):
        data = bytearray(original)
        data[pos] ^= 0xFF
        path.write_bytes(bytes(data))
        got = cache.get(key)
        if got is None:
            detected += 1
            assert not path.exists()
        else:
            assert_same(got, expected)
    assert detected == cache.stats.corrupt and detected >= len(original) - 8 - int.from_bytes(original[:8], "little")


def test_checksum_of_another_entry_is_rejected(tmp_path):
    """A valid safetensors file whose checksum does not match its tensors (e.g. swapped metadata)."""
    from safetensors.torch import save_file

    cache, key, path = _stored(tmp_path)
    other = tensors(5)
    save_file(other, str(path), metadata={"sha256": cache_mod._tensor_digest(tensors()), "key": key})
    assert cache.get(key) is None and cache.stats.corrupt == 1


# ------------------------------------------------------------------ keys
def _variants():
    def set_(path, value):
        def mutate(parts):
            target = parts
            for p in path[:-1]:
                target = target[p]
            target[path[-1]] = value

        return mutate

    return {
        "weights": set_(("backbone", "weights"), "b" * 64),
        "backbone name": set_(("backbone", "name"), "timm/vit_base"),
        "backbone revision": set_(("backbone", "revision"), "2"),
        "kind": set_(("kind",), "mean_patch"),
        "size": set_(("preprocessing", "size"), 448),
        "mean": set_(("preprocessing", "mean"), [0.5, 0.5, 0.5]),
        "interpolation": set_(("preprocessing", "interpolation"), "bilinear"),
        "resize policy": set_(("preprocessing", "resize"), "pad"),
        "fingerprint": set_(("dataset", "fingerprint"), "e" * 64),
        "dataset revision": set_(("dataset", "revision"), "2"),
        "dataset name": set_(("dataset", "name"), "medmnist/pathmnist"),
        "split": set_(("split",), "test"),
    }


def test_feature_key_changes_when_any_input_changes():
    base = feature_key(KEY_PARTS)
    assert len(base) == 64 and int(base, 16) >= 0
    keys = {"base": base}
    for name, mutate in _variants().items():
        parts = copy.deepcopy(KEY_PARTS)
        mutate(parts)
        keys[name] = feature_key(parts)
    assert len(set(keys.values())) == len(keys), keys  # every change gives a new, distinct key


def test_feature_key_is_canonical_and_versioned(monkeypatch):
    reordered = {k: KEY_PARTS[k] for k in reversed(list(KEY_PARTS))}
    reordered["preprocessing"] = dict(reversed(list(KEY_PARTS["preprocessing"].items())))
    assert feature_key(reordered) == feature_key(KEY_PARTS)
    base = feature_key(KEY_PARTS)
    monkeypatch.setattr(cache_mod, "FEATURE_FORMAT_VERSION", cache_mod.FEATURE_FORMAT_VERSION + 1)
    assert feature_key(KEY_PARTS) != base


# ------------------------------------------------------------------ atomic writes
def test_put_leaves_no_temporary_files(tmp_path):
    cache = FeatureCache(tmp_path)
    for split in ("train", "val", "test"):
        cache.put(feature_key({**KEY_PARTS, "split": split}), tensors(), KEY_PARTS)
    names = files_under(tmp_path)
    assert len(names) == 3 and all(n.endswith(".safetensors") and "/." not in n for n in names)


def test_failed_put_keeps_old_entry_and_leaves_no_temp(tmp_path, monkeypatch):
    cache, key, path = _stored(tmp_path)
    before = files_under(tmp_path)

    def crash_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial garbage")
        raise OSError("disk full")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", crash_midway)  # the cache imports it on use
    with pytest.raises(OSError, match="disk full"):
        cache.put(key, tensors(9), KEY_PARTS)
    assert files_under(tmp_path) == before
    assert_same(FeatureCache(tmp_path).get(key), tensors())  # the old entry is intact
