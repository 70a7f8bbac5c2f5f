"""Running plans and reading results from Python (notebooks, scripts, benchmarks).

:func:`load_registry` discovers the installed plugins; a :class:`Runner` runs a
:class:`RunConfig` (from :func:`load_config` or built in code) and writes one verified record
per cell; :func:`scan_results` reads a results folder and verifies every record;
:func:`build_standings` ranks them with paired statistics, and :func:`build_site` writes the
static web leaderboard. For notebooks: :func:`run_benchmark` runs a plan and returns its
records, :func:`records_frame` turns records (or a results folder) into a pandas DataFrame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._exports import lazy_exports

if TYPE_CHECKING:
    from .config import RunConfig, load_config, with_overrides
    from .device import default_workers
    from .extract import extract_features
    from .gpu_decode import fill_jpeg_cache
    from .io import atomic_write_text, write_json
    from .leaderboard import render_leaderboard
    from .plots import few_shot_series, plot_few_shot
    from .plugins import load_entry_point_plugins, make_plugin_manager
    from .python_api import records_frame, run_benchmark, verified_records
    from .ray_executor import RayOptions, run_on_ray
    from .records import load_record
    from .registry import Registry, load_registry
    from .run_events import RunEvents
    from .runner import Cell, CellOutcome, Runner
    from .seg_predictions import SegmentationPredictions, read_segmentation_predictions
    from .site import build_site
    from .standings import Policy, build_standings
    from .verification import DatasetFacts, KnownSpecs, scan_results

_WHERE = {
    "RunConfig": "config",
    "load_config": "config",
    "with_overrides": "config",
    "Registry": "registry",
    "load_registry": "registry",
    "make_plugin_manager": "plugins",
    "load_entry_point_plugins": "plugins",
    "Runner": "runner",
    "Cell": "runner",
    "CellOutcome": "runner",
    "load_record": "records",
    "SegmentationPredictions": "seg_predictions",
    "read_segmentation_predictions": "seg_predictions",
    "scan_results": "verification",
    "DatasetFacts": "verification",
    "KnownSpecs": "verification",
    "Policy": "standings",
    "build_standings": "standings",
    "build_site": "site",
    "render_leaderboard": "leaderboard",
    "extract_features": "extract",
    "write_json": "io",
    "atomic_write_text": "io",
    "few_shot_series": "plots",
    "plot_few_shot": "plots",
    "run_benchmark": "python_api",
    "verified_records": "python_api",
    "records_frame": "python_api",
    "RunEvents": "run_events",
    "RayOptions": "ray_executor",
    "run_on_ray": "ray_executor",
    "fill_jpeg_cache": "gpu_decode",
    "default_workers": "device",
}

__all__ = [
    "RunConfig",
    "load_config",
    "with_overrides",
    "Registry",
    "load_registry",
    "make_plugin_manager",
    "load_entry_point_plugins",
    "Runner",
    "Cell",
    "CellOutcome",
    "load_record",
    "SegmentationPredictions",
    "read_segmentation_predictions",
    "scan_results",
    "DatasetFacts",
    "KnownSpecs",
    "Policy",
    "build_standings",
    "build_site",
    "render_leaderboard",
    "extract_features",
    "write_json",
    "atomic_write_text",
    "few_shot_series",
    "plot_few_shot",
    "run_benchmark",
    "verified_records",
    "records_frame",
    "RunEvents",
    "RayOptions",
    "run_on_ray",
    "fill_jpeg_cache",
    "default_workers",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
