"""What a protocol receives (``Context``) and returns (``ProtocolOutput``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from .backbone import Backbone
    from .dataset import Dataset, Split
    from .dense_features import FeatureMaps
    from .specs import BackboneSpec, DatasetSpec, ProtocolSpec


@dataclass
class FeatureSet:
    """Cached frozen features of one split, aligned with its labels, groups and ids."""

    features: torch.Tensor
    labels: np.ndarray
    groups: np.ndarray | None
    ids: Sequence[str]
    kind: str


@dataclass
class ProtocolOutput:
    """A protocol's result: one row of test scores per test sample id, plus what it chose and saw.

    ``ids`` names the test samples the rows of ``scores`` belong to (any order; the runner puts
    them in the test split's order). ``scores`` is (N, C): class probabilities for single-label
    tasks (C = number of classes, 2 for binary), per-class probabilities for multi-label. The
    runner attaches the labels and patient ids from the data set itself and refuses output that
    misses, repeats or invents ids, or has the wrong shape. ``selected`` holds hyper-parameters
    picked on validation; ``extra`` anything worth keeping (curves, per-head validation scores);
    ``flags`` problems such as ``nan_loss``. Segmentation protocols return ``masks`` instead of
    scores: one predicted class map per id, each the size of that test image's mask.
    """

    ids: Sequence[str]
    scores: np.ndarray | None = None
    selected: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    masks: Sequence[np.ndarray] | None = None


class Context:
    """A protocol's view of one cell: options, seeded RNG, data, cached features, device.

    Protocols call ``ctx.features(split, kind)`` for frozen features (extracted once per
    run and cached on disk) or ``ctx.backbone()`` for the trainable module.

    ``work_dir`` is the submission's own scratch folder (``<submitter>.seed<seed>.work/`` beside its record,
    created on first use by the protocol), kept across runs so a killed training cell can
    resume from its checkpoints; ``None`` when the caller gives none. ``artifact_path``
    names files beside the cell's record (e.g. a training-curve PNG).
    """

    def __init__(
        self,
        *,
        backbone_spec: "BackboneSpec",
        dataset_spec: "DatasetSpec",
        protocol_spec: "ProtocolSpec",
        options: Mapping[str, Any],
        seed: int,
        device: torch.device,
        dataset_loader: Callable[[], "Dataset"],
        backbone_loader: Callable[[], "Backbone"],
        feature_loader: Callable[[str, str], FeatureSet],
        log: Callable[[str], None] = lambda message: None,
        work_dir: Path | None = None,
        record_path: Path | None = None,
        map_loader: Callable[[str, int], "FeatureMaps"] | None = None,
        mask_loader: Callable[[str, int], np.ndarray] | None = None,
    ) -> None:
        self.backbone_spec = backbone_spec
        self.dataset_spec = dataset_spec
        self.protocol_spec = protocol_spec
        self.options = dict(options)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.device = device
        self._dataset_loader = dataset_loader
        self._backbone_loader = backbone_loader
        self._feature_loader = feature_loader
        self._map_loader = map_loader
        self._mask_loader = mask_loader
        self.log = log
        self.timings: dict[str, float] = {}
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.record_path = Path(record_path) if record_path is not None else None
        self.after_record: list[Callable[[], None]] = []

    def when_recorded(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the cell's record is written, e.g. deleting training checkpoints:
        a run killed before then keeps them, and resumes instead of training again."""
        self.after_record.append(action)

    @property
    def dataset(self) -> "Dataset":
        """The loaded data set (loaded once per run and shared between cells)."""
        return self._dataset_loader()

    @property
    def task(self) -> str:
        """The data set's task type."""
        return self.dataset.task

    @property
    def classes(self) -> tuple[str, ...]:
        """The data set's class names."""
        return self.dataset.classes

    def split(self, name: str) -> "Split":
        """A split of the data set (images, labels, groups, ids)."""
        return self.dataset.split(name)

    def features(self, split: str, kind: str = "default") -> FeatureSet:
        """Frozen features of ``split`` (from the cache, extracting on a miss)."""
        return self._feature_loader(split, kind)

    def feature_maps(self, split: str, levels: int = 1) -> "FeatureMaps":
        """Spatial maps of the last ``levels`` blocks (or stages) of ``split``, shallowest first,
        memory-mapped float16 (N, C, h, w): extracted once and kept on disk."""
        if self._map_loader is None:
            raise RuntimeError("this context has no feature maps")
        return self._map_loader(split, levels)

    def masks(self, split: str, size: int) -> np.ndarray:
        """The masks of ``split`` resized to ``size`` x ``size`` (nearest), memory-mapped uint8."""
        if self._mask_loader is None:
            raise RuntimeError("this context has no masks")
        return self._mask_loader(split, size)

    def backbone(self) -> "Backbone":
        """The loaded backbone, for protocols that train it."""
        return self._backbone_loader()

    def artifact_path(self, suffix: str) -> Path | None:
        """``<record stem><suffix>`` beside the cell's record (``None`` without a record path)."""
        if self.record_path is None:
            return None
        return self.record_path.with_name(self.record_path.stem + suffix)

    def timer(self, name: str) -> "_Timer":
        """``with ctx.timer("fit"):`` adds the elapsed seconds to ``ctx.timings[name]``."""
        return _Timer(self.timings, name)


class _Timer:
    def __init__(self, sink: dict[str, float], name: str) -> None:
        self.sink, self.name = sink, name

    def __enter__(self) -> "_Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.sink[self.name] = self.sink.get(self.name, 0.0) + time.perf_counter() - self.start
