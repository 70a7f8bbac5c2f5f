"""A hostile results/ folder is ordinary input: forged, malicious and malformed submissions.

Every case starts from the same honest folder (two ranked backbones and one flagged one on a
data set with a published test set), applies one change a forger, a careless contributor or an
attacker could make, and checks that the change ends rejected (one line naming the file) or
kept but unranked (with its reason), within seconds, and that the ranked tables are exactly
what they were. ``test_every_case_at_once_through_the_cli`` puts all of them in one folder and
runs ``medfm validate`` and ``medfm leaderboard`` on it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from record_support import binary_predictions, make_record, write_submission

from medfm import DatasetSpec, hookimpl
from medfm import records as records_module
from medfm.predictions import Predictions
from medfm.records import cell_paths, write_predictions, write_record
from medfm.registry import load_registry
from medfm.standings import Policy, build_standings
from medfm.test_set import split_identity
from medfm.verification import DatasetFacts, KnownSpecs, scan_results

PUBLISHED = "fuzz/published"
STRONG = binary_predictions(strength=0.35, seed=1)
WEAK = binary_predictions(strength=0.15, seed=2)
CHANCE = binary_predictions(strength=0.0, seed=3)
OTHER = binary_predictions(strength=0.45, seed=11)  # same test set, other scores
IDENTITY = split_identity(STRONG.ids, STRONG.labels)
KW = {"dataset": PUBLISHED, "dataset_revision": "1"}


@pytest.fixture(scope="module")
def known() -> KnownSpecs:
    base = KnownSpecs.from_registry(load_registry())

    def dataset(name):
        if name == PUBLISHED:
            return DatasetFacts("binary", "auroc", 2, IDENTITY, "medfm", "1")
        return base.dataset(name)

    def provider(kind, name):
        return ("medfm", "1") if (kind, name) == ("dataset", PUBLISHED) else base.provider(kind, name)

    return KnownSpecs(dataset, provider)


class FuzzDataset:
    """The published data set of these tests, as an installed medfm plugin would register it."""

    @hookimpl
    def register_datasets(self, register):
        register(
            DatasetSpec(
                name=PUBLISHED,
                load=lambda spec: None,
                task="binary",
                classes=("no", "yes"),
                revision="1",
                test_identity=IDENTITY,
            )
        )


@pytest.fixture
def cli_registry(monkeypatch):
    """The CLI sees the installed plugins plus the fuzz data set, credited to medfm."""
    from medfm import cli
    from medfm.plugins import PluginInfo, load_entry_point_plugins, make_plugin_manager
    from medfm.registry import Registry

    pm = make_plugin_manager()
    infos = load_entry_point_plugins(pm)
    pm.register(FuzzDataset(), name="fuzz_dataset")
    infos.append(PluginInfo(name="fuzz_dataset", module=__name__, distribution="medfm", version="0.1.0"))
    registry = Registry.from_plugin_manager(pm, infos)
    monkeypatch.setattr(cli, "_registry", lambda warn=True: registry)
    return registry


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("baseline") / "results"
    write_submission(root, STRONG, backbone="alpha", **KW)
    write_submission(root, WEAK, backbone="beta", **KW)
    write_submission(root, CHANCE, backbone="gamma", **KW)  # chance level: verified, flagged, never ranked
    return root


def ranked_view(standings) -> list:
    """Everything the ranked tables show, as plain data."""
    out = []
    for t in standings.section("ranked"):
        for b in t.blocks:
            out.append(
                (
                    t.protocol,
                    t.version,
                    tuple(c.label for c in t.columns),
                    [
                        (
                            r.label,
                            r.rank,
                            r.group,
                            r.mean,
                            [(k, c.value, c.interval, len(c.rankable)) for k, c in sorted(r.cells.items())],
                        )
                        for r in b.rows
                    ],
                )
            )
    return out


# ------------------------------------------------------------------ helpers for the cases
def rec_path(root: Path, backbone: str = "alpha", submitter: str = "alice", seed: int = 0) -> Path:
    return cell_paths(root, backbone, PUBLISHED, "knn", submitter, seed).record


def forged(root: Path, backbone: str = "alpha") -> Path:
    """A new submission by mallory (seed 1) copied from ``backbone``'s honest one: the forger's slot.

    Forging someone else's existing file would show in review as an edit; a forger adds files."""
    target = cell_paths(root, backbone, PUBLISHED, "knn", "mallory", 1).record
    if not target.exists():
        src = rec_path(root, backbone)
        record = json.loads(src.read_text())
        record["submission"].update(submitter="mallory", seed=1)
        record["config"]["seed"] = 1
        record["predictions"]["file"] = "mallory.seed1.predictions.npz"
        shutil.copy(src.with_name("alice.seed0.predictions.npz"), target.with_name("mallory.seed1.predictions.npz"))
        target.write_text(json.dumps(record))
    return target


def edit(path: Path, change: Callable[[dict], None]) -> Path:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    return path


def new_record(
    root: Path,
    preds: Predictions,
    *,
    raw_change: Callable[[dict], None] | None = None,
    write_preds: bool = True,
    **kwargs,
) -> Path:
    """A record written by hand (not through the validating writer), with predictions beside it."""
    record = make_record(preds, **{**KW, **kwargs})
    paths = cell_paths(
        root,
        record["backbone"]["name"],
        record["dataset"]["name"],
        record["protocol"]["name"],
        record["submission"]["submitter"],
        record["submission"]["seed"],
    )
    paths.record.parent.mkdir(parents=True, exist_ok=True)
    if write_preds:
        record["predictions"] = write_predictions(paths.predictions, preds)
    if raw_change:
        raw_change(record)
    paths.record.write_text(json.dumps(record))
    return paths.record


def resign(record_path: Path, data: bytes) -> Path:
    """Replace the predictions with ``data`` and update the record's sha256 to match (a careful forger)."""
    import hashlib

    pred = record_path.with_name(record_path.name[: -len(".json")] + ".predictions.npz")
    pred.write_bytes(data)
    return edit(record_path, lambda r: r["predictions"].update(sha256=hashlib.sha256(data).hexdigest()))


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def good_arrays() -> dict:
    return {
        "ids": np.asarray(STRONG.ids),
        "labels": STRONG.labels.astype(np.int16),
        "scores": STRONG.scores.astype(np.float32),
    }


def honest_rewrite(root: Path, preds: Predictions, **kwargs) -> Path:
    """A new, self-consistent submission for alpha on other predictions (metrics recomputed)."""
    return new_record(root, preds, backbone="alpha", submitter="mallory", seed=1, **kwargs)


# ------------------------------------------------------------------ the cases
@dataclass
class Case:
    name: str
    mutate: Callable[[Path], Path]
    outcome: str  # rejected | unranked | unverified
    needle: str
    owner_needle: str = ""  # set when the original submission is contested: it loses its rank until resolved


def _relabelled() -> Predictions:
    return Predictions(STRONG.ids, 1 - STRONG.labels, STRONG.scores)


def _reordered() -> Predictions:
    order = np.arange(len(STRONG.ids))[::-1]
    return Predictions([STRONG.ids[i] for i in order], STRONG.labels[order], STRONG.scores[order])


def _partial() -> Predictions:
    return Predictions(STRONG.ids[:60], STRONG.labels[:60], STRONG.scores[:60])


def _tiny() -> Predictions:
    return Predictions(
        STRONG.ids[58:62], STRONG.labels[58:62], np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9]])
    )


def _collapsed() -> Predictions:
    return Predictions(WEAK.ids, WEAK.labels, np.tile([0.6, 0.4], (len(WEAK.ids), 1)) + 0.001 * WEAK.scores)


def _padding(record: dict) -> None:
    record["extra"]["padding"] = "x" * 4000
    record["extra"]["more"] = ["y" * 4000] * 1300  # about 5 MB


def _nest(record: dict) -> None:
    node = record["extra"]
    for _ in range(60):
        node["n"] = {}
        node = node["n"]


def _dir_symlink(root: Path) -> Path:
    outside = root.parent / "outside"
    shutil.copytree(root / "alpha", outside)
    link = root / "zeta"
    link.symlink_to(outside, target_is_directory=True)
    return link


def _fifo(root: Path) -> Path:
    path = rec_path(root, "delta")
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    return path


def _zip_bomb(root: Path) -> Path:  # noqa: D103
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in good_arrays().items():
            with zf.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, arr)
        with zf.open("groups.npy", "w", force_zip64=True) as f:
            f.write(b"\0" * (2 << 20))  # 2 MiB of zeros, a few KB compressed
    return resign(forged(root), buffer.getvalue())


def _copy_elsewhere(root: Path) -> Path:
    src = rec_path(root).parent
    dst = root / "backup" / "alpha" / src.parent.name / "knn"
    shutil.copytree(src, dst)
    return dst / "alice.seed0.json"


def _copy_as_beta(root: Path) -> Path:
    src = rec_path(root)
    record = json.loads(src.read_text())
    record["backbone"]["name"] = "beta"
    record["submission"]["submitter"] = "mallory"
    target = rec_path(root, "beta", "mallory")
    shutil.copy(src.with_name("alice.seed0.predictions.npz"), target.with_name("mallory.seed0.predictions.npz"))
    record["predictions"]["file"] = "mallory.seed0.predictions.npz"
    target.write_text(json.dumps(record))
    return target


def _error_version(root: Path) -> dict:
    """alpha's record turned into an error record (what a failed run of the same cell writes)."""
    record = json.loads(rec_path(root).read_text())
    for key in ("metrics", "predictions", "flags", "primary_metric", "test_set", "ci"):
        record.pop(key)
    record.update(status="error", error={"type": "RuntimeError", "message": "boom"})
    return record


def _error_elsewhere(root: Path) -> Path:
    path = root / "elsewhere" / "alpha" / rec_path(root).parent.parent.name / "knn" / "alice.seed0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_error_version(root)))
    return path


def _error_by_other(root: Path) -> Path:
    record = _error_version(root)
    record["submission"]["submitter"] = "bob"
    path = rec_path(root, "alpha", "bob")
    write_record(path, record)
    return path


HTML = "<img src=x onerror=alert(1)>"
MARKDOWN = "**bold** [x](https://evil.example) ~~gone~~"
BIDI = "alpha\u202egnp.exe"


def _renamed(field: str, value: str) -> Callable[[Path], Path]:
    def mutate(root: Path) -> Path:
        return new_record(root, STRONG, submitter="mallory", **{"backbone": "alpha", field: value})

    return mutate


def replace_text(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def replace_bytes(path: Path, old: bytes, new: bytes) -> Path:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    return path


def swap_for_symlink(path: Path, outside: Path) -> Path:
    """Move ``path``'s content to ``outside`` (unless that is a device) and leave a symlink to it."""
    if not str(outside).startswith("/dev/"):
        shutil.copy(path, outside)
    path.unlink()
    path.symlink_to(outside)
    return path


def _append_raw(path: Path, raw: str) -> Path:
    text = path.read_text().rstrip()
    assert text.endswith("}")
    path.write_text(text[:-1] + ", " + raw + "}")
    return path


CASES = [
    # forged numbers
    Case(
        "forged metric",
        lambda r: edit(forged(r), lambda x: x["metrics"]["auroc"].update(value=0.99)),
        "rejected",
        "auroc is 0.99 in the record",
    ),
    Case(
        "forged secondary metric",
        lambda r: edit(forged(r), lambda x: x["metrics"]["accuracy"].update(value=0.98)),
        "rejected",
        "accuracy is 0.98",
    ),
    Case(
        "forged CI (narrowed by hand)",
        lambda r: edit(
            forged(r), lambda x: x["metrics"]["auroc"].update(ci_low=round(x["metrics"]["auroc"]["value"] - 0.01, 6))
        ),
        "rejected",
        "auroc ci_low",
    ),
    Case(
        "forged CI high bound",
        lambda r: edit(forged(r), lambda x: x["metrics"]["auroc"].update(ci_high=0.5)),
        "rejected",
        "auroc ci_high",
    ),
    Case(
        "forged resample count",
        lambda r: edit(forged(r), lambda x: x["ci"].update(resamples=5000)),
        "rejected",
        "5000 resamples",
    ),
    Case(
        "forged bootstrap unit",
        lambda r: edit(forged(r), lambda x: x["ci"].update(unit="patient")),
        "rejected",
        "ci.unit says patient",
    ),
    Case(
        "removed chance_auroc flag",
        lambda r: edit(forged(r, "gamma"), lambda x: x.update(flags=[])),
        "rejected",
        "chance_auroc",
    ),
    Case(
        "removed collapsed_predictions flag",
        lambda r: new_record(r, _collapsed(), backbone="delta", raw_change=lambda x: x.update(flags=[])),
        "rejected",
        "collapsed_predictions",
    ),
    Case(
        "null primary metric",
        lambda r: edit(forged(r), lambda x: x["metrics"]["auroc"].update(value=None)),
        "rejected",
        "auroc is None in the record",
    ),
    Case(
        "status ok without a primary metric",
        lambda r: edit(forged(r), lambda x: x.update(primary_metric=None)),
        "rejected",
        "primary_metric",
    ),
    # forged truth
    Case(
        "forged labels, identity kept",
        lambda r: resign(forged(r), npz_bytes(**{**good_arrays(), "labels": (1 - STRONG.labels).astype(np.int16)})),
        "rejected",
        "test-set identity",
    ),
    Case(
        "forged labels, everything recomputed",
        lambda r: honest_rewrite(r, _relabelled()),
        "rejected",
        "not the published test set",
    ),
    Case(
        "partial coverage (60 of 120 cases)",
        lambda r: honest_rewrite(r, _partial()),
        "rejected",
        "not the published test set",
    ),
    Case("reordered ids", lambda r: honest_rewrite(r, _reordered()), "rejected", "not the published test set"),
    Case(
        "another test identity: 4 easy cases, 1.000 [1.000, 1.000]",
        lambda r: honest_rewrite(r, _tiny()),
        "rejected",
        "not the published test set",
    ),
    Case(
        "stated test size differs",
        lambda r: edit(forged(r), lambda x: x["test_set"].update(n=156)),
        "rejected",
        "says 156 test cases",
    ),
    Case(
        "repeated id",
        lambda r: resign(
            forged(r), npz_bytes(**{**good_arrays(), "ids": np.asarray([STRONG.ids[0]] * 2 + list(STRONG.ids[2:]))})
        ),
        "rejected",
        "repeat a sample id",
    ),
    Case(
        "wrong number of score columns",
        lambda r: resign(
            forged(r),
            npz_bytes(**{**good_arrays(), "scores": np.c_[STRONG.scores, STRONG.scores[:, :1]].astype(np.float32)}),
        ),
        "rejected",
        "3 columns",
    ),
    Case(
        "task mislabelled",
        lambda r: edit(forged(r), lambda x: x["dataset"].update(task="multiclass")),
        "rejected",
        "is a binary task",
    ),
    Case(
        "primary metric switched",
        lambda r: edit(forged(r), lambda x: x.update(primary_metric="accuracy")),
        "rejected",
        "ranked by auroc",
    ),
    # impersonation and provenance
    Case(
        "impersonated protocol from another distribution",
        lambda r: new_record(r, OTHER, backbone="random/net", submitter="mallory", distribution="evil-knn"),
        "unverified",
        "comes from evil-knn, which is not trusted",
    ),
    Case(
        "claims medfm's knn at a version medfm does not have",
        lambda r: new_record(r, OTHER, backbone="random/net", submitter="mallory", protocol_version="99"),
        "unverified",
        "is not the installed",
    ),
    Case(
        "claims a medfm protocol that does not exist",
        lambda r: new_record(r, OTHER, backbone="random/net", submitter="mallory", protocol="knn_oracle"),
        "unverified",
        "provide no protocol 'knn_oracle'",
    ),
    Case(
        "copy under another backbone's name",
        _copy_as_beta,
        "unranked",
        "scores are identical",
        owner_needle="scores are identical",
    ),
    Case(
        "duplicate cell in another folder",
        _copy_elsewhere,
        "rejected",
        "claims the same submission",
        owner_needle="claims this submission",
    ),
    Case("error record for the same names in another folder", _error_elsewhere, "rejected", "belongs at"),
    Case("error record from another submitter", _error_by_other, "valid_error", ""),
    # underpowered
    Case(
        "fewer than 1000 resamples",
        lambda r: new_record(r, STRONG, backbone="epsilon", resamples=200),
        "unranked",
        "only 200 bootstrap resamples",
    ),
    Case(
        "bootstrap 0: no intervals",
        lambda r: new_record(r, STRONG, backbone="epsilon", resamples=0),
        "unranked",
        "no confidence intervals",
    ),
    # numbers that are not numbers
    Case(
        "NaN metric",
        lambda r: replace_text(forged(r), '"auroc": {"ci_high": ', '"auroc": {"ci_high": NaN, "x": '),
        "rejected",
        "NaN is not a JSON number",
    ),
    Case(
        "Infinity CI bound",
        lambda r: replace_text(forged(r), '"ci_high": ', '"ci_high": Infinity, "x": '),
        "rejected",
        "Infinity is not a JSON number",
    ),
    Case(
        "1e308 metric",
        lambda r: edit(forged(r), lambda x: x["metrics"]["auroc"].update(value=1e308)),
        "rejected",
        "1e+308 is not finite or exceeds",
    ),
    Case("1e400 in a field", lambda r: _append_raw(forged(r), '"junk": 1e400'), "rejected", "not finite"),
    Case("huge integer", lambda r: _append_raw(forged(r), '"junk": ' + "9" * 5000), "rejected", "5000 digits"),
    # paths and files
    Case(
        "path traversal in the predictions pointer",
        lambda r: edit(forged(r), lambda x: x["predictions"].update(file="../../../../etc/passwd.predictions.npz")),
        "rejected",
        "predictions/file",
    ),
    Case(
        "pointer to another record's predictions",
        lambda r: edit(forged(r), lambda x: x["predictions"].update(file="bob.seed0.predictions.npz")),
        "rejected",
        "must be mallory.seed1.predictions.npz",
    ),
    Case(
        "predictions symlinked to /dev/zero",
        lambda r: (
            swap_for_symlink(forged(r).with_name("mallory.seed1.predictions.npz"), Path("/dev/zero")),
            forged(r),
        )[-1],
        "rejected",
        "symbolic link",
    ),
    Case(
        "predictions symlinked outside the tree",
        lambda r: (
            swap_for_symlink(forged(r).with_name("mallory.seed1.predictions.npz"), r.parent / "outside.npz"),
            forged(r),
        )[-1],
        "rejected",
        "symbolic link",
    ),
    Case(
        "record symlinked to a file outside",
        lambda r: swap_for_symlink(forged(r), r.parent / "outside.json"),
        "rejected",
        "symbolic link",
    ),
    Case("symlinked folder", _dir_symlink, "rejected", "symbolic link"),
    Case("FIFO named like a record", _fifo, "rejected", "not a regular file"),
    Case(
        "folder named like a record",
        lambda r: (rec_path(r, "delta").mkdir(parents=True), rec_path(r, "delta"))[-1],
        "rejected",
        "a folder named like a record",
    ),
    Case("oversized record", lambda r: edit(forged(r), _padding), "rejected", "allowed"),
    Case("deeply nested record", lambda r: edit(forged(r), _nest), "rejected", "nested deeper than"),
    Case("non-UTF-8 text", lambda r: replace_bytes(forged(r), b'"alpha"', b'"alph\xff"'), "rejected", "not UTF-8"),
    Case(
        "not JSON at all", lambda r: replace_bytes(forged(r), b"{", b"{ this is not json"), "rejected", "not valid JSON"
    ),
    Case(
        "old schema version",
        lambda r: edit(forged(r), lambda x: x.update(schema_version=1)),
        "rejected",
        "schema version 1",
    ),
    Case(
        "unknown field",
        lambda r: edit(forged(r), lambda x: x.update(verified_by="the maintainers")),
        "rejected",
        "verified_by",
    ),
    Case(
        "file name and content disagree on the seed",
        lambda r: edit(forged(r), lambda x: x["submission"].update(seed=7)),
        "rejected",
        "belongs at",
    ),
    # broken predictions whose sha256 matches
    Case(
        "truncated npz, sha256 updated",
        lambda r: resign(forged(r), forged(r).with_name("mallory.seed1.predictions.npz").read_bytes()[:200]),
        "rejected",
        "not an npz archive",
    ),
    Case("object array, sha256 updated", lambda r: resign(forged(r), _object_npz()), "rejected", "object array"),
    Case(
        "missing labels array, sha256 updated",
        lambda r: resign(forged(r), npz_bytes(ids=np.asarray(STRONG.ids), scores=STRONG.scores.astype(np.float32))),
        "rejected",
        "no 'labels' array",
    ),
    Case(
        "extra member, sha256 updated",
        lambda r: resign(forged(r), npz_bytes(**good_arrays(), payload=np.zeros(3))),
        "rejected",
        "unexpected members",
    ),
    Case(
        "NaN scores, sha256 updated",
        lambda r: resign(
            forged(r), npz_bytes(**{**good_arrays(), "scores": np.full((120, 2), np.nan, dtype=np.float32)})
        ),
        "rejected",
        "cannot be recomputed",
    ),
    Case("zip bomb, sha256 updated", _zip_bomb, "rejected", "would expand"),
    # names
    *[
        Case(f"{kind} in the {field} name", _renamed(field, value), outcome, needle)
        for field in ("backbone", "protocol", "dataset")
        for kind, value, outcome, needle in (
            ("HTML", f"net{HTML}" if field != "dataset" else f"fuzz/{HTML}", "unranked", "render as markup"),
            ("markdown", f"net {MARKDOWN}", "unranked", "render as markup"),
            ("bidi", BIDI, "rejected", "U+202E"),
        )
    ],
    Case(
        "zero-width space in the submitter",
        lambda r: edit(forged(r), lambda x: x["submission"].update(submitter="ali\u200bce")),
        "rejected",
        "submission/submitter",
    ),
    Case(
        "ANSI escape in the hardware",
        lambda r: edit(forged(r), lambda x: x["submission"].update(hardware="\x1b[31mGPU\x1b[0m")),
        "rejected",
        "U+001B",
    ),
    Case(
        "markup in the plugin distribution",
        lambda r: new_record(r, OTHER, backbone="random/net", submitter="mallory", distribution="medfm<script>"),
        "unranked",
        "render as markup",
    ),
]


def _object_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.asarray(STRONG.ids, dtype=object), labels=STRONG.labels, scores=STRONG.scores)
    return buffer.getvalue()


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


def _scan_with_deadline(root, known, seconds=60):
    result = {}

    def work():
        scan = scan_results(root, known, use_cache=False)
        result["scan"] = scan
        result["standings"] = build_standings(scan, known, Policy())

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"scanning {root} hung for more than {seconds} s"
    return result["scan"], result["standings"]


def small_expansion_limit() -> None:
    """Cap what a predictions file may expand to at 1 MiB, so the zip-bomb case stays small
    (the benchmark applies the cases as the tests do)."""
    records_module.MAX_UNCOMPRESSED_PREDICTIONS = 1 << 20


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_submission_is_rejected_or_unranked_and_changes_no_ranked_table(
    case, baseline, known, tmp_path, monkeypatch
):
    monkeypatch.setattr(records_module, "MAX_UNCOMPRESSED_PREDICTIONS", 1 << 20)
    _, before = _scan_with_deadline(baseline, known)
    root = tmp_path / "results"
    shutil.copytree(baseline, root, symlinks=True)
    target = case.mutate(root)
    scan, after = _scan_with_deadline(root, known)
    entries = [c for c in scan.entries if c.path == target]
    assert len(entries) == 1, [str(c.path) for c in scan.entries]
    entry = entries[0]
    if case.outcome == "rejected":
        assert not entry.valid and case.needle in entry.problem, entry.problem
        assert "\n" not in entry.problem and str(target) in entry.problem
    elif case.outcome == "valid_error":
        assert entry.valid and entry.record["status"] == "error"
    else:
        assert entry.valid, entry.problem
        if case.outcome == "unranked":
            assert any(case.needle in reason for reason in entry.unranked), entry.unranked
        else:  # unverified: shown apart, never ranked
            notes = [n for t in after.section("unverified") for n in t.trust_notes]
            assert any(case.needle in n for n in notes), notes
    if case.owner_needle:  # both are reported; neither is ranked until one is removed
        owner = next(c for c in scan.entries if c.path == rec_path(root))
        assert owner.valid and any(case.owner_needle in r for r in owner.unranked), owner.unranked
        kept = [(row[0], row[3], row[4]) for block in ranked_view(after) for row in block[3]]
        assert kept == [
            (row[0], row[3], row[4]) for block in ranked_view(before) for row in block[3] if row[0] == "beta"
        ]
    else:
        assert ranked_view(after) == ranked_view(before)


def test_every_case_through_one_validate_command(baseline, tmp_path, monkeypatch, capsys, cli_registry):
    """``medfm validate`` over a folder per case, in one process: each bad file is one line, no traceback."""
    from medfm.cli import main

    monkeypatch.setattr(records_module, "MAX_UNCOMPRESSED_PREDICTIONS", 1 << 20)
    roots, targets = [], {}
    for i, case in enumerate(CASES):
        root = tmp_path / f"case{i:02d}" / "results"
        shutil.copytree(baseline, root, symlinks=True)
        targets[str(case.mutate(root))] = case
        roots.append(str(root))
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["validate", "--json", *roots])
    out, err = capsys.readouterr()
    assert done.value.code == 1 and "Traceback" not in out + err
    entries = {e["path"]: e for e in json.loads(out)}
    for path, case in targets.items():
        entry = entries[path]
        if case.outcome == "rejected":
            assert not entry["valid"] and case.needle in entry["problem"] and "\n" not in entry["problem"], case.name
        else:
            assert entry["valid"], (case.name, entry["problem"])
    honest = [e for p, e in entries.items() if p not in targets and e["valid"]]
    assert len(honest) >= 2 * len(CASES)  # the untouched records of every folder still verify


@pytest.mark.parametrize(
    "name",
    [
        "forged metric",
        "duplicate cell in another folder",
        "predictions symlinked to /dev/zero",
        "HTML in the backbone name",
        "zip bomb, sha256 updated",
    ],
)
def test_leaderboard_command_on_a_hostile_folder_keeps_its_tables(
    name, baseline, tmp_path, monkeypatch, capsys, cli_registry
):
    from medfm.cli import main

    monkeypatch.setattr(records_module, "MAX_UNCOMPRESSED_PREDICTIONS", 1 << 20)
    case = next(c for c in CASES if c.name == name)
    clean, root = tmp_path / "clean", tmp_path / "results"
    shutil.copytree(baseline, clean)
    shutil.copytree(baseline, root)
    case.mutate(root)
    monkeypatch.chdir(tmp_path)
    for folder, file in ((clean, "clean.md"), (root, "hostile.md")):
        with pytest.raises(SystemExit) as done:
            main(["leaderboard", "--results", str(folder), "--file", file])
        assert done.value.code == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    ranked = lambda p: (tmp_path / p).read_text().split("## Unverified")[0].split("Not ranked:")[0]  # noqa: E731
    assert "| 1 | 1 | `alpha` |" in ranked("clean.md")  # the honest board has ranked rows
    if case.owner_needle:
        assert "`alpha`" not in ranked("hostile.md") and "`beta`" in ranked("hostile.md")
    else:
        assert ranked("hostile.md") == ranked("clean.md")
    with pytest.raises(SystemExit) as done:
        main(["leaderboard", "--check", "--results", str(root), "--file", "hostile.md"])
    assert done.value.code == (1 if case.outcome == "rejected" else 0)
