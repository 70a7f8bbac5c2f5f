"""Verifying result records: nothing a submitter wrote is believed that can be recomputed.

``verify_file`` takes one record file and either rejects it with one line naming the file
and the reason, or returns it with what the harness itself concluded:

1. the file is a plain file under the size cap, strict JSON, schema-valid, printable text;
2. it lives where its names say (``results/<backbone>/<dataset>/<protocol>/<submitter>.seed<seed>.json``);
3. its predictions file is the one beside it, under the cap, matches its sha256 and is a
   well-formed npz without pickles;
4. the test-set identity recomputed from the stored ids, labels and patients equals the
   record's, and the published identity where the data set plugin knows one;
5. every metric and every confidence interval is recomputed (same seed, same resample
   count, same resampling unit) and must match; the degenerate-result flags are recomputed
   and must all be present;
6. reasons not to rank it (flags, fewer than 1000 resamples, no interval, an undefined
   primary metric) and warnings (a test set under 100 cases, an interval wider than 0.2).

``scan_results`` does this for a whole folder and reports two records claiming the same
submission: neither is ranked until one is removed. Recomputed intervals are cached by the
predictions' sha256 (``$MEDFM_CACHE_DIR/verified``), so a second scan costs file reads only.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .io import atomic_write_text, sha256_bytes, sha256_json
from .predictions import Predictions
from .records import (
    PREDICTIONS_SUFFIX,
    RECORD_SUFFIX,
    RecordError,
    canonical_relpath,
    is_record_name,
    parse_predictions,
    parse_record,
    parse_stem,
    read_record_bytes,
)
from .safe_files import PREDICTIONS_MAX_BYTES, read_capped, walk_records
from .seg_predictions import (
    SegmentationPredictions,
    case_table_predictions,
    identity_of,
    is_segmentation_archive,
    parse_segmentation_predictions,
    score_segmentation,
)
from .test_set import split_identity

VERIFIER_VERSION = 1
MIN_RESAMPLES = 1000
SMALL_TEST_SET = 100
WIDE_CI = 0.2
TOLERANCE = 1e-5
# Characters that mean something in markdown or HTML, and link-like text. A name holding them is
# rendered inert anyway (a code span, textContent), but a ranked table only shows plain names.
MARKUP = re.compile(r"[<>&\"'`*~\[\]|\\!#{}$]|://|www\.", re.IGNORECASE)
NAME_FIELDS = (("backbone", "name"), ("dataset", "name"), ("protocol", "name"))
PLUGIN_FIELDS = ("name", "distribution", "version")
DISTINCT_SCORES_FOR_COPY_CHECK = 10


@dataclass(frozen=True)
class DatasetFacts:
    """What an installed data set plugin says about a data set name."""

    task: str
    primary_metric: str
    n_classes: int | None
    test_identity: str | None
    distribution: str | None
    revision: str
    synthetic: bool = False
    nsd_tolerance_mm: float | None = None


@dataclass
class KnownSpecs:
    """Facts from the installed plugins, for checks a record alone cannot support.

    ``dataset(name)`` and ``provider(kind, name)`` return ``None`` for names no installed
    plugin registers; then only the record's own consistency is checked.
    """

    dataset_lookup: Callable[[str], DatasetFacts | None] = lambda name: None
    provider_lookup: Callable[[str, str], tuple[str | None, str] | None] = lambda kind, name: None

    def dataset(self, name: str) -> DatasetFacts | None:
        """The installed facts of data set ``name``, if any plugin registers it."""
        return self.dataset_lookup(name)

    def provider(self, kind: str, name: str) -> tuple[str | None, str] | None:
        """(distribution, spec version or revision) of the installed ``kind`` called ``name``."""
        return self.provider_lookup(kind, name)

    @classmethod
    def from_registry(cls, registry: Any) -> "KnownSpecs":
        """Facts looked up lazily in a ``Registry`` (families resolved by name, nothing loaded)."""
        from .errors import UserError

        def spec(kind: str, name: str) -> Any:
            try:
                return registry.get(kind, name)
            except (UserError, KeyError, ValueError, TypeError):
                return None
            except Exception:  # a family's resolver that raises: treat as unknown, never crash a scan
                return None

        def dataset(name: str) -> DatasetFacts | None:
            s = spec("dataset", name)
            if s is None:
                return None
            info = registry.provenance("dataset", name)
            return DatasetFacts(
                s.task,
                s.primary_metric,
                len(s.classes) or None,
                getattr(s, "test_identity", None),
                info.distribution if info else None,
                s.revision,
                bool(getattr(s, "synthetic", False)),
                getattr(s, "nsd_tolerance_mm", None),
            )

        def provider(kind: str, name: str) -> tuple[str | None, str] | None:
            s = spec(kind, name)
            if s is None:
                return None
            info = registry.provenance(kind, name)
            version = s.version if kind == "protocol" else s.revision
            return (info.distribution if info else None), str(version)

        return cls(dataset, provider)


@dataclass
class Checked:
    """One record file after verification.

    ``problem`` is the one-line reason it was rejected (``None`` when it verified).
    ``unranked`` lists reasons a verified record is shown but not ranked, ``warnings`` facts a
    reader should see next to its number (small test set, wide interval).
    """

    path: Path
    relpath: str
    record: dict[str, Any] | None = None
    problem: str | None = None
    predictions: Predictions | None = None
    unranked: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    claims: str | None = None  # the canonical path its content claims, when it could be read
    claims_result: bool = False  # whether that content is a result (status ok), not an error note

    @property
    def valid(self) -> bool:
        """Whether the record verified (it may still be unranked)."""
        return self.problem is None and self.record is not None

    @property
    def verified_record(self) -> dict[str, Any]:
        """The record of an entry that verified (``valid``); for the lists ``Scan.valid`` hands out."""
        assert self.record is not None, f"{self.relpath} holds no verified record"
        return self.record


@dataclass
class Scan:
    """Every record file under a results folder, verified."""

    root: Path
    entries: list[Checked]

    @property
    def valid(self) -> list[Checked]:
        """The records that verified."""
        return [c for c in self.entries if c.valid]

    @property
    def rejected(self) -> list[Checked]:
        """The records that did not, each with its one-line reason."""
        return [c for c in self.entries if not c.valid]


# ------------------------------------------------------------------ recomputation cache
def _cache_root() -> Path:
    from .image_cache import default_cache_root

    return default_cache_root() / "verified"


def _cached_recompute(key: str, compute: Callable[[], dict[str, Any]], use_cache: bool) -> dict[str, Any]:
    path = _cache_root() / key[:2] / f"{key}.json"
    if use_cache:
        try:
            data = json.loads(read_capped(path, 1 << 22))
            if isinstance(data, dict) and data.get("key") == key:
                return data["metrics"]
        except (ValueError, KeyError, TypeError):
            pass
    metrics = compute()
    if use_cache:
        try:
            atomic_write_text(path, json.dumps({"key": key, "metrics": metrics}, sort_keys=True))
        except OSError:
            pass  # a read-only cache only costs time
    return metrics


def recompute_metrics(
    task: str,
    preds: Predictions,
    seed: int,
    resamples: int,
    use_cache: bool = True,
    predictions_sha256: str | None = None,
) -> dict[str, Any]:
    """Every metric of ``task`` with its bootstrap interval, as the runner computes them."""
    from .metrics import evaluate, point_metrics

    def compute() -> dict[str, Any]:
        if resamples > 0:
            return {
                k: v.as_dict()
                for k, v in evaluate(
                    task, preds.labels, preds.scores, groups=preds.groups, resamples=resamples, seed=seed
                ).items()
            }
        return {
            k: {"value": _round(v), "ci_low": None, "ci_high": None}
            for k, v in point_metrics(task, preds.labels, preds.scores).items()
        }

    if predictions_sha256 is None:
        return compute()
    key = sha256_json(
        {
            "verifier": VERIFIER_VERSION,
            "predictions": predictions_sha256,
            "task": task,
            "seed": seed,
            "resamples": resamples,
        }
    )
    return _cached_recompute(key, compute, use_cache)


def _round(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


# ------------------------------------------------------------------ one record
def _default_root(path: Path) -> Path:
    parents = path.parents
    return parents[3] if len(parents) > 3 else path.parent


def verify_file(
    path: Path, root: Path | None = None, known: KnownSpecs | None = None, use_cache: bool = True
) -> Checked:
    """Verify one record file (see the module docstring); never raises for bad input."""
    path = Path(path)
    root = Path(root) if root is not None else _default_root(path)
    try:
        relpath = path.relative_to(root).as_posix()
    except ValueError:
        relpath = path.name
    checked = Checked(path, relpath)
    try:
        _verify(checked, root, known or KnownSpecs(), use_cache)
    except RecordError as exc:
        checked.problem = _one_line(str(exc))
    except Exception as exc:  # the last line of defence: any other failure is still one line
        checked.problem = _one_line(f"{path}: cannot be verified ({type(exc).__name__}: {exc})")
    if checked.problem is not None:
        checked.predictions = None
    return checked


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fail(path: Path, reason: str) -> RecordError:
    return RecordError(f"{path}: {reason}")


def _verify(checked: Checked, root: Path, known: KnownSpecs, use_cache: bool) -> None:
    path = checked.path
    record = parse_record(read_record_bytes(path), str(path))
    expected = canonical_relpath(record)
    checked.claims = expected
    checked.claims_result = record["status"] == "ok"
    if checked.relpath != expected:
        raise _fail(
            path,
            f"its content says it belongs at {expected}; records are identified by path and "
            "content together, so move it there or fix its names",
        )
    parsed = parse_stem(path.name[: -len(RECORD_SUFFIX)])
    if parsed is None or parsed != (record["submission"]["submitter"], record["submission"]["seed"]):
        raise _fail(path, "its file name does not match its submission's submitter and seed")
    if record["config"].get("seed") is not None and record["config"].get("seed") != record["submission"]["seed"]:
        raise _fail(path, "its submission seed differs from the seed in its configuration")
    checked.record = record
    if record["status"] != "ok":
        return
    pointer = record["predictions"]
    stem = path.name[: -len(RECORD_SUFFIX)]
    if pointer["file"] != f"{stem}{PREDICTIONS_SUFFIX}":
        raise _fail(path, f"its predictions must be {stem}{PREDICTIONS_SUFFIX} beside it, not {pointer['file']}")
    pred_path = path.parent / pointer["file"]
    try:
        data = read_capped(pred_path, PREDICTIONS_MAX_BYTES)
    except ValueError as exc:
        raise _fail(path, f"predictions file {pointer['file']}: {exc}") from None
    sha = sha256_bytes(data)
    if sha != pointer["sha256"]:
        raise _fail(path, f"predictions file {pointer['file']} does not match the sha256 in the record")
    if record["dataset"].get("task") == "segmentation" or is_segmentation_archive(data):
        checked.predictions = _verify_segmentation(path, record, data, sha, known, use_cache)
        checked.unranked, checked.warnings = ranking_notes(record)
        return
    try:
        preds = parse_predictions(data)
    except ValueError as exc:
        raise _fail(path, f"predictions file {pointer['file']} {exc}") from None
    _check_truth(path, record, preds, known)
    _check_metrics(path, record, preds, sha, use_cache)
    checked.predictions = preds
    checked.unranked, checked.warnings = ranking_notes(record)


def recompute_segmentation(
    preds: SegmentationPredictions,
    n_classes: int,
    tolerance: float,
    seed: int,
    resamples: int,
    use_cache: bool = True,
    predictions_sha256: str | None = None,
) -> dict[str, Any]:
    """Every segmentation metric per case and its case mean with interval, as the runner computes them."""

    def compute() -> dict[str, Any]:
        return score_segmentation(preds, n_classes, tolerance, resamples, seed)

    if predictions_sha256 is None:
        return compute()
    key = sha256_json(
        {
            "verifier": VERIFIER_VERSION,
            "predictions": predictions_sha256,
            "task": "segmentation",
            "classes": n_classes,
            "tolerance": tolerance,
            "seed": seed,
            "resamples": resamples,
        }
    )
    return _cached_recompute(key, compute, use_cache)


def _verify_segmentation(
    path: Path, record: dict[str, Any], data: bytes, sha: str, known: KnownSpecs, use_cache: bool
) -> Predictions:
    """A segmentation record: its masks, test set and every metric recomputed from its predictions
    file. Returns the per-case metric table, the form the leaderboard resamples."""
    dataset = record["dataset"]
    pointer = record["predictions"]
    if dataset.get("task") != "segmentation" or not is_segmentation_archive(data):
        raise _fail(path, "a segmentation record needs segmentation predictions (masks), and only it has them")
    try:
        preds = parse_segmentation_predictions(data)
    except ValueError as exc:
        raise _fail(path, f"predictions file {pointer['file']} {exc}") from None
    n = len(preds.ids)
    test = record["test_set"]
    if pointer["n"] != n or test["n"] != n:
        raise _fail(path, f"the record says {test['n']} test images, its predictions hold {n}")
    if len(set(preds.ids)) != n:
        raise _fail(path, "its predictions repeat an image id")
    identity = identity_of(preds, test["split_file_sha256"])
    if identity != test["identity"]:
        raise _fail(
            path,
            "the test-set identity recomputed from its predictions (ids, true masks, cases, patients, spacing) "
            "differs from the one it states",
        )
    classes = len(dataset.get("classes") or [])
    facts = known.dataset(dataset["name"])
    tolerance_known = None
    if facts is not None:
        if facts.task != "segmentation":
            raise _fail(path, f"data set {dataset['name']!r} is a {facts.task} task, not segmentation")
        if facts.primary_metric != record["primary_metric"]:
            raise _fail(
                path,
                f"data set {dataset['name']!r} is ranked by {facts.primary_metric}, not {record['primary_metric']}",
            )
        if facts.test_identity is not None and facts.test_identity != identity:
            raise _fail(
                path,
                f"its test set is not the published test set of {dataset['name']!r} "
                f"(identity {identity[:12]}, published {facts.test_identity[:12]}); use the official split",
            )
        if facts.n_classes and classes != facts.n_classes:
            raise _fail(path, f"data set {dataset['name']!r} has {facts.n_classes} classes, not {classes}")
        tolerance_known = facts.nsd_tolerance_mm
    if classes < 2:
        raise _fail(path, "a segmentation record names its classes, background first (at least 2)")
    if max(int(m.max(initial=0)) for m in preds.pred + preds.truth) >= classes:
        raise _fail(path, f"its masks hold class indices beyond the {classes} classes it names")
    block = record.get("segmentation")
    if not block:
        raise _fail(path, "a segmentation record needs its 'segmentation' block (unit, tolerance, cases)")
    cases = len(dict.fromkeys(preds.cases))
    expected = {
        "scored": "volume" if preds.volumes else "image",
        "cases": cases,
        "unit": "pixel" if preds.spacing is None else "mm",
        "foreground_classes": classes - 1,
    }
    for field_name, want in expected.items():
        if block.get(field_name) != want:
            raise _fail(path, f"segmentation.{field_name} is {block.get(field_name)!r}, its predictions say {want!r}")
    tolerance = float(block["nsd_tolerance"])
    if tolerance_known is not None and not _close(tolerance, float(tolerance_known)):
        raise _fail(
            path, f"its NSD tolerance is {tolerance}, but data set {dataset['name']!r} is scored at {tolerance_known}"
        )
    ci = record.get("ci")
    resamples = int(ci["resamples"]) if ci else 0
    if ci is not None and ci["unit"] != ("patient" if preds.groups is not None else "sample"):
        raise _fail(path, f"ci.unit says {ci['unit']} but its predictions disagree about patient ids")
    try:
        scored = recompute_segmentation(preds, classes, tolerance, int(record["seed"]), resamples, use_cache, sha)
    except Exception as exc:
        raise _fail(path, f"metrics cannot be recomputed from its masks ({type(exc).__name__}: {exc})") from None
    _compare_metrics(path, record, scored["metrics"], "segmentation", resamples)
    absent = sorted(set(scored["flags"]) - set(record.get("flags") or []))
    if absent:
        raise _fail(path, f"its predictions call for the flag(s) {absent}, which the record lacks")
    return case_table_predictions(scored)


def _compare_metrics(path: Path, record: dict[str, Any], recomputed: dict[str, Any], task: str, resamples: int) -> None:
    claimed = record["metrics"]
    missing = sorted(set(recomputed) - set(claimed))
    unknown = sorted(set(claimed) - set(recomputed))
    if unknown:
        raise _fail(path, f"metrics {unknown} cannot be recomputed from the predictions for a {task} task")
    if missing:
        raise _fail(path, f"metrics {missing} are missing; a record lists every metric of its task")
    if record["primary_metric"] not in recomputed:
        raise _fail(path, f"primary metric {record['primary_metric']!r} is not a {task} metric")
    for name, want in recomputed.items():
        got = claimed[name]
        for part in ("value", "ci_low", "ci_high"):
            if not _close(got.get(part), want.get(part)):
                what = name if part == "value" else f"{name} {part}"
                raise _fail(
                    path,
                    f"{what} is {got.get(part)} in the record but {want.get(part)} recomputed from "
                    f"its predictions (seed {record['seed']}, {resamples} resamples)",
                )


def _check_truth(path: Path, record: dict[str, Any], preds: Predictions, known: KnownSpecs) -> None:
    """Predictions fit the task and the test set the record names (and the published one)."""
    n = len(preds.ids)
    test = record["test_set"]
    if record["predictions"]["n"] != n or test["n"] != n:
        raise _fail(path, f"the record says {test['n']} test cases, its predictions hold {n}")
    if len(set(preds.ids)) != n:
        raise _fail(path, "its predictions repeat a sample id")
    identity = split_identity(preds.ids, preds.labels, preds.groups, test["split_file_sha256"])
    if identity != test["identity"]:
        raise _fail(
            path,
            "the test-set identity recomputed from its predictions (ids, labels, patients) "
            "differs from the one it states",
        )
    dataset = record["dataset"]
    task = dataset.get("task")
    if task is None:
        raise _fail(path, "dataset.task is missing, so its metrics cannot be checked")
    facts = known.dataset(dataset["name"])
    if facts is not None:
        if facts.task != task:
            raise _fail(path, f"data set {dataset['name']!r} is a {facts.task} task, not {task}")
        if facts.primary_metric != record["primary_metric"]:
            raise _fail(
                path,
                f"data set {dataset['name']!r} is ranked by {facts.primary_metric}, not {record['primary_metric']}",
            )
        if facts.test_identity is not None and facts.test_identity != identity:
            raise _fail(
                path,
                f"its test set is not the published test set of {dataset['name']!r} "
                f"(identity {identity[:12]}, published {facts.test_identity[:12]}); use the official split",
            )
    if dataset.get("primary_metric") not in (None, record["primary_metric"]):
        raise _fail(path, "dataset.primary_metric and primary_metric differ")
    scores, labels = preds.scores, preds.labels
    c = scores.shape[1]
    classes = len(dataset.get("classes") or []) or None
    if task == "multilabel":
        if labels.ndim != 2 or labels.shape[1] != c or not np.isin(labels, (0, 1)).all():
            raise _fail(path, f"multi-label labels must be 0/1 of shape ({n}, {c})")
    else:
        if labels.ndim != 1:
            raise _fail(path, f"{task} labels must be one class index per case")
        want = 2 if task == "binary" else (classes or (facts.n_classes if facts else None))
        if want is not None and c != want:
            raise _fail(path, f"scores have {c} columns but a {task} task here has {want} classes")
        if c < 2 or labels.min() < 0 or labels.max() >= c:
            raise _fail(path, f"labels must be class indices 0..{c - 1}")


def _check_metrics(path: Path, record: dict[str, Any], preds: Predictions, sha: str, use_cache: bool) -> None:
    """Every metric, interval and degenerate-result flag, recomputed from the predictions."""
    from .metrics import MetricValue, degenerate_flags

    task = record["dataset"]["task"]
    ci = record.get("ci")
    resamples = int(ci["resamples"]) if ci else 0
    if ci is not None:
        unit = "patient" if preds.groups is not None else "sample"
        if ci["unit"] != unit:
            raise _fail(
                path,
                f"ci.unit says {ci['unit']} but the predictions {'hold' if preds.groups is not None else 'have no'} "
                "patient ids",
            )
    try:
        recomputed = recompute_metrics(task, preds, int(record["seed"]), resamples, use_cache, sha)
    except Exception as exc:
        raise _fail(path, f"metrics cannot be recomputed from its predictions ({type(exc).__name__}: {exc})") from None
    _compare_metrics(path, record, recomputed, task, resamples)
    values = {
        k: MetricValue(*(math.nan if v[p] is None else v[p] for p in ("value", "ci_low", "ci_high")))
        for k, v in recomputed.items()
    }
    required = set(degenerate_flags(task, preds.labels, preds.scores, values))
    absent = sorted(required - set(record.get("flags") or []))
    if absent:
        raise _fail(path, f"its predictions call for the flag(s) {absent}, which the record lacks")


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= TOLERANCE


def ranking_notes(record: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(reasons not to rank, warnings) for a verified ok record, from verified fields only."""
    unranked: list[str] = []
    warnings: list[str] = []
    markup = markup_in_names(record)
    if markup:
        unranked.append(f"{markup} holds characters that render as markup or links; rename it")
    flags = record.get("flags") or []
    if flags:
        unranked.append("flagged: " + ", ".join(flags))
    ci = record.get("ci")
    if not ci or int(ci.get("resamples") or 0) == 0:
        unranked.append("no confidence intervals")
    elif int(ci["resamples"]) < MIN_RESAMPLES:
        unranked.append(f"only {ci['resamples']} bootstrap resamples (at least {MIN_RESAMPLES} are needed)")
    primary = record["metrics"].get(record["primary_metric"]) or {}
    if primary.get("value") is None:
        unranked.append(f"primary metric {record['primary_metric']} is undefined on this test set")
    elif ci and int(ci.get("resamples") or 0) > 0 and (primary.get("ci_low") is None or primary.get("ci_high") is None):
        unranked.append(f"no confidence interval for {record['primary_metric']}")
    n = (record.get("segmentation") or {}).get("cases") or record["test_set"]["n"]  # volumes, not slices
    if n < SMALL_TEST_SET:
        warnings.append(f"small test set ({n} cases)")
    lo, hi = primary.get("ci_low"), primary.get("ci_high")
    if lo is not None and hi is not None and hi - lo > WIDE_CI:
        warnings.append(f"wide 95% CI ({hi - lo:.2f})")
    return unranked, warnings


def markup_in_names(record: dict[str, Any]) -> str | None:
    """The first name field (names, plugin provenance) that holds markup or link-like text."""
    for part, key in NAME_FIELDS:
        if MARKUP.search(str(record[part][key])):
            return f"{part}.{key}"
        for field_name in PLUGIN_FIELDS:
            value = record[part]["plugin"].get(field_name)
            if value is not None and MARKUP.search(str(value)):
                return f"{part}.plugin.{field_name}"
    return None


# ------------------------------------------------------------------ a folder
PARALLEL_SCAN_MIN = 200  # records from which a scan recomputes in worker processes first
_PREFILL: tuple[Path, KnownSpecs] | None = None


def scan_processes(records: int) -> int:
    """Worker processes a scan of ``records`` files uses to recompute metrics (1: none).
    ``MEDFM_SCAN_PROCESSES`` overrides; by default every usable core, at most 16, from
    ``PARALLEL_SCAN_MIN`` records on, and none in a process that has imported torch (forking
    after torch's OpenMP threads have run can hang the child; ``medfm validate`` and
    ``medfm leaderboard`` never import it)."""
    import os
    import sys

    given = os.environ.get("MEDFM_SCAN_PROCESSES", "").strip()
    if given.isdigit() and int(given) >= 1:
        return int(given)
    if records < PARALLEL_SCAN_MIN or "torch" in sys.modules:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return min(16, cores)


def _prefill(paths: list[Path], root: Path, known: KnownSpecs, processes: int) -> None:
    """Verify the records in forked worker processes first, so that every recomputed metric and
    interval is in the recompute cache before the scan proper reads it: a cold scan of thousands
    of records is bound by those bootstrap recomputations, which are independent per record.
    The scan itself then runs in this process as before, so its results do not depend on it."""
    import multiprocessing

    global _PREFILL
    try:
        context = multiprocessing.get_context("fork")
    except ValueError:  # no fork on this platform: the scan recomputes serially
        return
    _PREFILL = (root, known)
    try:
        with context.Pool(processes, initializer=_one_thread) as pool:
            for _ in pool.imap_unordered(_prefill_one, [str(p) for p in paths], chunksize=16):
                pass
    except Exception:  # the serial scan below still verifies everything
        pass
    finally:
        _PREFILL = None


def _one_thread() -> None:
    """One BLAS/OpenMP thread per worker: the processes already use every core."""
    from threadpoolctl import threadpool_limits

    global _LIMITS
    _LIMITS = threadpool_limits(1)


_LIMITS: Any = None


def _prefill_one(path: str) -> None:
    assert _PREFILL is not None
    root, known = _PREFILL
    verify_file(Path(path), root, known, True)


def scan_results(
    root: str | Path, known: KnownSpecs | None = None, use_cache: bool = True, paths: Iterable[Path] | None = None
) -> Scan:
    """Verify every record file under ``root`` (or just ``paths``) and settle duplicate claims.
    Large folders recompute their metrics in worker processes first (``scan_processes``)."""
    root = Path(root)
    entries: list[Checked] = []
    found = (
        [(p, None) for p in paths]
        if paths is not None
        else [(f.path, f.problem) for f in walk_records(root, is_record_name)]
    )
    processes = scan_processes(len(found))
    if use_cache and processes > 1:
        _prefill([p for p, problem in found if problem is None], root, known or KnownSpecs(), processes)
    for path, problem in found:
        if problem is not None:
            try:
                rel = path.relative_to(root).as_posix()
            except ValueError:
                rel = path.name
            entries.append(Checked(path, rel, problem=f"{path}: {problem}"))
            continue
        entries.append(verify_file(path, root, known, use_cache))
    _settle_claims(entries)
    _settle_copies(entries)
    return Scan(root, entries)


def _settle_claims(entries: list[Checked]) -> None:
    """A misplaced record that claims an existing submission's place: both are reported, neither ranked."""
    by_path = {c.relpath: c for c in entries if c.valid}
    for c in entries:
        if c.valid or c.claims is None or c.claims == c.relpath or not c.claims_result:
            continue
        owner = by_path.get(c.claims)
        if owner is None:
            continue
        c.problem = f"{c.path}: claims the same submission as {owner.relpath}; neither is ranked until one is removed"
        reason = f"another record ({c.relpath}) claims this submission; remove one"
        if reason not in owner.unranked:
            owner.unranked.append(reason)


def _scores_digest(preds: Predictions) -> str | None:
    """A digest of the scores, for scores varied enough that two models cannot share them by chance."""
    scores = np.asarray(preds.scores, dtype=np.float32)
    if len(np.unique(scores[:, -1])) < DISTINCT_SCORES_FOR_COPY_CHECK:
        return None
    return hashlib.sha256(scores.tobytes()).hexdigest()


def _settle_copies(entries: list[Checked]) -> None:
    """The same scores under two different models or protocols: a copied submission; neither is ranked."""
    by_digest: dict[str, list[Checked]] = {}
    for c in entries:
        if c.valid and c.predictions is not None and not c.unranked:
            digest = _scores_digest(c.predictions)
            if digest is not None:
                by_digest.setdefault(digest, []).append(c)

    def model_of(c: Checked) -> tuple[str, str, str]:
        r = c.verified_record
        return r["backbone"]["name"], r["protocol"]["name"], r["dataset"]["name"]

    for same in by_digest.values():
        models = {model_of(c) for c in same}
        if len(models) < 2:
            continue  # replicates or reproductions of one cell may well agree exactly
        for c in same:
            other = next(o for o in same if o is not c and model_of(o) != model_of(c))
            c.unranked.append(
                f"its scores are identical to those of {other.relpath}; one set of predictions cannot "
                "come from two models or protocols"
            )
