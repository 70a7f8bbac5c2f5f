"""The harness owns the truth: labels and patients come from the data set, never from a protocol.

A protocol returns one row of scores per test sample id. ``attach_truth`` checks that the ids
are exactly the test split's (none missing, repeated or invented), that the scores have one
column per class, and returns the predictions in the split's order with the split's own
labels and patient ids. Anything else is a ``ProtocolOutputError`` naming the protocol.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

from .predictions import Predictions


class ProtocolOutputError(ValueError):
    """A protocol returned output the harness cannot score (named in the message)."""


def _examples(items: Sequence[Any], limit: int = 3) -> str:
    shown = ", ".join(repr(str(i)) for i in list(items)[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def expected_columns(task: str, labels: np.ndarray, n_classes: int) -> int | None:
    """Score columns a task needs: 2 for binary, one per class otherwise (``None``: at least the labels')."""
    if task == "binary":
        return 2
    if task == "multilabel":
        return int(np.asarray(labels).shape[1])
    return n_classes or None


def attach_truth(protocol: str, split: Any, output: Any, task: str, n_classes: int) -> Predictions:
    """The protocol's scores, checked and reordered to ``split``, with the split's labels and groups."""
    from .context import ProtocolOutput

    where = f"protocol {protocol!r}"
    if not isinstance(output, ProtocolOutput):
        raise ProtocolOutputError(f"{where} returned {type(output).__name__}, not ProtocolOutput")
    try:
        ids = list(output.ids)
    except TypeError:
        raise ProtocolOutputError(
            f"{where} returned ids that are not a sequence ({type(output.ids).__name__})"
        ) from None
    if not all(isinstance(i, str) for i in ids):
        bad = next(i for i in ids if not isinstance(i, str))
        raise ProtocolOutputError(
            f"{where} returned a sample id that is not a string ({bad!r}); return the test split's ids"
        )
    if output.scores is None:
        raise ProtocolOutputError(f"{where} returned no scores; a {task} task needs one row of scores per test id")
    scores = np.asarray(output.scores)
    if scores.dtype.kind not in "fiub":
        raise ProtocolOutputError(f"{where} returned scores of type {scores.dtype}, not numbers")
    if scores.ndim != 2:
        raise ProtocolOutputError(
            f"{where} returned scores of shape {scores.shape}; they must be (N, C): "
            "one row per test sample, one column per class"
        )
    if len(scores) != len(ids):
        raise ProtocolOutputError(f"{where} returned {len(scores)} rows of scores for {len(ids)} ids")
    repeated = [i for i, c in Counter(ids).items() if c > 1]
    if repeated:
        raise ProtocolOutputError(
            f"{where} returned scores for the same test sample more than once: {_examples(repeated)}"
        )
    position = {sid: k for k, sid in enumerate(ids)}
    expected = [str(i) for i in split.ids]
    known = set(expected)
    invented = [i for i in ids if i not in known]
    if invented:
        raise ProtocolOutputError(
            f"{where} returned scores for ids that are not in the test split: {_examples(invented)}"
        )
    missing = [i for i in expected if i not in position]
    if missing:
        raise ProtocolOutputError(
            f"{where} returned scores for {len(ids)} of the {len(expected)} test samples "
            f"(missing: {_examples(missing)})"
        )
    labels = np.asarray(split.labels)
    want = expected_columns(task, labels, n_classes)
    columns = scores.shape[1]
    if want is not None and columns != want:
        raise ProtocolOutputError(
            f"{where} returned {columns} score columns; a {task} task with these classes needs {want}"
        )
    if want is None and (columns < 2 or columns <= int(labels.max(initial=0))):
        raise ProtocolOutputError(f"{where} returned {columns} score columns for labels up to {int(labels.max())}")
    order = np.fromiter((position[i] for i in expected), dtype=np.int64, count=len(expected))
    return Predictions(ids=expected, labels=labels, scores=scores[order].astype(np.float64), groups=split.groups)
