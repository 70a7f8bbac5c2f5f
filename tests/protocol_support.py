"""Synthetic FEATURES driven through the real runner: a data set and a backbone that looks features up.

``FeatureTask`` holds, per feature kind and split, a feature matrix with labels (and patient
ids where given). Its plugin registers a data set ``features/<name>`` whose images are tiny
4 x 4 uint8 pictures encoding (split, index), and a backbone ``table/<name>`` that decodes
them and returns the stored rows. The runner extracts, caches, evaluates, bootstraps, flags
and records exactly as for a real model, so protocol tests check what a user would see.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from medfm import Backbone, BackboneSpec, Dataset, DatasetSpec, Preprocessing, Split, hookimpl
from medfm.config import RunConfig

SPLITS = ("train", "val", "test")
CODES = {s: i + 1 for i, s in enumerate(SPLITS)}


class IndexImages:
    """Image i of a split is a 4 x 4 x 3 uint8 picture whose first pixel encodes (split, i)."""

    def __init__(self, split: str, n: int) -> None:
        self.code, self.n = CODES[split], n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        img = np.zeros((4, 4, 3), dtype=np.uint8)
        img[0, 0] = (self.code, i // 256, i % 256)
        return img


class TableBackbone(Backbone):
    """Returns the stored features of each decoded (split, index)."""

    def __init__(self, tables: dict[str, dict[str, np.ndarray]], default_kind: str, digest: str) -> None:
        self.module = torch.nn.Identity()
        self.preprocessing = Preprocessing(size=4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="nearest")
        self.tables = {k: {s: torch.as_tensor(v, dtype=torch.float32) for s, v in t.items()} for k, t in tables.items()}
        self.feature_dims = {k: int(next(iter(t.values())).shape[1]) for k, t in tables.items()}
        self.default_kind = default_kind
        self.weights_sha256 = digest
        self.weights_source = "synthetic feature table"

    def features(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        """Decode (split, index) from the first pixel and look the rows up."""
        raw = torch.round(images[:, :, 0, 0] * 255).long()
        split = [SPLITS[int(c) - 1] for c in raw[:, 0]]
        idx = raw[:, 1] * 256 + raw[:, 2]
        return {k: torch.stack([self.tables[k][s][int(i)] for s, i in zip(split, idx)]) for k in kinds}


@dataclass(eq=False)  # hashable by identity: pluggy keeps plugins in a set
class FeatureTask:
    """Synthetic features and labels for every split, with optional patient ids."""

    name: str
    task: str
    n_classes: int
    features: dict[str, dict[str, np.ndarray]]  # kind -> split -> (N, D)
    labels: dict[str, np.ndarray]
    groups: dict[str, np.ndarray] | None = None
    primary_metric: str = "auroc"
    default_kind: str = "cls"
    plugin_name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.plugin_name = f"features_{self.name}"

    @property
    def backbone(self) -> str:
        """The backbone's registered name."""
        return f"table/{self.name}"

    @property
    def dataset(self) -> str:
        """The data set's registered name."""
        return f"features/{self.name}"

    def digest(self) -> str:
        """A content hash standing in for the weights' sha256 (it keys the feature cache)."""
        h = hashlib.sha256(self.name.encode())
        for kind in sorted(self.features):
            for s in SPLITS:
                h.update(np.ascontiguousarray(self.features[kind][s], dtype=np.float32).tobytes())
        return h.hexdigest()

    def split(self, s: str) -> Split:
        """One split of the data set."""
        groups = None if self.groups is None else self.groups[s]
        return Split(
            s,
            IndexImages(s, len(self.labels[s])),
            self.labels[s],
            groups=groups,
            ids=[f"{s}/{i}" for i in range(len(self.labels[s]))],
        )

    @hookimpl
    def register_datasets(self, register):
        def load(spec: DatasetSpec) -> Dataset:
            return Dataset(self.task, spec.classes, {s: self.split(s) for s in SPLITS})

        register(
            DatasetSpec(
                name=self.dataset,
                load=load,
                task=self.task,
                classes=tuple(f"class{c}" for c in range(self.n_classes)),
                primary_metric=self.primary_metric,
            )
        )

    @hookimpl
    def register_backbones(self, register):
        def load(spec: BackboneSpec) -> Backbone:
            return TableBackbone(self.features, self.default_kind, self.digest())

        register(
            BackboneSpec(
                name=self.backbone, load=load, input_size=4, objective="none", feature_kinds=tuple(self.features)
            )
        )


# ------------------------------------------------------------------ generators
def make_labels(task: str, n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Balanced-ish labels: every class (every label value) present."""
    if task == "multilabel":
        y = (rng.random((n, n_classes)) < 0.35).astype(np.int64)
        y[:n_classes, :] = np.eye(n_classes, dtype=np.int64)
        y[n_classes : 2 * n_classes] = 0
        return y
    y = np.arange(n) % n_classes
    return rng.permutation(y).astype(np.int64)


def informative_features(
    task: str,
    labels: np.ndarray,
    n_classes: int,
    dim: int,
    margin: float,
    rng: np.random.Generator,
    directions: np.ndarray,
) -> np.ndarray:
    """Features whose class signal has strength ``margin`` against unit Gaussian noise.

    Ordinal grades lie in order on a half circle (adjacent grades closest, every grade an
    extreme point, so each is linearly separable from the rest and has its own direction).
    """
    noise = rng.normal(0.0, 1.0, (len(labels), dim))
    if task == "multilabel":
        return noise + margin * labels @ directions[:n_classes]
    if task == "ordinal":
        theta = np.pi * labels[:, None] / (n_classes - 1)
        return noise + 2 * margin * (np.cos(theta) * directions[:1] + np.sin(theta) * directions[1:2])
    return noise + margin * directions[labels]


def feature_task(
    name: str,
    task: str,
    n_classes: int = 2,
    sizes: tuple[int, int, int] = (300, 100, 200),
    dim: int = 16,
    margin: float = 4.0,
    seed: int = 0,
    kinds: dict[str, float] | None = None,
    patients: int | None = None,
    primary_metric: str = "auroc",
) -> FeatureTask:
    """A ``FeatureTask`` with one table per kind; ``kinds`` maps kind -> margin (0 = random features).

    With ``patients``, every split's images belong to patients holding ``patients`` images each
    (patient ids unique across splits).
    """
    rng = np.random.default_rng(seed)
    kinds = kinds or {"cls": margin}
    directions = rng.normal(0, 1, (max(n_classes, 1), dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    labels = {s: make_labels(task, n, n_classes, rng) for s, n in zip(SPLITS, sizes)}
    feats = {
        k: {
            s: informative_features(task, labels[s], n_classes, dim, m, rng, directions).astype(np.float32)
            for s in SPLITS
        }
        for k, m in kinds.items()
    }
    groups = None
    if patients:
        groups = {s: np.asarray([f"{s}-P{i // patients:04d}" for i in range(n)]) for s, n in zip(SPLITS, sizes)}
    return FeatureTask(name, task, n_classes, feats, labels, groups, primary_metric, next(iter(kinds)))


def run_config(
    tmp_path: Path,
    task: FeatureTask,
    protocols: list[str],
    bootstrap: int = 300,
    options: dict | None = None,
    seed: int = 0,
) -> RunConfig:
    """A run of ``protocols`` on one feature task, results under ``tmp_path``."""
    cfg = RunConfig(
        backbones=[task.backbone],
        datasets=[task.dataset],
        protocols=protocols,
        results_dir=str(tmp_path / "results"),
        cache_dir=str(tmp_path / "cache"),
        leaderboard=str(tmp_path / "leaderboard.md"),
        bootstrap=bootstrap,
        batch_size=256,
        device="cpu",
        seed=seed,
    )
    for protocol, opts in (options or {}).items():
        cfg.options["protocol"][protocol] = dict(opts)
    return cfg
