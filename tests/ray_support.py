"""Plugins the Ray tests send to worker processes (a module, so workers import it by name)."""

from __future__ import annotations

import os
from pathlib import Path

from medfm import ProtocolSpec, hookimpl
from medfm.plugins import load_entry_point_plugins, make_plugin_manager
from medfm.registry import Registry
from medfm_plugins.protocols import knn


class DiesOnceProtocol:
    """kNN, except that the first attempt kills its worker process outright (no exception, no
    cleanup: what an out-of-memory kill or a lost node does), leaving a marker file behind."""

    plugin_name = "dies_once"

    @hookimpl
    def register_protocols(self, register):
        def run(ctx):
            marker = Path(ctx.options["marker"])
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
            return knn.run(ctx)

        register(
            ProtocolSpec(
                name="dies_once",
                run=run,
                defaults={
                    "k_grid": [3, 5],
                    "temperature": 0.07,
                    "feature_kind": "default",
                    "query_chunk": 256,
                    "bank_chunk": 16384,
                    "marker": "",
                },
            )  # fmt: skip
        )


def registry_with_a_dying_protocol() -> Registry:
    """The installed plugins (entry points, as a user's workers see them) plus ``dies_once``."""
    pm = make_plugin_manager()
    infos = load_entry_point_plugins(pm)
    pm.register(DiesOnceProtocol(), name="dies_once")
    return Registry.from_plugin_manager(pm, infos)
