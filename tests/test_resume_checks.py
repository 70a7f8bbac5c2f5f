"""A record is current only while the data and weights it was computed from are unchanged.

A folder data set with images deleted, an image replaced in place by another of the same size,
or a weights file overwritten in place all make the cell run again, each saying why.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from medfm.api import RunConfig, RunEvents, Runner

NAME = "folder/binary/resume"


class Notes(RunEvents):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def write_folder(root: Path, per_class: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for label, klass in enumerate(("normal", "abnormal")):
        (root / klass).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (32, 32), dtype=np.uint8) + np.uint8(80 * label)
            Image.fromarray(pixels).save(root / klass / f"p{label}{i:02d}_1.png")
    return root


def run_once(registry, tmp_path: Path, root: Path) -> tuple[str, list[str]]:
    cfg = RunConfig(
        backbones=["random/test_vit@64"],
        datasets=[NAME],
        protocols=["knn"],
        results_dir=str(tmp_path / "results"),
        cache_dir=str(tmp_path / "cache"),
        leaderboard=str(tmp_path / "lb.md"),
        device="cpu",
    )
    cfg.options["dataset"][NAME] = {"root": str(root), "split_dir": str(tmp_path / "splits")}
    notes = Notes()
    (outcome,) = Runner(registry, cfg, notes).run()
    return outcome.status, notes.lines


def test_deleted_and_replaced_images_make_the_cell_run_again(registry_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "cache"))
    registry = registry_factory()
    root = write_folder(tmp_path / "data")
    assert run_once(registry, tmp_path, root)[0] == "ok"
    assert run_once(registry, tmp_path, root)[0] == "cached"  # nothing changed: up to date

    for path in sorted((root / "normal").glob("*.png"))[:2]:
        path.unlink()
    status, notes = run_once(registry, tmp_path, root)
    assert status == "ok", notes
    assert any("changed since it was written" in n for n in notes), notes
    assert run_once(registry, tmp_path, root)[0] == "cached"

    victim = sorted((root / "abnormal").glob("*.png"))[0]
    size, stat = victim.stat().st_size, victim.stat()
    flipped = np.asarray(Image.open(victim))[::-1].copy()
    Image.fromarray(flipped).save(victim)  # another image under the same name
    if victim.stat().st_size != size:  # keep the size: only the modification time tells
        data = victim.read_bytes()[:size].ljust(size, b"\0")
        victim.write_bytes(data)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    status, notes = run_once(registry, tmp_path, root)
    assert status in ("ok", "error"), notes
    assert any("were modified since it was written" in n for n in notes), notes


def test_a_weights_file_overwritten_in_place_makes_the_cell_run_again(registry_factory, tmp_path, monkeypatch):
    import timm
    import torch
    from safetensors.torch import save_file

    monkeypatch.setenv("MEDFM_CACHE_DIR", str(tmp_path / "cache"))
    registry = registry_factory()
    weights = tmp_path / "test_vit.safetensors"
    model = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=64)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    cfg = RunConfig(
        backbones=["timm/test_vit@64"],
        datasets=["synthetic/cxr-nodules"],
        protocols=["knn"],
        results_dir=str(tmp_path / "results"),
        cache_dir=str(tmp_path / "cache"),
        leaderboard=str(tmp_path / "lb.md"),
        device="cpu",
    )
    cfg.options["dataset"]["synthetic/cxr-nodules"] = {"patients": 40, "size": 64}
    cfg.options["backbone"]["timm/test_vit"] = {"weights": str(weights)}

    def status() -> tuple[str, list[str]]:
        notes = Notes()
        (outcome,) = Runner(registry, cfg, notes).run()
        return outcome.status, notes.lines

    assert status()[0] == "ok"
    assert status()[0] == "cached"
    torch.manual_seed(1)
    other = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=64)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(weights))  # same path, new weights
    got, notes = status()
    assert got == "ok", notes
    assert any("the weights file test_vit.safetensors changed" in n for n in notes), notes
