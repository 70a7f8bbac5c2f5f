"""Write one benchmark's figures into its own section of RESULTS.md and a JSON file."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from medfm.api import atomic_write_text, write_json

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"


def machine() -> str:
    """What the figures were measured on."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def update_section(name: str, markdown: str, data: dict[str, Any], measured_on: str | None = None) -> None:
    """Replace the section ``name`` in RESULTS.md (other sections survive) and write ``name.json``.

    ``measured_on`` names the machine when the figures were measured earlier (re-rendering a
    section from its JSON); by default, this process's machine and thread count.
    """
    measured_on = measured_on or machine()
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = (
        RESULTS_MD.read_text()
        if RESULTS_MD.exists()
        else "# Benchmark results\n\nWritten by the scripts in this folder; rerun them to refresh.\n\n"
    )
    block = f"{start}\n{markdown.strip()}\n\n_Measured on: {measured_on}._\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(RESULTS_MD, text)
    write_json(HERE / f"{name}.json", {"machine": measured_on, **data})
