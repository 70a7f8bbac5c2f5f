"""CLI start-up: how long the commands that should answer at once take, warm disk cache.

Goals (issue 12): ``medfm --help`` and ``medfm --version`` under 0.5 s; ``medfm list
backbones`` and ``medfm plugins`` under 2 s. Each command runs as a user types it (the
installed ``medfm`` script, a fresh process), once to warm the disk cache and then
``--repeats`` times; the median is reported, next to ``python -c "import torch"`` measured in the
same run, which is what every command paid before imports were deferred.

Usage: python benchmarks/bench_cli.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _results import update_section

GOALS = {
    ("--help",): 0.5,
    ("--version",): 0.5,
    ("list", "backbones"): 2.0,
    ("list", "datasets"): 2.0,
    ("list", "protocols"): 2.0,
    ("plugins",): 2.0,
}


def seconds(argv: list[str], repeats: int) -> tuple[float, list[float]]:
    """Median wall time of ``argv`` over ``repeats`` runs, after one warm-up run."""
    env = {**os.environ, "COLUMNS": "200"}
    subprocess.run(argv, capture_output=True, env=env, check=False)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    exe = shutil.which("medfm") or str(Path(sys.executable).parent / "medfm")
    torch_s, _ = seconds([sys.executable, "-c", "import torch"], args.repeats)
    rows: list[str] = []
    commands: list[dict[str, Any]] = []
    data = {"import_torch_s": torch_s, "commands": commands}
    for argv, goal in GOALS.items():
        median, times = seconds([exe, *argv], args.repeats)
        met = "yes" if median < goal else "**no**"
        rows.append(f"| `medfm {' '.join(argv)}` | {median:.2f} | {min(times):.2f} | < {goal:g} | {met} |")
        commands.append({"argv": list(argv), "median_s": median, "times_s": times, "goal_s": goal})
    md = "\n".join(
        [
            "## CLI start-up (`bench_cli.py`)",
            "",
            f"Each command as a user runs it (a fresh process), median of {args.repeats} after a warm-up run. "
            f'For scale, measured in the same run: `python -c "import torch"` takes {torch_s:.2f} s, '
            "which every command paid before the work's imports were deferred to the work.",
            "",
            "| command | median s | best s | goal s | met |",
            "|---|---:|---:|---:|---|",
            *rows,
        ]
    )
    update_section("cli", md, data)
    print(md)


if __name__ == "__main__":
    main()
