"""Faults cost nothing: a killed run's half-written files are cleaned up by the next run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from medfm import io as medfm_io
from medfm.api import RunEvents, Runner
from medfm.io import atomic_path, remove_stale_temporaries


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temporary(folder: Path, name: str, writer: str, age_s: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.{writer}.abc123{medfm_io.TMP_SUFFIX}"
    path.write_bytes(b"x" * 1000)
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def test_only_temporaries_of_writers_that_are_gone_are_removed(tmp_path):
    host = medfm_io._WRITER.rpartition("-")[0]
    dead = _temporary(tmp_path / "a", "k.safetensors", f"{host}-{_dead_pid()}")
    alive = _temporary(tmp_path / "a", "k2.safetensors", medfm_io._WRITER)
    elsewhere_old = _temporary(tmp_path / "b", "r.json", "otherhost-12", age_s=2 * 24 * 3600)
    elsewhere_new = _temporary(tmp_path / "b", "r2.json", "otherhost-12")
    unrelated = tmp_path / "b" / "notes.tmp"  # not ours: not a hidden atomic_path name
    unrelated.write_text("keep")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p for p, _ in removed) == sorted([dead, elsewhere_old])
    assert all(n == 1000 for _, n in removed)
    assert alive.exists() and elsewhere_new.exists() and unrelated.exists()


def test_atomic_writes_name_their_writer(tmp_path):
    target = tmp_path / "record.json"
    with atomic_path(target) as tmp:
        assert medfm_io._WRITER in tmp.name and tmp.name.startswith(".record.json.")
        tmp.write_text("{}")
        assert remove_stale_temporaries(tmp_path) == []  # our own, still being written
    assert target.read_text() == "{}"


class Notes(RunEvents):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_the_next_run_removes_what_a_killed_run_left(registry_factory, tiny_config, tmp_path):
    host = medfm_io._WRITER.rpartition("-")[0]
    cache_features = Path(tiny_config.cache_dir) / "features" / "ab"
    left = [
        _temporary(cache_features, "abcdef.safetensors", f"{host}-{_dead_pid()}"),
        _temporary(Path(tiny_config.results_dir) / "x" / "y" / "knn", "me.seed0.json", f"{host}-{_dead_pid()}"),
    ]
    tiny_config.backbones, tiny_config.protocols = ["random/test_vit@64"], ["knn"]
    notes = Notes()
    runner = Runner(registry_factory(), tiny_config, notes)
    runner.run()
    assert not any(p.exists() for p in left)
    assert any("removed 2 temporary file(s) left by a run that was stopped (0.0 MB)" in n for n in notes.lines), notes


class _NotATensor:
    """Pickled into a checkpoint: loading it would run code, so medfm refuses."""


def test_weight_file_errors_name_the_file_and_say_what_to_do(tmp_path):
    import pytest
    import torch
    from safetensors.torch import save_file

    from medfm.backbones import load_state_dict
    from medfm.errors import UserError

    good = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(64, 64)}, str(good))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError) as caught:
        load_state_dict(cut)
    message = str(caught.value)
    assert str(cut) in message and "download it again" in message and "\n" not in message

    pickled = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _NotATensor()}, pickled)
    with pytest.raises(UserError) as caught:
        load_state_dict(pickled)
    message = str(caught.value)
    assert str(pickled) in message and "weights_only=False" not in message and "\n" not in message
    assert "does not unpickle" in message and ".safetensors" in message

    garbage = tmp_path / "model.bin"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="model.bin.*damaged, incomplete or not a PyTorch checkpoint"):
        load_state_dict(garbage)


def test_a_truncated_uncompressed_dicom_is_called_damaged_not_missing_codecs(tmp_path):
    import pytest
    from pydicom.data import get_testdata_file

    from medfm.datasets import DecodeError
    from medfm.decode import DecodeOptions, read_dicom

    source = Path(get_testdata_file("CT_small.dcm"))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size - 4000])
    with pytest.raises(DecodeError) as caught:
        read_dicom(cut, DecodeOptions())
    message = str(caught.value)
    assert str(cut) in message and "damaged or incomplete" in message and "pylibjpeg" not in message


def test_results_that_name_a_file_are_one_line_before_any_cell(tmp_path):
    exe = str(Path(sys.executable).parent / "medfm")
    (tmp_path / "results").write_text("not a folder")
    done = subprocess.run(
        [exe, "run", "-b", "random/test_vit@64", "-d", "synthetic/cxr-nodules", "-p", "knn", "--results",
         str(tmp_path / "results"), "--leaderboard", str(tmp_path / "lb.md")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "is a file, not a folder" in lines[0] and "Traceback" not in done.stderr


def test_an_output_that_cannot_be_written_fails_its_cell_and_the_others_run(registry_factory, tiny_config, monkeypatch):
    import errno

    import medfm.runner as runner_module

    tiny_config.backbones, tiny_config.protocols = ["random/test_vit@64"], ["knn", "logistic_regression"]
    real = runner_module.write_result
    calls = {"n": 0}

    def disk_full_once(paths, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(paths.record))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(runner_module, "write_result", disk_full_once)
    first, second = Runner(registry_factory(), tiny_config).run()
    assert first.status == "error" and "No space left on device" in first.message
    assert "check the results folder" in first.message and "\n" not in first.message
    assert second.status == "ok" and second.record_path.is_file()
