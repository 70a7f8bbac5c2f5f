"""The training engine's parts: augmentation, data order, sharding, freezing, adapters, heads, schedule."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from medfm import UserError
from medfm.timm_backbone import TimmBackbone, preprocessing_from_timm
from medfm.training.adapters import add_adapter, default_targets
from medfm.training.augment import PRESETS, apply_seeded, build_transform, resolve_policy
from medfm.training.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from medfm.training.classifier_heads import DeiTHead, find_deit_weights
from medfm.training.data import balanced_weights, epoch_order, step_plan, stratified_subset
from medfm.training.distributed import DistInfo, gather_rank_rows
from medfm.training.freezing import apply_freeze, count_parameters, frozen_state_digest
from medfm.training.model import build_model
from medfm.training.optim import param_groups, warmup_cosine
from medfm.training.options import TrainOptions, protocol_defaults

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vit() -> TimmBackbone:
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=0, img_size=64)
    return TimmBackbone(model, preprocessing_from_timm(model, 64))


# ---------------------------------------------------------------- augmentation
def test_augmentation_is_a_function_of_the_seed_only():
    transform = build_transform(PRESETS["radiology"], 64)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    a, b = apply_seeded(transform, image, 123), apply_seeded(transform, image, 123)
    torch.manual_seed(999)  # the global RNG does not matter, and is left as it was
    state = torch.get_rng_state()
    c = apply_seeded(transform, image, 123)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.dtype == torch.uint8 and a.shape == image.shape
    assert not torch.equal(a, apply_seeded(transform, image, 124))
    assert build_transform(PRESETS["none"], 64) is None


def test_augmentation_policy_per_data_set():
    radiology, how = resolve_policy("medmnist/pneumoniamnist", "chest X-ray", "default")
    assert radiology == PRESETS["radiology"] and radiology.vflip == 0 and "modality" in how
    pathology, _ = resolve_policy("medmnist/pathmnist", "colon pathology", "default")
    assert pathology.rotate90 and pathology.vflip > 0
    by = {"medmnist/*": {"hflip": 0.0}, "medmnist/derma*": "rotation_invariant"}
    derma, how = resolve_policy("medmnist/dermamnist", "dermatoscope", "none", by)
    assert derma == PRESETS["rotation_invariant"] and "derma" in how  # the most specific glob wins
    chest, _ = resolve_policy("medmnist/chestmnist", "chest X-ray", "none", by)
    assert chest.hflip == 0.0 and chest.rotate == PRESETS["radiology"].rotate
    with pytest.raises(UserError, match="unknown augmentation preset"):
        resolve_policy("x", "", "strong")
    with pytest.raises(UserError, match="unknown augmentation fields"):
        resolve_policy("x", "", {"hflipp": 0.5})


# ---------------------------------------------------------------- data order and sharding
def test_steps_split_the_same_global_batch_over_ranks_and_micro_batches():
    order = epoch_order(50, epoch=3, seed=7)
    assert sorted(order) == list(range(50)) and np.array_equal(order, epoch_order(50, 3, 7))
    assert not np.array_equal(order, epoch_order(50, 4, 7))
    single = step_plan(order, 16, 1, DistInfo())
    assert len(single) == 3  # 50 // 16, the incomplete batch is dropped
    for world in (2, 3):
        for accum in (1, 2):
            ranks = [step_plan(order, 16, accum, DistInfo(r, world)) for r in range(world)]
            for s in range(3):
                seen = np.concatenate([m for r in ranks for m in r[s]])
                assert sorted(seen) == sorted(single[s][0])


def test_class_balanced_sampling_and_stratified_subset():
    labels = np.array([0] * 90 + [1] * 10)
    w = balanced_weights("binary", labels)
    draws = np.concatenate([epoch_order(100, e, 0, w) for e in range(1, 21)])
    assert abs((labels[draws] == 1).mean() - 0.5) < 0.05
    sub = stratified_subset("binary", labels, 20, seed=1)
    assert len(sub) == 20 and len(set(sub)) == 20 and (labels[sub] == 1).sum() == 2
    multi = np.array([[1, 0], [0, 0], [0, 1], [0, 0], [0, 0], [0, 0]])
    assert np.isclose(balanced_weights("multilabel", multi).sum(), 1.0)


def test_gather_rows_restores_the_order():
    rows = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    idx = np.array([3, 1, 7, 0, 2, 4, 5, 6, 8, 9])
    assert np.array_equal(gather_rank_rows(idx, rows[idx], 10, DistInfo()), rows)


# ---------------------------------------------------------------- what trains
def test_last_n_unfreezes_the_last_blocks_and_the_final_norm():
    backbone = _vit()
    info = apply_freeze(backbone, "last_n", 2)
    trainable = {
        n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
        for n, p in backbone.module.named_parameters()
        if p.requires_grad
    }
    n = len(backbone.module.blocks)
    assert trainable == {f"blocks.{n - 2}", f"blocks.{n - 1}", "norm"}
    assert info["unfrozen_blocks"] == 2


def test_bitfit_trains_biases_only():
    backbone = _vit()
    apply_freeze(backbone, "bias")
    names = [n for n, p in backbone.module.named_parameters() if p.requires_grad]
    assert names and all(n.endswith("bias") for n in names)
    assert count_parameters(backbone.module)[0] == sum(
        p.numel() for n, p in backbone.module.named_parameters() if n.endswith("bias")
    )


def test_lora_targets_attention_of_vits_and_plain_convolutions_of_cnns():
    pytest.importorskip("peft")
    import torchvision

    from medfm import Preprocessing
    from medfm_plugins.backbones.torchvision_models import TorchvisionBackbone

    vit = _vit()
    assert default_targets(vit)[0] == ["attn.qkv", "attn.proj"]
    apply_freeze(vit, "frozen")
    info = add_adapter(vit, "lora", 4, 8.0, 0.0)
    trainable = [n for n, p in vit.module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert info["adapted_modules"] == 2 * len(vit.module.blocks)
    cnn = TorchvisionBackbone("mobilenet_v2", torchvision.models.mobilenet_v2(), Preprocessing(size=64), None, "")
    targets, how = default_targets(cnn)
    assert "non-grouped" in how
    apply_freeze(cnn, "frozen")
    add_adapter(cnn, "lora", 4, 8.0, 0.0)  # depthwise convolutions (groups > 1) are left alone
    adapted = [m for m in cnn.module.modules() if type(m).__name__ == "Conv2d" and hasattr(m, "lora_A")]
    assert adapted and all(m.base_layer.groups == 1 for m in adapted)


def test_frozen_digest_ignores_trainable_parts():
    backbone = _vit()
    apply_freeze(backbone, "bias")
    before = frozen_state_digest(backbone.module)
    with torch.no_grad():
        backbone.module.blocks[0].attn.qkv.bias.add_(1.0)
    assert frozen_state_digest(backbone.module) == before
    with torch.no_grad():
        backbone.module.blocks[0].attn.qkv.weight.add_(1.0)
    assert frozen_state_digest(backbone.module) != before


# ---------------------------------------------------------------- heads
def test_deit_head_reads_patch_tokens_and_loads_deit_blocks(tmp_path):
    deit = timm.create_model("deit_small_patch16_224", num_classes=0)
    path = tmp_path / "deit_s.safetensors"
    save_file({k: v.contiguous() for k, v in deit.state_dict().items()}, str(path))
    opts = TrainOptions.from_mapping(protocol_defaults(head="deit", deit_depth=2, deit_weights=str(path)))
    model, built = build_model(_vit(), opts, n_classes=3)
    head = model.head
    assert isinstance(head, DeiTHead) and built.head["pretrained_blocks"] and built.head["grid"] == [4, 4]
    assert torch.equal(head.blocks[1].attn.qkv.weight, deit.blocks[11].attn.qkv.weight)
    assert torch.equal(head.blocks[0].mlp.fc2.bias, deit.blocks[10].mlp.fc2.bias)
    assert torch.equal(head.cls_token, deit.cls_token) and head.pos_embed.shape == (1, 17, 384)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    state, init = find_deit_weights("base", "none")
    assert state is None and not init.pretrained and "random" in init.source


# ---------------------------------------------------------------- optimisation
def test_layer_wise_decay_and_no_decay_groups():
    opts = TrainOptions.from_mapping(protocol_defaults(freeze="full", lr=1e-3, backbone_lr=1e-4, layer_decay=0.5))
    model, _ = build_model(_vit(), opts, 2)
    groups = {g["name"]: g for g in param_groups(model, opts)}
    n = len(model.backbone_module.blocks)
    assert groups[f"backbone.layer{n}"]["lr"] == pytest.approx(1e-4 * 0.5)  # the last block
    assert groups["backbone.layer1"]["lr"] == pytest.approx(1e-4 * 0.5**n)  # the first block
    assert groups["backbone.layer0.no_wd"]["lr"] == pytest.approx(1e-4 * 0.5 ** (n + 1))  # embeddings
    assert groups[f"backbone.layer{n + 1}.no_wd"]["lr"] == pytest.approx(1e-4)  # final norm
    assert groups[f"head.layer{n + 1}"]["lr"] == 1e-3 and groups[f"head.layer{n + 1}.no_wd"]["weight_decay"] == 0
    assert sum(len(g["params"]) for g in groups.values()) == sum(1 for p in model.parameters() if p.requires_grad)


def test_warmup_then_cosine():
    f = warmup_cosine(total_steps=100, warmup_steps=10, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.55) and f(100) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_options_are_validated():
    with pytest.raises(UserError, match="unknown options"):
        TrainOptions.from_mapping({"epoch": 3})
    with pytest.raises(UserError, match="layer_decay"):
        TrainOptions.from_mapping({"layer_decay": 1.5})


def test_checkpoints_hold_tensors_only_and_restore_every_rng(tmp_path):
    import random

    state = capture_rng()
    save_checkpoint(tmp_path / "c.pt", {"rng": state, "loop": {"epoch": 3, "history": [{"a": 1.0}]}})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"])  # weights_only=True inside
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


# ---------------------------------------------------------------- memory
def test_extraction_out_of_memory_halves_the_batch_and_the_record_says_so(tmp_path, monkeypatch, tiny_config):
    from conftest import build_registry

    from medfm import extract
    from medfm.records import load_record
    from medfm.runner import Runner

    real, sizes = extract._extract_once, []

    def once(backbone, module, images, kinds, device, batch_size, *rest):
        sizes.append(batch_size)
        if len(sizes) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(backbone, module, images, kinds, device, batch_size, *rest)

    monkeypatch.setattr(extract, "_extract_once", once)
    tiny_config.backbones, tiny_config.protocols = ["random/test_vit@64"], ["knn"]
    (outcome,) = Runner(build_registry(), tiny_config).run()
    assert outcome.status == "ok" and sizes[:2] == [32, 16]
    notes = load_record(outcome.record_path, verify=True)["extra"]["extraction_memory"]
    assert len(notes) == 1 and "halved 1 time(s), to 16" in notes[0]


@pytest.mark.parametrize("kind", ["dora", "loha", "lokr"])
def test_other_peft_adapters_train_only_their_own_parameters(kind):
    pytest.importorskip("peft")
    backbone = _vit()
    opts = TrainOptions.from_mapping(protocol_defaults(freeze="adapter", adapter=kind, lora_r=4))
    model, built = build_model(backbone, opts, 2)
    trainable = [n for n, p in model.backbone_module.named_parameters() if p.requires_grad]
    # peft names every tensor it adds after its adapter ("default"); nothing else may train
    assert trainable and all(".default" in n for n in trainable), trainable[:4]
    assert built.adapter["adapter"] == kind and built.backbone_trainable_params > 0
    logits = model(torch.randn(2, 3, 64, 64))
    logits.sum().backward()
    assert all(p.grad is not None for n, p in model.backbone_module.named_parameters() if p.requires_grad)
