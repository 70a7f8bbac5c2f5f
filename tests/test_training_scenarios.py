"""Every training protocol through the runner, and what each one may and may not change.

Training here is full-batch with no augmentation and a small learning rate, so a falling
loss is a property of the optimiser, not luck: each scenario must lower its training loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from medfm.config import RunConfig
from medfm.records import iter_records
from medfm.runner import Runner
from medfm.timm_backbone import TimmBackbone, preprocessing_from_timm
from medfm.training.data import TrainImages
from medfm.training.distributed import DistInfo
from medfm.training.engine import Labelled, Trainer
from medfm.training.freezing import state_digest
from medfm.training.model import build_model
from medfm.training.options import TrainOptions, protocol_defaults
from medfm_plugins.datasets.synthetic_cxr import generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


VIT, RESNET = "random/test_vit@64", "random/test_resnet@64"
ALL = [
    "frozen_linear",
    "finetune_linear",
    "finetune_llrd",
    "partial_finetune",
    "frozen_deit_head",
    "finetune_deit_head",
    "lora",
    "bitfit",
]
ON_RESNET = ["frozen_linear", "finetune_deit_head", "lora", "bitfit"]
FULL_BATCH = {
    "epochs": 3,
    "batch_size": 64,
    "lr": 1e-3,
    "backbone_lr": 1e-3,
    "warmup_epochs": 0.0,
    "augment": "none",
    "weight_decay": 0.0,
    "patience": 10,
    "drop_path": 0.0,
    "deit_depth": 1,
}


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict:
    """Run every cell once; also note the runner's shared backbone before and after."""
    root = tmp_path_factory.mktemp("training")
    from conftest import build_registry

    registry = build_registry()
    records: dict = {}
    for backbone, protocols in ((VIT, ALL), (RESNET, ON_RESNET)):
        cfg = RunConfig(
            backbones=[backbone],
            datasets=["synthetic/cxr-nodules"],
            protocols=protocols,
            results_dir=str(root / "results"),
            cache_dir=None,
            leaderboard=str(root / "lb.md"),
            bootstrap=100,
            device="cpu",
        )
        cfg.options["dataset"]["synthetic/cxr-nodules"] = {"patients": 12, "size": 64}
        # curve PNGs (0.3 s each) for two protocols only
        cfg.options["protocol"] = {
            "*": {**FULL_BATCH, "curves_png": False},
            "frozen_linear": {"lr": 1e-2, "curves_png": True},
            "lora": {"curves_png": True},
            "*deit*": {"lr": 1e-4, "backbone_lr": 1e-4},
        }
        runner = Runner(registry, cfg)
        cells = runner.plan()
        shared = runner._backbone(cells[0].backbone)  # the one object every cell of the run receives
        before = state_digest(shared.module)
        for cell in cells:
            outcome = runner.run_cell(cell)
            assert outcome.status == "ok", outcome.message
        records[("shared", backbone)] = (before, state_digest(shared.module))
    for path, record, error in iter_records(root / "results", verify=True):
        assert error is None, error
        records[(record["backbone"]["name"], record["protocol"]["name"])] = record | {"_path": str(path)}
    return records


CELLS = [(VIT, p) for p in ALL] + [(RESNET, p) for p in ON_RESNET]


@pytest.mark.parametrize("backbone,protocol", CELLS)
def test_every_scenario_lowers_its_training_loss(records, backbone, protocol):
    record = records[(backbone, protocol)]
    curves = record["extra"]["curves"]
    assert len(curves["train_loss"]) == FULL_BATCH["epochs"]
    assert curves["train_loss"][-1] < curves["train_loss"][0], curves["train_loss"]
    assert all(v is not None for v in curves["val_auroc"])
    assert record["selected"]["epoch"] == record["extra"]["best_epoch"] >= 1
    assert record["extra"]["trainable_params"] > 0
    png = Path(record["_path"].replace(".json", ".curves.png"))
    if protocol in ("frozen_linear", "lora"):
        assert record["extra"]["curves_png"] == png.name and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not png.exists() and "curves_png" not in record["extra"]


@pytest.mark.parametrize("backbone,protocol", [c for c in CELLS if c[1].startswith("frozen")])
def test_frozen_scenarios_leave_the_backbone_unchanged(records, backbone, protocol):
    extra = records[(backbone, protocol)]["extra"]
    assert extra["backbone_trainable_params"] == 0
    assert extra["frozen_digest"]["unchanged"] and extra["frozen_digest"]["before"] == extra["frozen_digest"]["after"]


def test_trainable_parameter_counts_in_the_records(records):
    model = timm.create_model("test_vit", num_classes=0, img_size=64)
    d, blocks = model.num_features, len(model.blocks)
    head = d * 2 + 2
    r = records[(VIT, "lora")]["extra"]
    # rank 8 on qkv (d -> 3d) and proj (d -> d) in every block, plus the linear head
    assert r["trainable_params"] == blocks * 8 * ((d + 3 * d) + (d + d)) + head
    assert r["adapter"]["adapted_modules"] == 2 * blocks
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    assert records[(VIT, "bitfit")]["extra"]["trainable_params"] == biases + head
    assert (
        records[(VIT, "finetune_linear")]["extra"]["trainable_params"]
        == sum(p.numel() for p in model.parameters()) + head
    )
    assert records[(VIT, "frozen_linear")]["extra"]["trainable_params"] == head
    partial = records[(VIT, "partial_finetune")]["extra"]
    assert partial["freeze"]["unfrozen_blocks"] == 2
    assert (
        partial["trainable_params"]
        == sum(p.numel() for p in model.blocks[-2:].parameters())
        + sum(p.numel() for p in model.norm.parameters())
        + head
    )


def test_deit_head_reads_patch_tokens_and_says_how_it_was_initialised(records):
    vit = records[(VIT, "frozen_deit_head")]["extra"]
    assert vit["feature_kind"] == "patch_map" and vit["head"]["grid"] == [4, 4]
    assert vit["head"]["pretrained_blocks"] is False and any("DeiT head" in n for n in vit["notes"])
    assert records[(RESNET, "finetune_deit_head")]["extra"]["feature_kind"] == "spatial_map"


def test_training_never_changes_the_runners_shared_backbone(records):
    # a later frozen-feature protocol in the same run must see the backbone as it was loaded
    for backbone in (VIT, RESNET):
        before, after = records[("shared", backbone)]
        assert before == after


# ---------------------------------------------------------------- the engine, driven directly
def _data(n_patients: int = 12):
    data = generate(n_patients, 64, seed=3)
    return data["images"], data["labels"]


def _train(backbone, **options):
    images, labels = _data()
    opts = TrainOptions.from_mapping(protocol_defaults(**{**FULL_BATCH, "epochs": 2, **options}))
    model, built = build_model(backbone, opts, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, opts, task="binary", metric="auroc", device=torch.device("cpu"), seed=0, dist=DistInfo())
    prep = backbone.preprocessing
    fit = trainer.fit(
        Labelled(TrainImages(images[:16], prep), labels[:16]), Labelled(TrainImages(images[16:], prep), labels[16:])
    )
    after = model.state_dict()
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    return model, built, fit, changed


def _resnet() -> TimmBackbone:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=0)
    return TimmBackbone(model, preprocessing_from_timm(model, 64))


def _vit() -> TimmBackbone:
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=0, img_size=64)
    return TimmBackbone(model, preprocessing_from_timm(model, 64))


@pytest.mark.parametrize("head", ["linear", "deit"])
def test_frozen_backbone_hash_is_unchanged_batchnorm_included(head):
    backbone = _resnet()
    digest = state_digest(backbone.module)
    _, _, fit, changed = _train(backbone, freeze="frozen", head=head, lr=1e-3)
    assert state_digest(backbone.module) == digest  # parameters and BatchNorm running statistics
    assert changed and all(k.startswith("head.") for k in changed)


def test_lora_changes_only_adapters_and_head():
    backbone = _vit()
    base = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    model, built, _, changed = _train(backbone, freeze="adapter", adapter="lora")
    assert any("lora_" in k for k in changed) and any(k.startswith("head.") for k in changed)
    assert all("lora_" in k or k.startswith("head.") for k in changed), sorted(changed)
    for name, tensor in backbone.module.state_dict().items():  # peft keeps the originals as base_layer
        original = name.replace(".base_layer.", ".")
        if "lora_" not in name:
            assert torch.equal(tensor, base[original]), name
    assert built.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_bitfit_changes_only_biases_and_head():
    backbone = _resnet()
    _, built, _, changed = _train(backbone, freeze="bias")
    backbone_changed = {k for k in changed if not k.startswith("head.")}
    # BatchNorm running statistics move because BitFit's BatchNorm biases train in training mode
    assert backbone_changed and all(
        k.endswith(("bias", "running_mean", "running_var", "num_batches_tracked")) for k in backbone_changed
    ), sorted(backbone_changed)
    assert any(k.endswith(".bias") for k in backbone_changed)
    assert built.backbone_trainable_params == sum(
        p.numel() for n, p in backbone.module.named_parameters() if n.endswith("bias")
    )


def test_out_of_memory_halves_the_micro_batch_and_says_so(monkeypatch):
    from medfm.training import engine

    def reference():
        _, _, fit, _ = _train(_vit(), freeze="last_n", unfreeze_blocks=1)
        return fit

    calls = {"n": 0}

    def explode(epoch, step):
        if epoch == 2 and calls["n"] == 0:
            calls["n"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    plain = reference()
    monkeypatch.setattr(engine, "before_step", explode)
    model, _, fit, _ = _train(_vit(), freeze="last_n", unfreeze_blocks=1)
    assert calls["n"] == 1 and fit.state.oom_retries == 1 and fit.state.accum_steps == 2
    assert fit.micro_batch == 8 and any("out of memory" in note for note in fit.notes)
    # accumulation keeps the optimisation: same global batch, same losses up to rounding
    np.testing.assert_allclose(fit.state.step_losses, plain.state.step_losses, rtol=1e-4, atol=1e-5)
